"""``jalign eval``: a policy against a baseline under a judge — win rate, mean reward, Monte-Carlo KL,
completion lengths, distinct-n, and best-of-N.

For each of P prompts, n completions are sampled from the policy and n from the baseline (temperature 1 by
default, the trainer's KV-cache sampler :func:`jalign.train.online.make_kv_sampler`, different keys for the
two models) and scored by the judge: a trained reward model (``rm:PATH``; several ``rm:PATH1,PATH2`` are an
ensemble, their mean) or a named Python reward of :mod:`jalign.train.plugins.rewards` (``lexicon``,
``count_token``, ...). The statistics, all with prompts as the independent unit:

* **win rate** of policy over baseline (:func:`win_rate`): within prompt i, all n×n comparisons of a policy
  score with a baseline score, 1 for a win, ½ for a tie, 0 for a loss, averaged to w_i; the win rate is the
  mean of w_i over prompts and its standard error sd(w_i)/√P (unbiased sd; with one prompt, the n×n
  comparisons' own spread over √n paired draws is not a valid error, and the SE is reported as NaN).
* **mean reward** of each model, with the same per-prompt standard error.
* **Monte-Carlo KL(π‖π_ref)** (:func:`mc_kl`), π the policy and π_ref the baseline: over the policy's samples y,
  d(y) = ln π(y|x) − ln π_ref(y|x) (sequence log-probs of the completion, EOS included, untempered models);
  k1 = mean d (unbiased) and k3 = mean (e^{−d} − 1 + d) (unbiased, ≥ 0) with per-prompt standard errors. With
  a temperature other than 1 the samples are not from π and the KL estimate is flagged as biased.
* **lengths** (completion tokens, EOS included: mean, min, max, share that hit ``max_new_tokens`` without EOS)
  and **distinct-n** (:func:`distinct_n`, Li et al. 2016: distinct n-grams / n-grams over all completions).
* **best-of-N** (``best_of``=N): for each of the n policy slots, N policy samples are scored and the best one
  kept; the best-of-N policy is compared with the baseline like the policy (its KL is not sampled; the report
  gives the known bound ln N − (N−1)/N of KL(π_BoN‖π)).

Outputs (:func:`write_outputs`): ``results.json``, ``report.md`` and ``eval.png`` (reward distributions and
win rates with ±2 SE).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jalign.diagnostics.evaluation import distinct_n, mc_kl, per_prompt_mean_se, win_rate
from jalign.errors import MissingFileError, UserError
from jalign.train.diagnose import DiagnoseError, _json_key_line, load_model, resolve_tokenizer
from jalign.train.online import make_kv_sampler, make_sampler
from jalign.train.plugins.models import is_causal_lm
from jalign.train.step import make_logps_fn, split_model

__all__ = ["EvalError", "distinct_n", "evaluate", "load_prompts", "make_judge", "mc_kl", "per_prompt_mean_se",
           "win_rate", "write_outputs"]


class EvalError(UserError):
    """Bad input to :func:`evaluate` (missing directories or files, an empty prompt file, mismatched vocabularies,
    an unknown judge); the message names the file, key or value."""


# ----------------------------------------------------------------------------------------------------------
# Inputs


def load_prompts(path: str | Path, *, max_prompts: int | None = None) -> list[str]:
    """Prompts from a ``.txt`` file (one per line, blank lines skipped) or a ``.jsonl``/``.json`` file of records
    with a ``"prompt"`` string (preference files qualify). Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such prompt file")
    text = path.read_text(encoding="utf-8", errors="replace")
    prompts: list[str] = []
    if path.suffix in (".jsonl", ".json"):
        if path.suffix == ".json" and text.lstrip().startswith("["):
            try:
                items = [(1, r) for r in json.loads(text)]
            except json.JSONDecodeError as e:
                raise EvalError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        else:
            items = []
            for i, ln in enumerate(text.splitlines(), start=1):
                if not ln.strip():
                    continue
                try:
                    items.append((i, json.loads(ln)))
                except json.JSONDecodeError as e:
                    raise EvalError(f"{path}:{i}: invalid JSON ({e.msg})") from None
        for i, rec in items:
            if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str):
                raise EvalError(f"{path}:{i}: a record needs a string field 'prompt'")
            prompts.append(rec["prompt"])
    else:
        prompts = [ln.rstrip("\r") for ln in text.splitlines() if ln.strip()]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise EvalError(f"{path}: no prompts (the file is empty)")
    return prompts[:max_prompts] if max_prompts else prompts


