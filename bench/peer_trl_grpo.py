"""TRL's ``GRPOTrainer`` on the shapes of ``bench.grpo``: a child process that ``python -m bench.grpo --peer
PYTHON`` drives, alternating with jalign's rounds. Needs torch, transformers, trl (the ``peer`` extra); imports
no JAX, so it runs in a torch-only environment.

    PYTHON -m bench.peer_trl_grpo SPEC.json      # then one line per round on stdin: the model's name

SPEC: ``{"settings": bench.grpo's settings, "models": [{"name", "path" (a Hugging Face GPT-2 directory) or
"d_model"/"n_layers"/"vocab_size", "prompts": [[ids]]}]}``. For each name read on stdin the child builds a fresh trainer (repeated
``train()`` calls of one trainer slowed down from round to round) and runs one ``trainer.train()`` of two sampling rounds (``steps_per_generation`` × ``num_iterations`` optimiser steps each;
the first round is warm-up) and prints one JSON line with the second round's times:

* ``sample_s``: ``GRPOTrainer._generate`` (transformers ``generate`` with its KV cache, ``min_new_tokens`` =
  ``max_new_tokens`` so every completion has exactly ``new_tokens`` tokens, as jalign's with EOS off);
* ``score_s``: the rest of ``_generate_and_score_completions`` (reward, old-policy and reference log-prob
  passes, advantages);
* ``update_s``: the round's optimiser steps (from ``on_step_begin`` to ``on_step_end``) minus both;
* ``round_s``: the whole round.

Settings as jalign's: G completions per prompt, ``num_iterations``, ``num_minibatches`` minibatches per round
(``per_device_train_batch_size`` = B·G / minibatches, ``steps_per_generation`` = minibatches), dapo loss,
ε = 0.2, ε_high = 0.28, β = 0.02 (k3 against a frozen reference), lr 1e-5 constant, AdamW, float32, dropout off.
Token ids are passed as words of a word-level tokenizer (``"t<id>"``) so both sides see the same prompts.
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
import time
from pathlib import Path

PAD_WORD, EOS_WORD = "<pad>", "<eos>"


def word_tokenizer(vocab: int, pad_id: int, eos_id: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {i: f"t{i}" for i in range(vocab)} | {pad_id: PAD_WORD, eos_id: EOS_WORD}
    tok = Tokenizer(models.WordLevel({w: i for i, w in words.items()}, unk_token=PAD_WORD))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD_WORD, eos_token=EOS_WORD,
                                   unk_token=PAD_WORD), words


def even_token_reward(prompts, completions, completion_ids, **kw):
    return [sum(1 for t in ids if t % 2 == 0) / max(len(ids), 1) for ids in completion_ids]


def make_trainer(m: dict, s: dict, workdir: str):
    import torch
    from datasets import Dataset
    from transformers import GPT2Config, GPT2LMHeadModel
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    path = m.get("path")
    if not path:  # saved first: GRPOTrainer loads its reference model from the policy's path
        d = m["d_model"]
        path = str(Path(workdir) / "models" / m["name"].replace(" ", "_").replace("=", ""))
        GPT2LMHeadModel(GPT2Config(
            vocab_size=m["vocab_size"], n_positions=s["prompt_len"] + s["new_tokens"], n_embd=d,
            n_layer=m["n_layers"], n_head=d // 64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            bos_token_id=1, eos_token_id=1, pad_token_id=0)).save_pretrained(path)
    model = GPT2LMHeadModel.from_pretrained(str(Path(path).resolve()))
    cfg = model.config
    tok, words = word_tokenizer(cfg.vocab_size, cfg.pad_token_id, cfg.eos_token_id)
    prompts = [" ".join(words[int(i)] for i in p) for p in m["prompts"]]
    n_rows = s["prompts"] * s["group_size"]
    mb = s["num_minibatches"]
    args = GRPOConfig(
        output_dir=workdir, per_device_train_batch_size=n_rows // mb, steps_per_generation=mb,
        num_generations=s["group_size"], max_completion_length=s["new_tokens"], num_iterations=s["num_iterations"],
        beta=0.02, epsilon=0.2, epsilon_high=0.28, loss_type="dapo", temperature=1.0, top_p=1.0,
        generation_kwargs={"min_new_tokens": s["new_tokens"]}, learning_rate=1e-5, lr_scheduler_type="constant",
        weight_decay=0.0, max_grad_norm=1.0, use_cpu=True, bf16=False, fp16=False,
        max_steps=2 * mb * s["num_iterations"], logging_steps=10**6, save_strategy="no", report_to="none",
        disable_tqdm=True, seed=0, shuffle_dataset=False, dataloader_num_workers=0, disable_dropout=True)
    from transformers import TrainerCallback

    rec = {"steps": [], "gen": [], "score": []}

    class CB(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            rec["t0"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            rec["steps"].append(time.perf_counter() - rec["t0"])

    # a dataset of the prompts, each once per group (TRL's sampler repeats each prompt num_generations times)
    trainer = GRPOTrainer(model=model, reward_funcs=[even_token_reward], args=args,
                          train_dataset=Dataset.from_dict({"prompt": prompts * 64}), processing_class=tok,
                          callbacks=[CB()])
    gen, score = trainer._generate, trainer._generate_and_score_completions

    def timed_gen(*a, **k):
        t0 = time.perf_counter()
        out = gen(*a, **k)
        rec["gen"].append(time.perf_counter() - t0)
        got = [list(map(int, p)) for p in out[0]]
        want = [list(p) for p in m["prompts"] for _ in range(s["group_size"])]
        if sorted(got) != sorted(want):
            raise RuntimeError("TRL's tokenised prompts differ from bench.grpo's ids")
        if any(len(c) != s["new_tokens"] for c in out[1]):
            raise RuntimeError(f"TRL completions are not all {s['new_tokens']} tokens: {[len(c) for c in out[1]]}")
        return out

    def timed_score(*a, **k):
        t0 = time.perf_counter()
        out = score(*a, **k)
        rec["score"].append(time.perf_counter() - t0)
        return out

    trainer._generate, trainer._generate_and_score_completions = timed_gen, timed_score
    return trainer, rec


def one_round(trainer, rec, s) -> dict:
    for k in ("steps", "gen", "score"):
        rec[k].clear()
    trainer.train()
    per = s["num_minibatches"] * s["num_iterations"]
    steps, gen, score = rec["steps"][per:2 * per], rec["gen"][1], rec["score"][1]  # the second sampling round
    return {"sample_s": gen, "score_s": score - gen, "update_s": sum(steps) - score, "round_s": sum(steps)}


def main() -> None:
    import torch
    import transformers
    import trl

    spec = json.loads(open(sys.argv[1]).read())
    s = spec["settings"]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    models = {m["name"]: m for m in spec["models"]}
    with tempfile.TemporaryDirectory() as workdir:
        print(json.dumps({"ready": True, "versions": {"torch": torch.__version__, "transformers":
                                                      transformers.__version__, "trl": trl.__version__},
                          "torch_threads": torch.get_num_threads()}), flush=True)
        for line in sys.stdin:
            name = line.strip()
            if not name:
                break
            # a fresh trainer per round: repeated train() calls of one GRPOTrainer slowed down round after round
            # (sampling 0.5 s, 6.3 s, 8.6 s on the GPT-2 shape in a first version of this benchmark)
            trainer, rec = make_trainer(models[name], s, workdir)
            print(json.dumps(one_round(trainer, rec, s)), flush=True)
            del trainer, rec
            gc.collect()


if __name__ == "__main__":
    main()
