"""A reward model from the pretrained small LM (jalign.models.load_small_lm) on the built-in sentiment pairs.

    python -m jalign.cli train --config experiments/reward_small_lm.py workdir=runs/rm_small_lm \
        train.export=runs/rm_small_lm/export

mode="reward": the small LM's trunk with a fresh scalar head (its unembedding is dropped), trained with the
Bradley–Terry loss jalign.losses.reward_model_loss on ``sentiment_pairs`` (byte tokenizer, right padding);
the reward is the head's score of the last real token (EOS). Held-out pairs: the same data set generated with
another seed (eval.data_kwargs.data_seed), scored every 20 steps (eval/accuracy, eval/margin, eval/loss).
train.export writes a GPT2ForSequenceClassification checkpoint (jalign.models.load_reward_model).
"""

from jalign.train.config import base_config


def get_config():
    c = base_config()
    c.mode = "reward"
    c.model.name = "small_lm"
    c.data.name = "builtin_pairwise"
    c.data.batch_size = 16
    c.data.seq_len = 144
    c.data.kwargs.dataset = "sentiment_pairs"
    c.data.kwargs.max_prompt_len = 48
    c.data.kwargs.n = 256
    c.data.kwargs.data_seed = 0
    c.reward_model.margin = 0.0
    c.reward_model.center_coef = 0.0
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 5
    c.optim.grad_clip = 1.0
    c.train.steps = 60
    c.train.log_every = 5
    c.eval.every = 20
    c.eval.batches = 4
    c.eval.data_kwargs.data_seed = 1
    c.mesh.data = 1
    c.checkpoint.every = 0
    c.checkpoint.keep = 1
    return c
