"""IPO-MD (online IPO with samples from the geometric mixture with the reference) on the small LM, labels from a
Bradley–Terry preference model over the built-in sentiment lexicon reward (docs/rl.md, "Online pairwise training").

    python -m jalign.cli train --config experiments/ipo_md_small_lm.py workdir=runs/ipo_md_small_lm \
        model.name=pretrained model.kwargs.path=runs/sft/export

Each step samples two completions of up to 48 bytes for each of 8 prompts of ``sentiment_pairs`` from the token-level
mixture π^{1−β_mix}·μ^{β_mix} of the policy and the frozen initial (reference) policy μ (β_mix =
``online.mixture_beta`` = 0.5), labels each pair with P(y₁ ≻ y₂) = σ((r₁ − r₂)/0.1) under the lexicon reward, and
makes one IPO update (τ = ``loss.hparams.beta`` = 0.1, summed log-ratios). ``online.mixture_beta=0`` is online IPO,
``loss.name=dpo`` online DPO, ``online.algorithm=nash_md`` Nash-MD-PG (β = ``online.kl_coef``). Start from an SFT
policy (experiments/online_pairwise_small_lm.py runs SFT first).
"""

from jalign.train.config import base_config


def get_config():
    c = base_config()
    c.mode = "online"
    c.model.name = "small_lm"
    c.data.name = "builtin_prompts"
    c.data.batch_size = 8
    c.data.seq_len = 144
    c.data.kwargs.dataset = "sentiment_pairs"
    c.data.kwargs.max_prompt_len = 48
    c.loss.name = "ipo"
    c.loss.hparams.beta = 0.1
    c.loss.hparams.ipo_average = False
    c.loss.reference = "frozen"
    c.online.algorithm = "pairwise"
    c.online.mixture_beta = 0.5
    c.online.preference = "bradley_terry"
    c.online.preference_temperature = 0.1
    c.online.num_samples = 2
    c.online.max_new_tokens = 48
    c.online.reward = "lexicon"
    c.optim.lr = 5e-4
    c.optim.schedule = "constant"
    c.train.steps = 20
    c.train.log_every = 1
    c.mesh.data = 1
    c.checkpoint.every = 0
    c.checkpoint.keep = 1
    return c
