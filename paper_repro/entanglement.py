"""Gradient entanglement (Yuan et al., ICLR 2025, arXiv 2410.13828): the sentiment study on the small LM, and an
exactly analysable toy.

Part (1), the small LM (the pretrained 0.86M-parameter byte-level GPT-2 of :func:`jalign.models.load_small_lm`)
trained on the three built-in variants of the paper's sentiment design — ``entangle_one_token`` (chosen and
rejected differ in one word), ``entangle_short_suffix`` and ``entangle_long_suffix`` (an identical suffix after
the differing word) — with DPO, IPO, SimPO, R-DPO, DPOP and SPPO (``sppo_hard``), with and without the two
mitigations (pairwise-normalised update, token masking). Every run starts from the same model, sees the same
batches (Adam), and a probe (:class:`jalign.train.probes.entanglement_probe`) records the mean gradient
cosine, the case fractions and the chosen / rejected log-probs of a fixed probe set of pairs every few steps.
One compiled step serves every loss and mitigation (:class:`jalign.studies.entanglement.PairwiseWeightedTrainer`:
the exact chain-rule gradient mean_i (a_i g_w,i + b_i g_l,i)).

Part (2), the log-linear toy of :mod:`jalign.diagnostics.toy` (shared-suffix design): first-order predicted
log-prob changes against the actual ones for a small step, for every registered margin loss; and DPO against
both mitigations as the shared suffix grows.

Seeds: every small-LM run is repeated for ``seeds`` seeds (3 quick, 5 full). A seed is the data order of the
training pipeline (``builtin_pairwise`` with ``seed=s``: which of the 256 pairs make up each batch and in which
order); every seed starts from the same pretrained model and is probed on the same fixed probe set. The seeds are
trained together, batched on a leading seed axis (:func:`jalign.studies.entanglement.train_pairwise_seeds`: one
vmapped compiled call per update serves all seeds; seed 0 is the data order of the former single run). Claims
are 95% t-intervals over the seeds of per-seed statistics (rules in :data:`RULES`, fixed before the run).

Quick mode (CPU): responses truncated to 88 bytes (the long suffix keeps about 60 shared bytes), 4 pairs per
batch, 12 steps, 3 seeds, a probe of 8 other pairs at steps 0, 6 and 12; DPO with both mitigations on every
variant, the other five losses (with and without the normalised update) on the long-suffix variant. Full mode:
untruncated sequences (256 tokens), every loss × variant × mitigation, 16 pairs, 100 steps, 5 seeds. Medium mode
(``jalign reproduce entanglement --medium``, about an hour on 2 CPU cores): the DPO runs behind the small-LM
claims that do not hold at quick size — every variant × mitigation — with quick's truncation, 8 pairs per batch,
36 steps (three times quick's), 5 seeds and a probe of 16 pairs every 12 steps; the other losses are not run, so
the two "every margin loss" claims are left out. The math lives in jalign; this module wires runs, saves JSON
and draws the figures from it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from jalign.diagnostics.entanglement import MITIGATIONS  # none, normalized, masked
from paper_repro._common import draw_figures, finish, output_dir, read_results

NAME = "entanglement"
DESCRIPTION = "gradient entanglement: cosine / log-prob curves of six margin losses on the small LM, mitigations, toy"
PAPER = "Yuan et al., A Common Pitfall of Margin-based LM Alignment: Gradient Entanglement, ICLR 2025"

LOSSES = ("dpo", "ipo", "simpo", "rdpo", "dpop", "sppo_hard")
LABELS = {"dpo": "DPO", "ipo": "IPO", "simpo": "SimPO", "rdpo": "R-DPO", "dpop": "DPOP", "sppo_hard": "SPPO"}
VARIANTS = ("one_token", "short_suffix", "long_suffix")
CURVE_KEYS = ("cosine", "inner", "chosen_sq_norm", "rejected_sq_norm", "mean_chosen_logps", "mean_rejected_logps",
              "case/ideal", "case/both fall", "case/both rise", "case/reversed")
HPARAMS = {"dpo": {"beta": 0.1}, "ipo": {"beta": 0.1}, "simpo": {"beta": 2.0, "gamma": 0.5},
           "rdpo": {"beta": 0.1, "alpha": 0.2}, "dpop": {"beta": 0.1, "lambda_": 50.0}, "sppo_hard": {"beta": 0.1}}


def _settings(quick: bool, medium: bool = False) -> dict:
    if medium:
        return {"seq_len": 128, "max_prompt_len": 40, "batch_size": 8, "steps": 36, "probe_every": 12,
                "probe_pairs": 16, "lr": 1e-4, "optimizer": "adam", "seeds": 5,
                "runs": [(v, "dpo", m) for v in VARIANTS for m in MITIGATIONS]}
    if quick:
        # The probe works in chunks of batch_size pairs: its per-example gradients and reference forward
        # reuse the training step's compilations (the normalised update computes the same statistics).
        # 3 seeds batched cost about 3x the compute of one; the probe runs every 6 steps (3 points) instead of 4.
        return {"seq_len": 128, "max_prompt_len": 40, "batch_size": 4, "steps": 12, "probe_every": 6,
                "probe_pairs": 8, "lr": 1e-4, "optimizer": "adam", "seeds": 3,
                "runs": [(v, "dpo", m) for v in VARIANTS for m in MITIGATIONS]
                + [("long_suffix", k, m) for k in LOSSES if k != "dpo" for m in ("none", "normalized")]}
    return {"seq_len": 256, "max_prompt_len": 40, "batch_size": 16, "steps": 100, "probe_every": 10,
            "probe_pairs": 32, "lr": 1e-4, "optimizer": "adam", "seeds": 5,
            "runs": [(v, k, m) for v in VARIANTS for k in LOSSES for m in MITIGATIONS]}


# ---------------------------------------------------------------------------------------------------------
# Part 1: the small LM


def _lm_study(cfg: dict) -> dict:
    import numpy as np
    import optax

    from jalign.models import load_small_lm
    from jalign.studies.entanglement import PairwiseWeightedTrainer, train_pairwise_seeds
    from jalign.train import plugins
    from jalign.train.probes import entanglement_probe
    from jalign.train.step import split_model

    graphdef, params0, model_state = split_model(load_small_lm())
    trainer = PairwiseWeightedTrainer(graphdef, model_state, optax.adam(cfg["lr"]))

    def source(variant, batch_size, seed, data_seed=None):
        return plugins.make_data("builtin_pairwise", batch_size=batch_size, seq_len=cfg["seq_len"], seed=seed,
                                  dataset=f"entangle_{variant}", max_prompt_len=cfg["max_prompt_len"],
                                  data_seed=data_seed)

    probe_sets, out = {}, {"runs": []}
    for variant in VARIANTS:
        # A fixed probe set: other pairs of the same design (data seed 1), full response masks.
        b = {k: np.asarray(v) for k, v in next(source(variant, cfg["probe_pairs"], 1, 1)).items()}
        k = cfg["batch_size"]
        ref = [trainer.logps(params0, {f: v[i:i + k] for f, v in b.items()}) for i in range(0, len(b["chosen_ids"]), k)]
        b["ref_chosen_logps"] = np.concatenate([np.asarray(r[0]) for r in ref])
        b["ref_rejected_logps"] = np.concatenate([np.asarray(r[1]) for r in ref])
        probe_sets[variant] = b
        out.setdefault("probe_sets", {})[variant] = {
            "pairs": int(cfg["probe_pairs"]),
            "response_tokens": float(np.mean(b["chosen_mask"][:, 1:].sum(-1))),
            "truncated": int(np.asarray(b.get("chosen_truncated", np.zeros(1))).sum()),
        }
    from tqdm.auto import tqdm

    for variant, loss, mitigation in tqdm(cfg["runs"], desc="entanglement runs", unit="run", file=sys.stderr):
        probe = entanglement_probe(probe_sets[variant], loss=loss, hparams=HPARAMS[loss],
                                   every=cfg["probe_every"], name="entanglement", model=trainer.lm,
                                   batch_size=cfg["batch_size"])
        seeds = list(range(cfg["seeds"]))
        res = train_pairwise_seeds(trainer, params0, [source(variant, cfg["batch_size"], s) for s in seeds],
                                   loss=loss, hparams=HPARAMS[loss], steps=cfg["steps"], mitigation=mitigation,
                                   probe=probe)
        # per seed: curves[key][seed][probe point]; train_loss[seed][step]
        curves = {"step": [r["step"] for r in res["probes"][0]]}
        curves |= {k: [[r[k] for r in recs] for recs in res["probes"]] for k in CURVE_KEYS}
        out["runs"].append({"variant": variant, "loss": loss, "mitigation": mitigation, "seeds": seeds,
                            "curves": curves,
                            "train_loss": [[h["loss"][s] for h in res["history"]] for s in seeds]})
    return out


# ---------------------------------------------------------------------------------------------------------
# Part 2: the toy


def _toy_study(quick: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jalign import diagnostics as dg
    from jalign.diagnostics import toy as T
    from jalign.losses import PairwiseLogps

    # (a) First-order predictions against actual changes, every registered margin loss, small step.
    # In float64, so that the actual change of a log-prob of size ~15 resolves steps of size 1e-4.
    toy, chosen, rejected = T.suffix_design(8)
    lr = 1e-4
    with jax.enable_x64():
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), toy.init(0.3, jax.random.key(0)))
        chosen = {k: (jnp.asarray(v, jnp.float64) if k == "mask" else v) for k, v in chosen.items()}
        rejected = {k: (jnp.asarray(v, jnp.float64) if k == "mask" else v) for k, v in rejected.items()}
        n = jnp.full((1,), 9.0, jnp.float64)
        batch = PairwiseLogps(jnp.zeros(1, jnp.float64), jnp.zeros(1, jnp.float64), jnp.asarray([-20.0]),
                              jnp.asarray([-19.0]), n, n)
        reports, skipped = dg.all_margin_loss_reports(toy.logp, params, chosen, rejected, batch, lr=lr,
                                                      measure=True)
        reports = jax.device_get(reports)
    pred = {}
    for name, r in reports.items():
        pw, pl = float(r["predicted_chosen_change"][0]), float(r["predicted_rejected_change"][0])
        aw, al = float(r["actual_chosen_change"][0]), float(r["actual_rejected_change"][0])
        pred[name] = {"predicted": [pw, pl], "actual": [aw, al], "case": dg.CASES[int(r["case"][0])],
                      "observed_case": dg.CASES[0 if aw >= 0 and al <= 0 else 1 if al <= 0 else 2 if aw >= 0 else 3],
                      "a": float(r["a"][0]), "b": float(r["b"][0])}
    # (b) DPO vs the mitigations as the shared suffix grows (exact gradient steps on one pair).
    steps = 30
    curves = {}
    for k in (0, 4, 8) if quick else (0, 1, 2, 4, 8, 16):
        curves[str(k)] = {m: T.suffix_experiment(m, suffix_len=k, steps=steps, lr=0.5) for m in
                          ("dpo", "normalized", "masked")}
    return {"lr": lr, "design": "suffix_design(8), W ~ 0.3·N(0, 1) (key 0), float64", "predictions": pred,
            "skipped": skipped, "suffix_curves": curves, "suffix_steps": steps,
            "max_relative_error": float(max(
                np.abs(np.subtract(v["predicted"], v["actual"])).max() / max(np.abs(v["actual"]).max(), 1e-12)
                for v in pred.values()))}


# ---------------------------------------------------------------------------------------------------------
# Claims


# The pass rules, fixed in code before the run. Small-LM rows: 95% t-intervals over the seeds (:func:`seeded`,
# :func:`seeded_all` of paper_repro._common; ≥ 3 seeds) of per-seed statistics of the probe curves: Δ = value at
# the last probe point − value at step 0 (probe mean over the fixed probe set), cos = mean cosine over the probe
# points. The toy rows are exact computations on jalign's own log-linear toy (source "reconstruction").
RULES = {
    "toy_first_order": "for every registered margin loss: |predicted − actual| / max|actual| < 1e-2 at step 1e-4 "
    "(float64), and the predicted case label equals the observed one",
    "toy_suffix": "exact gradient steps on the toy pair: Δ log π(y_w) of DPO > 0 without a shared suffix and < 0 "
    "with the longest one, and > 0 for both mitigations with the longest one (no tolerance: signs of exact "
    "float64 changes of size ≥ 0.1)",
    "one_token_rises": "the 95% t-interval over seeds of Δ log π(y_w) (one-token variant, DPO) lies above 0",
    "suffix_falls": "the 95% t-intervals over seeds of −Δ log π(y_w) (short suffix) and of Δ(short) − Δ(long) lie "
    "above 0",
    "cosine_grows": "the 95% t-intervals over seeds of cos(short suffix), cos(long) − cos(short) and cos(short) − "
    "cos(one token) lie above 0",
    "one_token_negative": "the 95% t-interval over seeds of the largest cosine after step 0 (one-token variant) lies "
    "below 0",
    "mitigation": "for every variant where DPO's mean Δ log π(y_w) over seeds is < 0, the 95% t-interval over "
    "seeds of Δ log π(y_w) with the mitigation lies above 0",
    "every_loss_falls": "for every distinct margin loss (losses with identical runs counted once) the 95% "
    "t-interval over seeds of Δ log π(y_w) on the long suffix lies below 0",
    "normalized_every_loss": "for every distinct margin loss the 95% t-interval over seeds of Δ log π(y_w) with the "
    "normalised update lies above 0",
}


def _run(res, variant, loss="dpo", mitigation="none"):
    for r in res["lm"]["runs"]:
        if (r["variant"], r["loss"], r["mitigation"]) == (variant, loss, mitigation):
            return r
    return None


def _per_seed(run, key):
    """``[S, P]``: a probe curve of every seed (a single-seed run saved as one curve counts as one seed)."""
    import numpy as np

    y = np.asarray(run["curves"][key], np.float64)
    return y[None] if y.ndim == 1 else y


def _delta(run, key="mean_chosen_logps"):
    """Per-seed change over the run (last probe point − step 0), ``[S]``."""
    y = _per_seed(run, key)
    return y[:, -1] - y[:, 0]


def _mean_cos(run):
    """Per-seed mean gradient cosine over the probe points, ``[S]``."""
    return _per_seed(run, "cosine").mean(axis=1)


def _dpo_deltas(res: dict) -> dict:
    """Per-seed Δ chosen log-prob of the plain DPO run on each variant (probe mean over the run)."""
    return {v: _delta(_run(res, v)) for v in VARIANTS}


def _fmt_variants(d: dict) -> str:
    """``"one token +0.12, short suffix −0.30, long suffix …"``: the seed mean of every variant in ``d``."""
    import numpy as np

    return ", ".join(f"{v.replace('_', ' ')} {float(np.mean(d[v])):+.2f}" for v in VARIANTS if v in d)


def distinct_losses(runs: dict) -> dict[str, list[str]]:
    """Group losses whose runs are identical (same probe curves and training losses): representative → members.

    In quick mode R-DPO's length penalty α·(n_w − n_l) vanishes (the truncated responses have equal lengths), so
    its run equals DPO's; a count "k of n losses" must count it once.
    """
    groups: dict[str, list[str]] = {}
    for k, r in runs.items():
        rep = next((g for g in groups if runs[g]["curves"] == r["curves"]
                    and runs[g].get("train_loss") == r.get("train_loss")), None)
        if rep is None:
            groups[k] = [k]
        else:
            groups[rep].append(k)
    return groups


def _claim(claim: str, measured: str, status_ev, source: str = "paper", paper: str = PAPER) -> dict:
    from jalign.reporting import make_claim

    return make_claim(paper=paper, claim=claim, measured=measured, status=status_ev[0], evidence=status_ev[1],
                      source=source)


def _lm_dpo_claims(res: dict) -> list[dict]:
    """[small LM] DPO on the three variants: chosen log-prob and gradient cosine against the shared suffix."""
    from paper_repro._common import seeded, seeded_all

    claims = []
    dpo = {v: _run(res, v) for v in VARIANTS}
    dch = _dpo_deltas(res)
    drj = {v: _delta(dpo[v], "mean_rejected_logps") for v in VARIANTS}
    cos = {v: _mean_cos(dpo[v]) for v in VARIANTS}
    st, ev, txt = seeded(dch["one_token"], 0.0, above=True, rule=RULES["one_token_rises"])
    claims.append(_claim(
        "[small LM] one differing token: under DPO the chosen log-prob rises",
        f"Δ chosen log-prob over the run (probe mean; seed means): {_fmt_variants(dch)}; one token {txt}", (st, ev)))
    st, ev, txt = seeded_all([("−Δ(short)", -dch["short_suffix"]),
                              ("Δ(short) − Δ(long)", dch["short_suffix"] - dch["long_suffix"])],
                             0.0, above=True, rule=RULES["suffix_falls"])
    claims.append(_claim(
        "[small LM] with a shared suffix DPO lowers the chosen log-prob, more for the long suffix",
        f"Δ chosen (seed means): {_fmt_variants(dch)}; Δ rejected: {_fmt_variants(drj)}; {txt}", (st, ev)))
    st, ev, txt = seeded_all([("cos(short)", cos["short_suffix"]),
                              ("cos(long) − cos(short)", cos["long_suffix"] - cos["short_suffix"]),
                              ("cos(short) − cos(one token)", cos["short_suffix"] - cos["one_token"])],
                             0.0, above=True, rule=RULES["cosine_grows"])
    claims.append(_claim(
        "[small LM] gradient cosine is positive with suffixes and grows with suffix length",
        f"mean cos(g_w, g_l) over the DPO run (seed means): {_fmt_variants(cos)}; {txt}", (st, ev)))
    c1 = _per_seed(dpo["one_token"], "cosine")
    st, ev, txt = seeded(c1[:, 1:].max(axis=1), 0.0, above=False, rule=RULES["one_token_negative"])
    claims.append(_claim(
        "[small LM] one differing token: the gradient cosine turns negative and stays negative",
        f"cosine {c1[:, 0].mean():.2f} at step 0, {c1[:, -1].mean():.2f} at the end (seed means; min {c1.min():.2f}); "
        f"the responses share the prompt and ' The <subject> was ' (byte tokens), which the paper's 1t pairs may "
        f"not; largest cosine after step 0 {txt}", (st, ev)))
    return claims


def _lm_mitigation_claims(res: dict) -> list[dict]:
    """[small LM] DPO with each mitigation keeps the chosen log-prob rising where plain DPO lets it fall."""
    import numpy as np

    from paper_repro._common import not_here, seeded_all

    claims = []
    dch = _dpo_deltas(res)
    for m, label in (("normalized", "the pairwise-normalised update"), ("masked", "token masking")):
        fell = [v for v in VARIANTS if np.mean(dch[v]) < 0]
        got = {v: _delta(_run(res, v, "dpo", m)) for v in VARIANTS if _run(res, v, "dpo", m)}
        claim = f"[small LM] {label} keeps the chosen log-prob rising where DPO lets it fall"
        measured = (f"DPO + {m}: Δ chosen (seed means) {_fmt_variants(got)} (DPO alone falls on average on: "
                    f"{', '.join(fell) or 'none'})")
        if not fell:
            claims.append(_claim(claim, measured, not_here("DPO's mean chosen log-prob fell on no variant")))
            continue
        parts = [(v.replace("_", " "), got.get(v, [])) for v in fell]
        st, ev, txt = seeded_all(parts, 0.0, above=True, rule=RULES["mitigation"])
        claims.append(_claim(claim, f"{measured}; {txt}", (st, ev)))
    return claims


def _lm_loss_claims(res: dict) -> list[dict]:
    """[small LM, long suffix] Every distinct margin loss, with and without the normalised update."""
    import numpy as np

    from paper_repro._common import seeded_all

    claims = []
    for m, claim, rule, paper in (
            ("none", "[small LM, long suffix] every margin loss can lower the chosen log-prob", "every_loss_falls",
             PAPER),
            ("normalized", "[small LM, long suffix] the normalised update keeps the chosen log-prob rising for "
             "every loss", "normalized_every_loss", "card (mitigation, derivation)")):
        runs = {k: _run(res, "long_suffix", k, m) for k in LOSSES if _run(res, "long_suffix", k, m)}
        if len(runs) < 2:  # medium mode runs DPO only: no claim about every loss
            continue
        groups = distinct_losses(runs)
        d = {k: _delta(runs[k]) for k in groups}
        same = "; ".join(f"{' = '.join(LABELS[x] for x in g)} (identical runs)" for g in groups.values() if len(g) > 1)
        hit = [k for k in d if (np.mean(d[k]) < 0 if m == "none" else np.mean(d[k]) > 0)]
        st, ev, txt = seeded_all([(LABELS[k], d[k]) for k in d], 0.0, above=m != "none", rule=RULES[rule])
        word = "falls" if m == "none" else "rises"
        claims.append(_claim(
            claim, "Δ chosen" + (" with the normalised update" if m != "none" else "") + " (seed means): "
            + ", ".join(f"{LABELS[k]} {float(np.mean(_delta(r))):+.2f}" for k, r in runs.items())
            + f"; on average {word} under {len(hit)} of {len(d)} distinct losses" + (f" ({same})" if same else "")
            + f"; {txt}", (st, ev), paper=paper))
    return claims


def _toy_claims(res: dict) -> list[dict]:
    """[toy] First-order predictions against actual changes; DPO and the mitigations as the suffix grows."""
    from paper_repro._common import exact

    claims = []
    toy = res["toy"]
    agree = sum(v["case"] == v["observed_case"] for v in toy["predictions"].values())
    ok = toy["max_relative_error"] < 1e-2 and agree == len(toy["predictions"])
    claims.append(_claim(
        "[toy] predicted first-order log-prob changes match the actual changes for a small step, and case labels "
        "agree with the observed signs (every margin loss)",
        f"{len(toy['predictions'])} losses, step {toy['lr']}: max relative error {toy['max_relative_error']:.2e}; "
        f"case labels agree {agree}/{len(toy['predictions'])}",
        exact(ok, toy["max_relative_error"], RULES["toy_first_order"]), "reconstruction",
        paper="card (first-order condition)"))
    sc = toy["suffix_curves"]
    longest = max(sc, key=int)
    dd = {m: sc[longest][m]["chosen_logps"][-1] - sc[longest][m]["chosen_logps"][0] for m in sc[longest]}
    d0 = sc["0"]["dpo"]["chosen_logps"][-1] - sc["0"]["dpo"]["chosen_logps"][0]
    ok = d0 > 0 and dd["dpo"] < 0 and dd["normalized"] > 0 and dd["masked"] > 0
    claims.append(_claim(
        "[toy] DPO lowers the chosen log-prob with a long shared suffix (not without); both mitigations keep it "
        "rising",
        f"suffix 0: DPO Δ chosen {d0:+.3f}; suffix {longest}: DPO {dd['dpo']:+.3f}, normalised "
        f"{dd['normalized']:+.3f}, masked {dd['masked']:+.3f}",
        exact(ok, min(d0, -dd["dpo"], dd["normalized"], dd["masked"]), RULES["toy_suffix"]), "reconstruction"))
    return claims


def claims(res: dict) -> list[dict]:
    """Every claim with its evidence, from the saved results (rules: :data:`RULES`), in order:
    the small LM's, the toy's and the 7B TL;DR result (not reproducible here)."""
    from paper_repro._common import not_here

    out = _lm_dpo_claims(res) + _lm_mitigation_claims(res) + _lm_loss_claims(res) + _toy_claims(res)
    out.append(_claim(
        "TL;DR with Mistral-7B / Llama-3-8B: both log-probs rise / both fall by model",
        "needs 7B models and the TL;DR data; the small LM and built-in data stand in",
        not_here("needs 7B models and the TL;DR data")))
    return out


# ---------------------------------------------------------------------------------------------------------
# Figures (from results.json only)


_STYLES = {"none": "-", "normalized": "--", "masked": ":"}
_KEYS = [("cosine", "cos(g_w, g_l)"), ("mean_chosen_logps", "Δ log π(y_w) (probe mean)"),
         ("mean_rejected_logps", "Δ log π(y_l) (probe mean)")]


def _probe_band(run: dict, key: str):
    """A probe curve of a run over its seeds: ``(steps, mean, lo, hi)``, the seed mean and the pointwise 95%
    t-interval (the cosine as recorded, log-probs as changes from step 0; no band with one seed)."""
    import numpy as np

    from jalign.reporting import t_interval

    y = _per_seed(run, key)
    if key != "cosine":
        y = y - y[:, :1]
    band = np.array([t_interval(y[:, j]) for j in range(y.shape[1])])
    return np.asarray(run["curves"]["step"]), band[:, 0], band[:, 1], band[:, 2]


def _draw_band(ax, run, key, fmt, **kw):
    steps, mean, lo, hi = _probe_band(run, key)
    (line,) = ax.plot(steps, mean, fmt, **kw)
    if np.all(np.isfinite(lo)):
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.15, lw=0)


def _plot_lm_variants(res: dict):
    """DPO with each mitigation on the three variants: cosine and log-prob changes along training (seed mean,
    shaded: pointwise 95% t-interval over seeds)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 3, figsize=(13, 10), squeeze=False)
    for i, v in enumerate(VARIANTS):
        for j, (key, label) in enumerate(_KEYS):
            ax = axes[i][j]
            for m in MITIGATIONS:
                r = _run(res, v, "dpo", m)
                if r is None:
                    continue
                _draw_band(ax, r, key, _STYLES[m], marker="o", ms=3, label=f"DPO, {m}")
            ax.axhline(0, color="k", lw=0.5)
            ax.set(xlabel="step", ylabel=label, title=v.replace("_", " "))
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _plot_lm_losses(res: dict):
    """Every margin loss on the long-suffix variant, with and without the normalised update (seed mean ± 95%
    t-interval)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4), squeeze=False)
    colors = dict(zip(LOSSES, plt.cm.tab10.colors, strict=False))
    for j, (key, label) in enumerate(_KEYS):
        ax = axes[0][j]
        for k in LOSSES:
            for m in ("none", "normalized"):
                r = _run(res, "long_suffix", k, m)
                if r is None:
                    continue
                _draw_band(ax, r, key, _STYLES[m], color=colors[k],
                           label=f"{LABELS[k]}" + (" + normalised" if m == "normalized" else ""))
        ax.axhline(0, color="k", lw=0.5)
        ax.set(xlabel="step", ylabel=label, title="long suffix")
    axes[0][0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def _plot_toy(res: dict):
    """The toy: predicted against actual first-order changes, and the shared-suffix curves."""
    import matplotlib.pyplot as plt

    toy = res["toy"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    for v in toy["predictions"].values():
        ax.scatter(v["predicted"][0], v["actual"][0], marker="o", color="C0")
        ax.scatter(v["predicted"][1], v["actual"][1], marker="x", color="C3")
    lims = [min(min(v["predicted"] + v["actual"]) for v in toy["predictions"].values()),
            max(max(v["predicted"] + v["actual"]) for v in toy["predictions"].values())]
    ax.plot(lims, lims, "k", lw=0.5)
    ax.set(xlabel="predicted Δ (first order)", ylabel="actual Δ", title=f"toy: every margin loss, step {toy['lr']}"
           " (o chosen, x rejected)")
    sc = toy["suffix_curves"]
    for ax, key in zip(axes[1:], ("chosen_logps", "rejected_logps"), strict=True):
        for i, k in enumerate(sorted(sc, key=int)):
            for m in ("dpo", "normalized", "masked"):
                y = sc[k][m][key]
                ax.plot([x - y[0] for x in y], _STYLES["none" if m == "dpo" else m], color=f"C{i}",
                        label=f"suffix {k}, {m}")
        ax.axhline(0, color="k", lw=0.5)
        ax.set(xlabel="step", ylabel=f"Δ {key.replace('_', ' ')}", title="toy: shared-suffix pair")
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


FIGURES = (("lm_dpo_variants", _plot_lm_variants), ("lm_losses_long_suffix", _plot_lm_losses),
           ("toy", _plot_toy))


def run(out: Path, *, quick: bool = True, medium: bool = False) -> dict:
    """Run both parts, write ``out/results.json`` and the figures, return the results (with claims).
    ``medium`` (overrides ``quick``): the DPO runs at a budget between quick and full (module docstring)."""
    out = output_dir(out)
    t0 = time.time()
    quick = quick and not medium
    cfg = _settings(quick, medium)
    res = {"quick": quick, "settings": {k: v for k, v in cfg.items() if k != "runs"}, "hparams": HPARAMS}
    if medium:
        res["size"] = "medium"
    res["toy"] = _toy_study(quick)
    res["lm"] = _lm_study(cfg)
    res["claims"] = claims(res)
    return finish(out, res, plot_from_results, t0=t0)


def plot_from_results(out: Path) -> list[str]:
    """Redraw every figure from ``out/results.json``."""
    return draw_figures(Path(out), read_results(out), FIGURES)