def _encode_prompts(prompts: list[str], tokenizer, path) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded prompt ids and mask, tokenised as the trainer does (BOS + prompt)."""
    seqs = []
    for i, p in enumerate(prompts):
        ids, mask = tokenizer.encode_pair(p, "")
        plen = mask.index(1) if 1 in mask else len(mask)
        if plen == 0:
            raise EvalError(f"{path}: prompt {i + 1} encodes to no tokens")
        seqs.append(ids[:plen])
    width = max(len(s) for s in seqs)
    pad = int(getattr(tokenizer, "pad_id", 0) or 0)
    ids_a = np.full((len(seqs), width), pad, np.int32)
    m_a = np.zeros((len(seqs), width), np.int32)
    for i, s in enumerate(seqs):
        ids_a[i, width - len(s):], m_a[i, width - len(s):] = s, 1
    return ids_a, m_a


def make_judge(spec: str, *, vocab_size: int, pad_id: int, judge_kwargs: dict | None = None):
    """``(judge, description)``: ``judge(prompt_ids [N, P], completion_ids [N, T], completion_mask [N, T]) ->
    scores [N]``. ``rm:PATH[,PATH...]``: reward-model checkpoints (the mean of several); otherwise the name of
    a registered reward (:mod:`jalign.train.plugins.rewards`), called with ``judge_kwargs``."""
    from jalign.models import RewardEnsemble, join_prompt_completion, load_reward_model
    from jalign.train.plugins.registry import get_reward

    if spec.startswith("rm:"):
        paths = [p for p in spec[3:].split(",") if p]
        if not paths:
            raise EvalError(f"--judge {spec!r}: give a reward-model directory after 'rm:'")
        models = []
        for p in paths:
            if not Path(p).is_dir():
                raise EvalError(f"--judge: {p}: no such reward-model directory")
            try:
                models.append(load_reward_model(p, num_labels=1))
            except (FileNotFoundError, ValueError, KeyError) as e:
                raise EvalError(f"--judge: {p}: cannot load the reward model: {str(e).splitlines()[0]}") from None
            if models[-1].cfg.vocab_size != vocab_size:
                raise EvalError(f"--judge: {p}/config.json: vocabulary mismatch: the reward model has vocab_size="
                                f"{models[-1].cfg.vocab_size}, the policy has vocab_size={vocab_size}; the judge must "
                                "share the policy's tokenizer")
        ens = RewardEnsemble(models, "mean")

        def judge(prompt_ids, completion_ids, completion_mask):
            prompt_ids = np.asarray(prompt_ids)
            ids, mask = join_prompt_completion(prompt_ids, prompt_ids != pad_id, completion_ids, completion_mask)
            return np.asarray(ens(ids, mask), np.float64)

        return judge, "reward model " + ", ".join(paths)
    try:
        fn = get_reward(spec)
    except UserError as e:
        raise EvalError(f"--judge {spec!r}: {e} (or give rm:PATH)") from None
    kw = dict(judge_kwargs or {})
    return (lambda p, c, m: np.asarray(fn(p, c, m, **kw), np.float64)), f"reward {spec!r}"


# ----------------------------------------------------------------------------------------------------------
# Sampling and scoring


def _sample(model, prompt_ids, prompt_mask, key, *, max_new_tokens, temperature, eos_id, pad_id, batch_size):
    """Samples of every row of ``prompt_ids``: completion ids/mask ``[N, T]``, their sequence log-probs under the
    untempered model ``[N]``, and the full ids/attention masks (for scoring under another model)."""
    graphdef, params, rest = split_model(model)
    make = make_kv_sampler if is_causal_lm(model) else make_sampler
    sampler = make(graphdef, max_new_tokens=max_new_tokens, temperature=temperature, eos_id=eos_id, pad_id=pad_id)
    out = {"ids": [], "attention_mask": [], "mask": []}
    for s in range(0, len(prompt_ids), batch_size):
        smp = sampler(params, rest, jnp.asarray(prompt_ids[s:s + batch_size]),
                      jnp.asarray(prompt_mask[s:s + batch_size]), jax.random.fold_in(key, s))
        for k in out:
            out[k].append(np.asarray(smp[k]))
    out = {k: np.concatenate(v, 0) for k, v in out.items()}
    p = prompt_ids.shape[1]
    out["completion_ids"], out["completion_mask"] = out["ids"][:, p:], out["mask"][:, p:]
    return out


def _sequence_logps(model, smp, batch_size) -> np.ndarray:
    """Σ over completion tokens of ln model(y_t | y_<t) (untempered) ``[N]``."""
    graphdef, params, rest = split_model(model)
    fn = jax.jit(make_logps_fn(graphdef, params, rest))
    out = []
    for s in range(0, len(smp["ids"]), batch_size):
        sl = slice(s, s + batch_size)
        lp, _ = fn(jnp.asarray(smp["ids"][sl]), jnp.asarray(smp["mask"][sl]), jnp.asarray(smp["attention_mask"][sl]))
        out.append(np.asarray(lp, np.float64))
    return np.concatenate(out)


def _completions(smp) -> list[list[int]]:
    return [[int(t) for t, m in zip(i, k, strict=True) if m] for i, k in zip(smp["completion_ids"],
                                                                              smp["completion_mask"], strict=True)]


def _lengths(smp, max_new_tokens, eos_id) -> dict[str, float]:
    m = np.asarray(smp["completion_mask"])
    lens = m.sum(1)
    last = np.asarray(smp["completion_ids"])[:, -1]
    clipped = (lens == max_new_tokens) & ((last != eos_id) if eos_id is not None else True)
    return {"mean": float(lens.mean()), "min": int(lens.min()), "max": int(lens.max()),
            "clipped_share": float(np.mean(clipped))}


def _model_summary(scores_PxN, smp, tokenizer, *, max_new_tokens, eos_id, n_texts) -> dict[str, Any]:
    mean, se = per_prompt_mean_se(scores_PxN)
    comps = _completions(smp)
    return {"reward_mean": mean, "reward_se": se, "reward_std": float(np.std(scores_PxN, ddof=1))
            if np.size(scores_PxN) > 1 else math.nan,
            "lengths": _lengths(smp, max_new_tokens, eos_id),
            "distinct_1": distinct_n(comps, 1), "distinct_2": distinct_n(comps, 2),
            "scores": np.asarray(scores_PxN, np.float64).tolist(),
            "examples": [_decode(tokenizer, c) for c in comps[:n_texts]]}


def _decode(tokenizer, ids: list[int]) -> str:
    keep = [i for i in ids if i not in (getattr(tokenizer, "eos_id", None), getattr(tokenizer, "pad_id", None))]
    try:
        return tokenizer.decode(keep)
    except Exception:  # noqa: BLE001  (ids outside the tokenizer: show them)
        return " ".join(map(str, keep))


def evaluate(policy: str, baseline: str, judge: str, data: str | Path, *, n: int = 4, best_of: int = 0,
             max_prompts: int | None = None, max_new_tokens: int = 32, temperature: float = 1.0, seed: int = 0,
             batch_size: int = 64, tokenizer: str | None = None, judge_kwargs: dict | None = None,
             n_texts: int = 4) -> dict[str, Any]:
    """Evaluate ``policy`` against ``baseline`` under ``judge`` on the prompts of ``data`` (module docstring).

    Args:
      policy, baseline: Hugging Face-format model directories or ``small_lm``.
      judge: ``rm:PATH[,PATH...]`` or a registered reward name.
      data: prompt file (:func:`load_prompts`).
      n: completions per prompt and model (≥ 1; ≥ 2 prompts are needed for standard errors).
      best_of: N ≥ 2 adds the best-of-N policy (N samples per slot, the best under the judge); 0 = off.
      max_prompts: only the first prompts of the file.
      max_new_tokens, temperature: sampling (temperature 1 = the models themselves).
      seed: the policy samples use key(seed), the baseline key(seed + 1), best-of-N key(seed + 2).
      batch_size: rows per sampling / scoring call.
      tokenizer: ``byte`` or a tokenizer.json path (default: the policy directory's, else byte).
      judge_kwargs: keyword arguments of a named reward.
      n_texts: example completions kept per model.

    Returns:
      The results dict (JSON-serialisable).

    Raises:
      EvalError / MissingFileError: bad input, naming the file, flag or value.
    """
    t0 = time.time()
    if n < 1:
        raise EvalError(f"--n {n}: must be >= 1")
    if best_of < 0 or best_of == 1:
        raise EvalError(f"--best-of {best_of}: must be 0 (off) or >= 2")
    if not temperature > 0:
        raise EvalError(f"--temperature {temperature}: must be > 0")
    if max_new_tokens < 1:
        raise EvalError(f"--max-new-tokens {max_new_tokens}: must be >= 1")
    prompts = load_prompts(data, max_prompts=max_prompts)
    try:
        pol, pol_src = load_model(policy)
        base, base_src = load_model(baseline)
        if pol.cfg.vocab_size != base.cfg.vocab_size:
            raise EvalError(
                f"{base_src}:{_json_key_line(base_src, 'vocab_size')}: vocabulary mismatch: the baseline has "
                f"vocab_size={base.cfg.vocab_size}, the policy ({pol_src}:{_json_key_line(pol_src, 'vocab_size')}) "
                f"has vocab_size={pol.cfg.vocab_size}; policy and baseline must share one tokenizer")
        tok, tok_desc = resolve_tokenizer(tokenizer, policy)
    except DiagnoseError as e:
        raise EvalError(str(e)) from None
    if not (is_causal_lm(pol) and is_causal_lm(base)):
        raise EvalError("--policy/--baseline: both must be causal LMs (a reward-model directory is a judge: rm:PATH)")
    eos, pad = tok.eos_id, int(getattr(tok, "pad_id", 0) or 0)
    judge_fn, judge_desc = make_judge(judge, vocab_size=pol.cfg.vocab_size, pad_id=pad, judge_kwargs=judge_kwargs)
    p_ids, p_mask = _encode_prompts(prompts, tok, data)
    room = pol.cfg.max_seq_len - p_ids.shape[1]
    if room < max_new_tokens:
        raise EvalError(f"{data}: the longest prompt has {p_ids.shape[1]} tokens; with --max-new-tokens "
                        f"{max_new_tokens} it exceeds the model's context ({pol.cfg.max_seq_len})")
    P = len(prompts)
    kw = dict(max_new_tokens=max_new_tokens, temperature=temperature, eos_id=eos, pad_id=pad, batch_size=batch_size)
    timings = {}

    def sample_and_score(model, k, key, label):
        t = time.time()
        ids, mask = np.repeat(p_ids, k, 0), np.repeat(p_mask, k, 0)
        smp = _sample(model, ids, mask, key, **kw)
        timings[f"sample_{label}_s"] = round(time.time() - t, 2)
        t = time.time()
        scores = judge_fn(ids, smp["completion_ids"], smp["completion_mask"]).reshape(P, k)
        timings[f"judge_{label}_s"] = round(time.time() - t, 2)
        if not np.all(np.isfinite(scores)):
            raise EvalError(f"--judge {judge!r}: returned non-finite scores for {label} completions")
        return smp, scores

    smp_p, s_p = sample_and_score(pol, n, jax.random.key(seed), "policy")
    smp_b, s_b = sample_and_score(base, n, jax.random.key(seed + 1), "baseline")
    t = time.time()
    lp_pol = _sequence_logps(pol, smp_p, batch_size).reshape(P, n)
    lp_ref = _sequence_logps(base, smp_p, batch_size).reshape(P, n)
    timings["kl_logps_s"] = round(time.time() - t, 2)
    summ = dict(max_new_tokens=max_new_tokens, eos_id=eos, n_texts=n_texts)
    res: dict[str, Any] = {
        "config": {"policy": str(policy), "baseline": str(baseline), "judge": judge_desc, "data": str(data),
                   "prompts": P, "n": n, "best_of": best_of, "max_new_tokens": max_new_tokens,
                   "temperature": temperature, "seed": seed, "tokenizer": tok_desc},
        "win_rate": win_rate(s_p, s_b),
        "policy": _model_summary(s_p, smp_p, tok, **summ),
        "baseline": _model_summary(s_b, smp_b, tok, **summ),
        "kl": {**mc_kl(lp_pol, lp_ref), "reference": "baseline", "unbiased": temperature == 1.0},
        "prompts": prompts[:n_texts],
    }
    if best_of:
        smp_n, s_n = sample_and_score(pol, n * best_of, jax.random.key(seed + 2), "best_of_n")
        grid = s_n.reshape(P, n, best_of)
        pick = grid.argmax(-1)  # [P, n]
        rows = (np.arange(P)[:, None] * n * best_of + np.arange(n)[None, :] * best_of + pick).reshape(-1)
        chosen = {k: v[rows] for k, v in smp_n.items()}
        s_best = np.take_along_axis(grid, pick[..., None], -1)[..., 0]
        res["best_of_n"] = {"N": best_of, "win_rate": win_rate(s_best, s_b), "candidate_scores": grid.tolist(),
                            **_model_summary(s_best, chosen, tok, **summ),
                            "kl_bound": math.log(best_of) - (best_of - 1) / best_of}
    res["timings"] = {**timings, "total_s": round(time.time() - t0, 2)}
    return res


# ----------------------------------------------------------------------------------------------------------
# Outputs


def _fmt(x, d=3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{d}f}"


def render_markdown(res: dict) -> str:
    c, w, kl = res["config"], res["win_rate"], res["kl"]
    lines = ["# jalign eval", "",
             f"policy `{c['policy']}` vs baseline `{c['baseline']}`, judge: {c['judge']}; {c['prompts']} prompts "
             f"from `{c['data']}`, n = {c['n']} completions each, ≤ {c['max_new_tokens']} new tokens, temperature "
             f"{c['temperature']}, seed {c['seed']}.", "",
             "| | win rate vs baseline (± SE) | mean reward (± SE) | mean length | clipped | distinct-1 | distinct-2 |",
             "|---|---|---|---|---|---|---|"]
    rows = [("policy", res["policy"], w), ("baseline", res["baseline"], None)]
    if "best_of_n" in res:
        rows.append((f"best-of-{res['best_of_n']['N']} policy", res["best_of_n"], res["best_of_n"]["win_rate"]))
    for name, m, wr in rows:
        wtxt = f"{_fmt(wr['win_rate'])} ± {_fmt(wr['se'])}" if wr else "—"
        lines.append(f"| {name} | {wtxt} | {_fmt(m['reward_mean'])} ± {_fmt(m['reward_se'])} | "
                     f"{_fmt(m['lengths']['mean'], 1)} | {_fmt(m['lengths']['clipped_share'], 2)} | "
                     f"{_fmt(m['distinct_1'])} | {_fmt(m['distinct_2'])} |")
    lines += ["", f"Win rate: {w['wins']} wins, {w['ties']} ties (½ each), {w['losses']} losses over "
              f"{w['comparisons']} comparisons (all n×n pairs within a prompt); SE over prompts.", "",
              f"Monte-Carlo KL(policy‖baseline) on {kl['samples']} policy samples: k1 = {_fmt(kl['k1'], 4)} ± "
              f"{_fmt(kl['k1_se'], 4)}, k3 = {_fmt(kl['k3'], 4)} ± {_fmt(kl['k3_se'], 4)} nats"
              + ("" if kl["unbiased"] else " (temperature ≠ 1: the samples are not from the policy; biased)") + "."]
    if "best_of_n" in res:
        lines.append(f"Best-of-{res['best_of_n']['N']}: KL to the policy ≤ ln N − (N−1)/N = "
                     f"{_fmt(res['best_of_n']['kl_bound'], 4)} nats.")
    lines += ["", "![eval](eval.png)", "", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in res["timings"].items()),
              ""]
    return "\n".join(lines)


def _plot(res: dict, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from jalign.plotting import savefig, style

    models = [("policy", res["policy"]), ("baseline", res["baseline"])]
    wins = [("policy", res["win_rate"])]
    if "best_of_n" in res:
        models.append((f"best-of-{res['best_of_n']['N']}", res["best_of_n"]))
        wins.append((f"best-of-{res['best_of_n']['N']}", res["best_of_n"]["win_rate"]))
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        edges = np.histogram_bin_edges(np.concatenate([np.ravel(m["scores"]) for _, m in models]), bins=20)
        for i, (name, m) in enumerate(models):
            axes[0].hist(np.ravel(m["scores"]), bins=edges, alpha=0.45, color=f"C{i}", label=name)
        axes[0].set_xlabel("judge score")
        axes[0].set_ylabel("completions")
        axes[0].legend(fontsize=8)
        for i, (_name, w) in enumerate(wins):
            se = w["se"] if math.isfinite(w["se"]) else 0.0
            axes[1].errorbar([i], [w["win_rate"]], yerr=[2 * se], fmt="o", color=f"C{2 * i}", capsize=4)
        axes[1].axhline(0.5, color="k", ls=":", lw=1)
        axes[1].set_xticks(range(len(wins)), [n for n, _ in wins])
        axes[1].set_xlim(-0.5, len(wins) - 0.5)
        axes[1].set_ylim(0, 1)
        axes[1].set_ylabel("win rate vs baseline (± 2 SE)")
        return savefig(fig, out, "eval")


def write_outputs(res: dict, out: str | Path) -> list[Path]:
    """Write ``results.json``, ``report.md`` and ``eval.png``/``.pdf`` into ``out``; return the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    paths = [out / "results.json", out / "report.md"]
    paths[0].write_text(json.dumps(clean(res), indent=1))
    paths[1].write_text(render_markdown(res))
    return paths + list(_plot(res, out))
