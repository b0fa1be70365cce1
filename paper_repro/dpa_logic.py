"""Reproduction: the logic of direct preference alignment (Richardson, Srikumar, Sabharwal, ICML 2025).

Symbolic forms of the known losses, the 4^(2^n) count, the entailment lattice of the 256 reference-free
structures as a Hasse diagram with the known losses on it, and toy training of lattice losses (CPO, cCPO,
unCPO, cfUNL, ORPO, CE+unlikelihood) on exactly solvable categorical policies, and short training runs of
lattice losses on the shipped small LM (``jalign.models.load_small_lm``) on fixed built-in preference pairs
(3 draws of 8 pairs, 5 with ``--full``, batched; see :data:`LM_SEEDS`), relating constrainedness (lattice rank)
to the winner / loser log-probs. All math lives in :mod:`jalign.logic`;
this module wires it, writes ``results.json`` and draws the figures from that JSON.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from paper_repro._common import draw_figures, finish, output_dir, read_results

NAME = "dpa-logic"
DESCRIPTION = ("Logic of DPA: symbolic forms, 4^(2^n) landscape, entailment lattice, toy and small-LM training of "
               "lattice losses")
PAPER = "Richardson, Srikumar & Sabharwal, Understanding the Logic of DPA through Logic, ICML 2025"

# The losses placed on the lattice / trained on the toys.
LATTICE_LOSSES = ["cpo", "orpo", "uncpo", "ccpo", "cfunl", "ce", "unl", "ceunl"]
TOY_LOSSES = ["cpo", "ccpo", "uncpo", "cfunl", "orpo", "ceunl"]
TOY_STEPS = 1000
# Small-LM runs: lattice losses from most to least constrained (rank 2 … 6), one compiled training loop for all.
# Seeds: full-batch Adam on fixed pairs from the fixed pretrained model is deterministic, so a seed draws WHICH
# pairs are trained on: seed s takes the first batch of the 512 sentiment_pairs (the data set's own fixed
# generator seed) shuffled with seed s, i.e. 8 pairs drawn at random without replacement. The claims are thus
# about training on 8 pairs of this distribution, not on one particular set of 8. All seeds of a loss train in
# one program (jalign.logic.toy.train_structures with ``data``: vmap over the seed axis of the pairs).
LM_LOSSES = ["ceunl", "cfunl", "cpo", "orpo", "ccpo", "uncpo"]
LM_STEPS = {True: 20, False: 100}  # quick / full
LM_SEEDS = {True: [0, 1, 2], False: [0, 1, 2, 3, 4]}  # quick / full: the pair draws
LM = {
    "model": "small_lm",  # a jalign.train.plugins model name (tests use "tiny")
    "model_kwargs": {},
    "dataset": "sentiment_pairs",
    "pairs": 8,  # the training pairs of one seed (full batch every step, as on the toys)
    "seq_len": 132,
    "max_prompt_len": 42,  # with these lengths no prompt or response of the 512 pairs is truncated
    "learning_rate": 1e-4,
    "grad_clip": 1.0,
    "beta": 1.0,
    "length_normalize": True,
}


def _toys():
    from jalign.logic.toy import CategoricalToy, LogLinearToy

    return {
        "categorical": CategoricalToy(n_responses=8, chosen=(0, 1), rejected=(2, 3), init_scale=0.5),
        "loglinear": LogLinearToy(
            n_responses=16, chosen=(0, 1, 2, 3), rejected=(4, 5, 6, 7), init_scale=0.5, dim=8, similarity=0.6
        ),
    }


def _symbolic_table():
    from jalign import logic
    from jalign.logic.structure import pretty

    rows = []
    for name in sorted(logic.KNOWN):
        k = logic.KNOWN[name]
        s = k.structure
        rows.append(
            {
                "name": name,
                "P": pretty(s.core),
                "P_C": pretty(s.conditioning),
                "P_A": pretty(s.additive),
                "variables": list(s.variables),
                "labels": [r["label"] for r in s.truth_table()],
                "ratio": k.ratio,
                "f": k.f,
                "outside_logic": k.outside,
            }
        )
    return rows


def _closed_form_errors(rng):
    """Max |compiled − closed form| of the card's closed forms at random probabilities (float64)."""
    import jax
    import jax.numpy as jnp

    from jalign import logic
    from jalign.losses import PairwiseLogps

    w, l, rw, rl = rng.uniform(1e-3, 1 - 1e-3, size=(4, 512))
    forms = {
        "cpo": np.log(w / l),
        "orpo": np.log(w * (1 - l) / (l * (1 - w))),
        "dpo": np.log(w * rl / (l * rw)),
        "uncpo": np.log((l * w + 1 - l) / (l * (1 - w))),
        "ref_variant": np.log(w * rl * (1 - l) / (l * rw * (1 - w))),
    }
    out = {}
    with jax.enable_x64():
        b = PairwiseLogps(*(jnp.log(jnp.asarray(x)) for x in (w, l, rw, rl)))
        for name, rho in forms.items():
            got = np.asarray(logic.compile(logic.decompile(name))(b))
            out[name] = float(np.max(np.abs(got - np.logaddexp(0.0, -rho))))
    return out


def _landscape(rng):
    import jax
    import jax.numpy as jnp

    from jalign import logic

    S = list(logic.enumerate_losses(2))
    edges = logic.hasse_edges(S)
    classes = logic.equivalence_classes(S)
    # monotonicity: every comparable pair, at random probabilities
    p = rng.uniform(1e-4, 1 - 1e-4, size=(512, 2))
    with jax.enable_x64():
        rho = np.asarray(logic.rho_many(S, jnp.log(jnp.asarray(p))))
    with np.errstate(invalid="ignore", over="ignore"):
        loss = np.logaddexp(0.0, -rho)
    C = np.stack([s.check_mask for s in S])
    X = np.stack([s.cross_mask for s in S])
    le = np.all(C[:, None] <= C[None], -1) & np.all(X[:, None] >= X[None], -1)
    np.fill_diagonal(le, False)
    defined = ~np.isnan(loss).any(1)
    pairs = violations = 0
    for i, j in zip(*np.nonzero(le), strict=True):
        if defined[i] and defined[j]:
            pairs += 1
            with np.errstate(invalid="ignore"):
                bad = ~((loss[i] >= loss[j] - 1e-12) | (loss[i] == loss[j]))
            violations += int(bad.any())
    named = {}
    for name in LATTICE_LOSSES:
        s = logic.decompile(name).over(("M_w", "M_l"))
        named[name] = next(i for i, t in enumerate(S) if t.labels == s.labels)
    named_list = [logic.decompile(n).over(("M_w", "M_l")) for n in LATTICE_LOSSES]
    sub_edges = [(LATTICE_LOSSES[i], LATTICE_LOSSES[j]) for i, j in logic.hasse_edges(named_list)]
    regions = [("ceunl", "unl"), ("ceunl", "ce"), ("unl", "uncpo"), ("ce", "uncpo")]
    return {
        "nodes": [{"labels": list(s.labels), "name": s.name, "rank": logic.rank(s)} for s in S],
        "edges": edges,
        "named": named,
        "named_edges": sub_edges,
        "n_classes": len(classes),
        "class_sizes": sorted((len(c) for c in classes), reverse=True),
        "monotonicity": {"comparable_pairs": pairs, "pairs_violated": violations, "points": int(p.shape[0])},
        "regions_entail": {f"{a} ⊨ {b}": logic.entails(logic.decompile(a), logic.decompile(b)) for a, b in regions},
    }


def _train(quick: bool):
    from jalign import logic
    from jalign.logic.toy import train_curves

    seeds = list(range(8 if quick else 64))
    steps = TOY_STEPS
    every = 5
    out = {}
    for setting, toy in _toys().items():
        res = {}
        for name in TOY_LOSSES:
            loss = logic.compile(logic.decompile(name))
            h = train_curves(loss, toy.logps, toy.init, seeds, steps=steps, learning_rate=0.05)
            sl = slice(None, None, every)
            res[name] = {
                k2: np.round(v[:, sl].mean(0), 5).tolist()
                for k2, v in (("chosen_mean", h["chosen_logps"]), ("rejected_mean", h["rejected_logps"]),
                              ("loss_mean", h["loss"]))
            } | {
                "chosen_std": np.round(h["chosen_logps"][:, sl].std(0), 5).tolist(),
                "rejected_std": np.round(h["rejected_logps"][:, sl].std(0), 5).tolist(),
                "chosen_final": float(h["chosen_logps"][:, -1].mean()),
                "rejected_final": float(h["rejected_logps"][:, -1].mean()),
                "chosen_min": float(h["chosen_logps"].mean(0).min()),
                "chosen_argmin": int(h["chosen_logps"].mean(0).argmin()),
                # per seed (row s = seed s): what the seeded claims' intervals are computed from
                "chosen_final_per_seed": [float(v) for v in h["chosen_logps"][:, -1]],
                "chosen_min_per_seed": [float(v) for v in h["chosen_logps"].min(1)],
                "chosen_argmin_per_seed": [int(v) for v in h["chosen_logps"].argmin(1)],
            }
        out[setting] = {
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in toy.__dict__.items()},
            "steps": steps,
            "record_every": every,
            "seeds": len(seeds),
            "learning_rate": 0.05,
            "losses": res,
        }
    return out


def _lm_logps_fn(cfg, seeds):
    """The LM and its pairs: ``(params0, logps_fn, data, tokens)``. ``data`` stacks each seed's ``cfg['pairs']``
    pairs (chosen rows then rejected rows of ``ids``/``mask``/``attention_mask``) on a leading seed axis;
    ``logps_fn(params, data_s)`` is the summed response log-probs of one seed's pairs (a PairwiseLogps);
    ``tokens[s]`` the response token counts of seed s's pairs."""
    import jax.numpy as jnp

    from jalign.losses import PairwiseLogps
    from jalign.train import plugins
    from jalign.train.step import make_logps_fn, split_model

    model = plugins.make_model(cfg["model"], seed=0, **cfg["model_kwargs"])
    k = cfg["pairs"]
    cats, tokens = [], []
    for seed in seeds:
        src = plugins.make_data("builtin_pairwise", batch_size=k, seq_len=cfg["seq_len"], seed=seed,
                                dataset=cfg["dataset"], max_prompt_len=cfg["max_prompt_len"])
        batch = next(src)
        cats.append({f: np.concatenate([np.asarray(batch[f"chosen_{f}"]), np.asarray(batch[f"rejected_{f}"])])
                     for f in ("ids", "mask", "attention_mask")})
        tokens.append({side: np.asarray(batch[f"{side}_mask"])[:, 1:].sum(-1).tolist()
                       for side in ("chosen", "rejected")})
    data = {f: jnp.asarray(np.stack([c[f] for c in cats])) for f in cats[0]}
    graphdef, params, rest = split_model(model)

    def logps_fn(p, d):
        lp, n = make_logps_fn(graphdef, p, rest)(d["ids"], d["mask"], d["attention_mask"])
        return PairwiseLogps(chosen_logps=lp[:k], rejected_logps=lp[k:], chosen_lengths=n[:k],
                             rejected_lengths=n[k:])

    return params, logps_fn, data, tokens


def _lm(quick: bool):
    from jalign import logic
    from jalign.logic.toy import train_structures

    cfg = dict(LM)
    steps, seeds = LM_STEPS[quick], LM_SEEDS[quick]
    params, logps_fn, data, tokens = _lm_logps_fn(cfg, seeds)
    structures = [logic.decompile(n).over(("M_w", "M_l")) for n in LM_LOSSES]
    h = train_structures(structures, logps_fn, params, steps=steps, learning_rate=cfg["learning_rate"],
                         beta=cfg["beta"], length_normalize=cfg["length_normalize"], grad_clip=cfg["grad_clip"],
                         data=data)
    res = {}
    for i, (name, s) in enumerate(zip(LM_LOSSES, structures, strict=True)):
        cw, cl, loss = h["chosen_logps"][i], h["rejected_logps"][i], h["loss"][i]  # [seeds, steps + 1]
        res[name] = {
            "rank": logic.rank(s),
            "labels": logic.label_string(s.labels),
            # per seed (row r = seed r)
            "chosen": np.round(cw, 4).tolist(),
            "rejected": np.round(cl, 4).tolist(),
            "loss": np.round(loss, 6).tolist(),
            "chosen_change": [float(v) for v in cw[:, -1] - cw[:, 0]],
            "rejected_change": [float(v) for v in cl[:, -1] - cl[:, 0]],
            "margin_change": [float(v) for v in (cw[:, -1] - cl[:, -1]) - (cw[:, 0] - cl[:, 0])],
            "chosen_min": [float(v) for v in cw.min(1)],
            "chosen_argmin": [int(v) for v in cw.argmin(1)],
        }
    return {"config": cfg | {"steps": steps, "seeds": seeds, "optimizer": "adam", "response_tokens": tokens,
                             "f": "logistic",
                             "seeding": "seed s trains on the first batch of the 512 pairs shuffled with seed s "
                             "(8 pairs drawn without replacement); the model and the steps are deterministic"},
            "losses": res}


# The pass rules, fixed in code before the run. Rows about cCPO, cfUNL, CE, UNL, CE+UNL (the landscape losses
# whose exact structures are jalign's reconstruction, :mod:`jalign.logic.decompile`), the reference variant's
# conditioning constraint (chosen to reproduce the card's closed form) and jalign's own toys are source
# "reconstruction".
CLOSED_FORM_TOL = 1e-10
DIP = 0.5  # nats: a "dip" is a minimum inside the run at least this far below the final winner log-prob
RULES = {
    "closed_form": f"max |compiled loss − closed form| < {CLOSED_FORM_TOL:g} over 512 random probabilities (float64)",
    "count": "cannot fail: enumerate_losses(2) is the product of the 4 labels over the 2^2 worlds, so it has 4^4 = "
    "256 entries, and count_losses(n) returns 4**(2**n)",
    "monotone": "0 violations (tolerance 1e-12) among every comparable pair of the 256 structures at 512 random "
    "probability points",
    "regions": "every listed entailment holds (exact model checking of the formulas)",
    "equivalent": "cannot fail: the compiled loss depends only on a structure's world labels, so formulas with equal "
    "labellings give equal losses by construction (the 190 classes counted are classes of equal ρ)",
    "ccpo_best": "95% t-interval over seeds of log π(y_w)[cCPO] − max(CPO, unCPO, cfUNL) after training lies above 0",
    "cpo_below": "95% t-interval over seeds of log π(y_w)[cCPO] − log π(y_w)[CPO] after training lies above 0",
    "dip": f"for unCPO and for cfUNL: the 95% t-interval over seeds of the dip (final − minimum of log π(y_w) when "
    f"the minimum lies strictly inside the run, else 0) lies above {DIP}",
}
LM_NEED = {
    "ccpo_best": "the 95% t-interval over seeds of log π(y_w)[cCPO] − max(CPO, unCPO, cfUNL) lies above 0",
    "cpo_below": "the 95% t-interval over seeds of log π(y_w)[cCPO] − log π(y_w)[CPO] lies above 0",
    "dip": f"for unCPO and cfUNL the 95% t-interval over seeds of the dip lies above {DIP}",
    "extremes": "the 95% t-intervals over seeds of Δ log π(y_w)[most constrained] − max(others) and of "
    "min(others) − Δ log π(y_w)[least constrained] lie above 0",
    "spearman": "the 95% t-interval over seeds of Spearman(rank, Δ log π(y_w)) lies below −0.8",
}


def spearman(x, y) -> float:
    """Spearman's rank correlation with average ranks for ties."""
    def ranks(v):
        v = np.asarray(v, float)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for val in np.unique(v):
            r[v == val] = r[v == val].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _claim(claim: str, measured: str, status_ev, source: str = "paper") -> dict:
    from jalign.reporting import make_claim

    return make_claim(paper=PAPER, claim=claim, measured=measured, status=status_ev[0], evidence=status_ev[1],
                      source=source)


def _symbolic_claims(res: dict) -> list[dict]:
    """Closed forms of the compiled losses, the 4^(2^n) count, monotonicity, the regions' entailments and the
    number of distinct losses among the 256 structures."""
    from paper_repro._common import by_construction, exact

    forms_err, land = res["closed_form_max_abs_error"], res["lattice"]
    claims = []
    for name, label in [
        ("cpo", "CPO's structure gives WMC ratio π_w/π_l"),
        ("orpo", "ORPO's structure gives the odds ratio odds(π_w)/odds(π_l)"),
        ("dpo", "DPO's structure gives the DPO ratio π_w·ref_l/(π_l·ref_w)"),
        ("uncpo", "unCPO = −log σ(log[(π_l·π_w + 1 − π_l)/(π_l·(1 − π_w))])"),
        ("ref_variant", "reference variant = −log σ(log[π_w·ref_l·(1 − π_l)/(π_l·ref_w·(1 − π_w))]) (its "
         "conditioning constraint is jalign's, chosen to give this closed form)"),
    ]:
        claims.append(_claim(
            label, f"max |compiled − closed form| = {forms_err[name]:.2e} (512 random points, float64)",
            exact(forms_err[name] < CLOSED_FORM_TOL, forms_err[name], RULES["closed_form"]),
            "reconstruction" if name == "ref_variant" else "paper"))
    n_nodes = len(land["nodes"])
    claims.append(_claim(
        "4^(2^n) losses: 256 without a reference model (n = 2), 4,294,967,296 with one (n = 4)",
        f"enumerated {n_nodes} labellings for n = 2; count_losses(4) = {res['counts']['4']}",
        by_construction(RULES["count"], n_nodes)))
    m = land["monotonicity"]
    claims.append(_claim(
        "Monotonicity: if P2 ⊨ P1 then ℓ(P2) ≥ ℓ(P1)",
        f"{m['comparable_pairs']} comparable pairs × {m['points']} random points: {m['pairs_violated']} violated",
        exact(m["pairs_violated"] == 0 and m["comparable_pairs"] > 0, m["pairs_violated"], RULES["monotone"])))
    r = land["regions_entail"]
    claims.append(_claim(
        "No-reference regions ordered M_w ∧ ¬M_l ⊨ {¬M_l, M_w} ⊨ M_l → M_w (most to least constrained; the "
        "CE+UNL, UNL and CE structures are jalign's reconstruction)",
        "; ".join(f"{k}: {v}" for k, v in r.items()),
        exact(all(r.values()), sum(map(bool, r.values())), RULES["regions"]), "reconstruction"))
    claims.append(_claim(
        "Equivalent formulas give equal losses",
        f"{land['n_classes']} distinct loss functions among the 256 structures (classes of equal ρ); see "
        "tests/logic for syntactically different formulas",
        by_construction(RULES["equivalent"], land["n_classes"])))
    return claims


def _dips(L: dict, steps: int, key_final: str, key_min: str, key_argmin: str) -> list[float]:
    """Per seed: final − min of the winner log-prob when the minimum lies strictly inside the run, else 0."""
    return [f - mn if 0 < am < steps else 0.0
            for f, mn, am in zip(L[key_final], L[key_min], L[key_argmin], strict=True)]


def _toy_claims(toy: dict) -> list[dict]:
    """The card's qualitative toy results (winner log-probs of CPO, cCPO, unCPO, cFUNL), per toy, over seeds."""
    from paper_repro._common import not_here, seeded

    claims = []
    for setting, d in toy.items():
        L = d["losses"]
        fin = {k: np.asarray(L[k]["chosen_final_per_seed"]) for k in ("cpo", "ccpo", "uncpo", "cfunl")}
        mean = ", ".join(f"{k} {v.mean():.3f}" for k, v in fin.items())
        best = fin["ccpo"] - np.max([fin[k] for k in ("cpo", "uncpo", "cfunl")], axis=0)
        st, ev, txt = seeded(best, 0.0, above=True, rule=RULES["ccpo_best"])
        claims.append(_claim(
            f"[toy: {setting}] cCPO keeps the winner's log-prob highest among CPO, cCPO, unCPO, cfUNL",
            f"mean final log π(y_w): {mean}; cCPO minus the best other {txt}", (st, ev), "reconstruction"))
        st, ev, txt = seeded(fin["ccpo"] - fin["cpo"], 0.0, above=True, rule=RULES["cpo_below"])
        claims.append(_claim(
            f"[toy: {setting}] CPO ends with a lower winner log-prob than cCPO",
            f"CPO {fin['cpo'].mean():.3f} vs cCPO {fin['ccpo'].mean():.3f}; cCPO − CPO {txt} (card: ≈ −3.3 vs "
            "≈ −1.5)", (st, ev), "reconstruction"))
        dips = {k: np.asarray(_dips(L[k], d["steps"], "chosen_final_per_seed", "chosen_min_per_seed",
                                    "chosen_argmin_per_seed")) for k in ("uncpo", "cfunl")}
        worst = min(dips, key=lambda k: dips[k].mean())
        st, ev, txt = seeded(dips[worst], DIP, above=True, rule=RULES["dip"])
        others = [seeded(dips[k], DIP, above=True, rule=RULES["dip"])[0] for k in dips]
        if "does not hold" in others:
            st = "does not hold"
        elif "inconclusive" in others:
            st = "inconclusive" if st != "does not hold" else st
        claims.append(_claim(
            f"[toy: {setting}] unCPO and cfUNL winner log-probs dip then settle higher (card: ≈ −8.5 → ≈ −4.3)",
            "; ".join(f"{k}: mean curve min {L[k]['chosen_min']:.2f} at step {L[k]['chosen_argmin']}, final "
                      f"{L[k]['chosen_final']:.2f}" for k in dips) + f"; smaller dip ({worst}) {txt}",
            (st, ev), "reconstruction"))
    claims.append(_claim(
        "The card's toy numbers (−1.5, −3.3, −8.5, −4.3)",
        "the paper's toy set-up is not specified on the card; jalign's toys are its own (see docs/logic.md)",
        not_here("the paper's toy set-up is not given; nothing to compare with")))
    return claims


def _lm_seed_stats(lm: dict) -> dict:
    """Per-seed statistics of the small-LM runs (arrays over seeds; every comparison is paired within a seed,
    since all losses of a seed train on the same pairs from the same model)."""
    L = lm["losses"]
    steps = lm["config"]["steps"]
    fin = {k: np.asarray(v["chosen"], np.float64)[:, -1] for k, v in L.items()}
    dw = {k: np.asarray(v["chosen_change"], np.float64) for k, v in L.items()}
    ranks = {k: v["rank"] for k, v in L.items()}
    most, least = min(ranks, key=ranks.get), max(ranks, key=ranks.get)
    out = {"final": fin, "change": dw, "ranks": ranks, "most": most, "least": least, "n": len(dw[most])}
    if all(k in L for k in ("cpo", "ccpo", "uncpo", "cfunl")):
        out["ccpo_best"] = fin["ccpo"] - np.max([fin[k] for k in ("cpo", "uncpo", "cfunl")], axis=0)
        out["cpo_below"] = fin["ccpo"] - fin["cpo"]
        out["dips"] = {k: np.asarray(_dips({"f": fin[k].tolist(), "m": L[k]["chosen_min"], "a": L[k]["chosen_argmin"]},
                                           steps, "f", "m", "a")) for k in ("uncpo", "cfunl")}
    out["top"] = dw[most] - np.max([v for k, v in dw.items() if k != most], axis=0)
    out["bottom"] = np.min([v for k, v in dw.items() if k != least], axis=0) - dw[least]
    names = list(L)
    out["spearman"] = np.asarray([spearman([ranks[k] for k in names], [dw[k][r] for k in names])
                                  for r in range(out["n"])])
    return out


def _lm_claims(lm: dict) -> list[dict]:
    """The toy's claims on the small LM and constrainedness against the winner's log-prob, over seeds (seed =
    which 8 pairs are trained on), and the LLM-scale result (not reproducible here)."""
    from paper_repro._common import not_here, seeded, seeded_all

    claims = []
    L = lm["losses"]
    steps = lm["config"]["steps"]
    tag = f"[small LM, {lm['config']['pairs']} fixed pairs, {steps} Adam steps]"
    st_ = _lm_seed_stats(lm)
    n, fin, dw, ranks = st_["n"], st_["final"], st_["change"], st_["ranks"]
    over = f"means over {n} seeds (seed = a draw of the 8 pairs)"
    if "ccpo_best" in st_:
        four = ("cpo", "ccpo", "uncpo", "cfunl")
        st, ev, txt = seeded(st_["ccpo_best"], 0.0, above=True, rule=LM_NEED["ccpo_best"])
        claims.append(_claim(
            f"{tag} cCPO keeps the winner's log-prob highest among CPO, cCPO, unCPO, cfUNL (as on the toy)",
            ", ".join(f"{k} {fin[k].mean():.1f}" for k in four) + f" (final summed log π(y_w), {over}); cCPO minus "
            f"the best other {txt}", (st, ev), "reconstruction"))
        st, ev, txt = seeded(st_["cpo_below"], 0.0, above=True, rule=LM_NEED["cpo_below"])
        claims.append(_claim(
            f"{tag} CPO ends with a lower winner log-prob than cCPO",
            f"CPO {fin['cpo'].mean():.1f} vs cCPO {fin['ccpo'].mean():.1f} ({over}); cCPO − CPO {txt}", (st, ev),
            "reconstruction"))
        dips = st_["dips"]
        st, ev, txt = seeded_all([(f"{k} dip", v) for k, v in dips.items()], DIP, above=True, rule=LM_NEED["dip"])
        claims.append(_claim(
            f"{tag} unCPO and cfUNL winner log-probs dip then settle higher (as on the toy)",
            "; ".join(f"{k}: minimum inside the run on {int(np.sum(np.asarray(L[k]['chosen_argmin']) % steps > 0))}"
                      f" of {n} seeds" for k in dips) + f"; {txt}", (st, ev), "reconstruction"))
    most, least = st_["most"], st_["least"]
    table = ", ".join(f"{k} (rank {ranks[k]}) {dw[k].mean():+.1f}" for k in sorted(L, key=ranks.get))
    st, ev, txt = seeded_all([(f"Δ[{most}] − max others", st_["top"]), (f"min others − Δ[{least}]", st_["bottom"])],
                             0.0, above=True, rule=LM_NEED["extremes"])
    claims.append(_claim(
        f"{tag} constrainedness vs the winner: the most constrained loss trained raises log π(y_w) most and the "
        "least constrained lowers it most",
        f"Δ log π(y_w) by lattice rank (low = constrained), {over}: {table}; {txt}", (st, ev), "reconstruction"))
    rho = st_["spearman"]
    st, ev, txt = seeded(rho, -0.8, above=False, rule=LM_NEED["spearman"])
    claims.append(_claim(
        f"{tag} the winner's log-prob change is ordered by constrainedness (Spearman(rank, Δ log π(y_w)) ≤ −0.8)",
        f"Spearman(rank, Δ log π(y_w)) over {len(L)} losses, per seed {', '.join(f'{v:.2f}' for v in rho)}: {txt}",
        (st, ev), "reconstruction"))
    claims.append(_claim(
        "LLM scale (Qwen-0.5B, UltraFeedback): new losses vs CPO, no significant advantage",
        "no 0.5B model, UltraFeedback or win-rate judge here; only the 0.86M-parameter small LM's log-prob "
        "curves above", not_here("needs a 0.5B model, UltraFeedback and a win-rate judge")))
    return claims


def claims(res: dict) -> list[dict]:
    """Every claim with its evidence, from the saved results (rules: :data:`RULES`, :data:`LM_NEED`), in order:
    symbolic, toy, small LM."""
    return _symbolic_claims(res) + _toy_claims(res["toy"]) + (_lm_claims(res["lm"]) if "lm" in res else [])


def _plot_lattice(res: dict):
    """The Hasse diagram of the 256 reference-free structures by rank, with the known losses marked, and the
    entailment order among the known losses."""
    import matplotlib.pyplot as plt

    colors = plt.cm.tab10.colors
    land = res["lattice"]
    nodes = land["nodes"]
    by_rank: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        by_rank.setdefault(n["rank"], []).append(i)
    pos = {}
    for rk, idx in by_rank.items():
        idx = sorted(idx, key=lambda i: nodes[i]["labels"])
        for k, i in enumerate(idx):
            pos[i] = ((k - (len(idx) - 1) / 2) / max(len(idx), 1) * 2.0, rk)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(15, 7), gridspec_kw={"width_ratios": [2, 1]})
    for i, j in land["edges"]:
        (x0, y0), (x1, y1) = pos[i], pos[j]
        ax.plot([x0, x1], [y0, y1], color="0.7", lw=0.3, alpha=0.35, zorder=1)
    xs, ys = zip(*[pos[i] for i in range(len(nodes))], strict=True)
    ax.scatter(xs, ys, s=6, color="0.4", zorder=2)
    for c, (name, i) in enumerate(land["named"].items()):
        x, y = pos[i]
        ax.scatter([x], [y], s=60, color=colors[c % 10], zorder=3, edgecolor="k")
        ax.annotate(name, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=9, zorder=4)
    ax.set_xticks([])
    ax.set_ylabel("rank = |✓| + |not ✗|  (higher = less constrained, lower loss)")
    ax.set_title(f"Entailment lattice of the 256 reference-free structures (B_8, {len(land['edges'])} edges)")
    # named sub-order
    names = list(land["named"])
    rk = {n: nodes[land["named"][n]]["rank"] for n in names}
    levels: dict[int, list[str]] = {}
    for n in names:
        levels.setdefault(rk[n], []).append(n)
    p2 = {n: (k - (len(v) - 1) / 2, r) for r, v in levels.items() for k, n in enumerate(v)}
    for a, b in land["named_edges"]:
        ax2.annotate("", xy=p2[b], xytext=p2[a], arrowprops=dict(arrowstyle="->", color="0.4"))
    for c, n in enumerate(names):
        ax2.scatter(*p2[n], s=80, color=colors[c % 10], edgecolor="k", zorder=3)
        labels = "".join({0: "·", 1: "✓", 2: "✗", 3: "B"}[x] for x in nodes[land["named"][n]]["labels"])
        ax2.annotate(f"{n}\n{labels}", p2[n], xytext=(6, -4), textcoords="offset points", fontsize=9)
    ax2.set_xticks([])
    ax2.set_xlim(-2, 2.5)
    ax2.set_title("Known losses: arrows a → b mean a ⊨ b\n(labels over worlds TT TF FT FF; B = both, · = excluded)")
    ax2.set_ylabel("rank")
    fig.tight_layout()
    return fig


def _plot_toy_curves(res: dict):
    """Winner and loser log-probs along training of every toy loss, per toy (mean ± sd over seeds)."""
    import matplotlib.pyplot as plt

    colors = plt.cm.tab10.colors
    toy = res["toy"]
    fig, axes = plt.subplots(len(toy), 2, figsize=(12, 4.2 * len(toy)), squeeze=False)
    for r, (setting, d) in enumerate(toy.items()):
        t = np.arange(len(next(iter(d["losses"].values()))["chosen_mean"])) * d["record_every"]
        for c, (key, title) in enumerate((("chosen", "winner log π(y_w)"), ("rejected", "loser log π(y_l)"))):
            ax = axes[r, c]
            for k, (name, L) in enumerate(d["losses"].items()):
                m, s = np.array(L[f"{key}_mean"]), np.array(L[f"{key}_std"])
                ax.plot(t, m, label=name, color=colors[k % 10])
                ax.fill_between(t, m - s, m + s, color=colors[k % 10], alpha=0.12)
            ax.set_title(f"{setting} toy: {title} (mean ± sd over {d['seeds']} seeds)")
            ax.set_xlabel("Adam step")
            ax.set_ylabel("log-prob")
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _seed_band(rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of ``rows`` (``[seeds, n]``): mean over seeds and 95% t-interval (nan bounds with one seed)."""
    from jalign.reporting import t_interval

    a = np.asarray(rows, np.float64)
    m, lo, hi = (np.asarray(v) for v in zip(*[t_interval(a[:, j]) for j in range(a.shape[1])], strict=True))
    return m, lo, hi


def _plot_lm_curves(res: dict):
    """The small LM: winner and loser log-probs along training, and their changes against lattice rank (means
    over seeds, i.e. draws of the pairs, with 95% t-intervals)."""
    import matplotlib.pyplot as plt

    colors = plt.cm.tab10.colors
    lm = res["lm"]
    L = lm["losses"]
    n = len(lm["config"]["seeds"])
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
    order = sorted(L, key=lambda k: L[k]["rank"])
    for c, (key, title) in enumerate((("chosen", "winner log π(y_w)"), ("rejected", "loser log π(y_l)"))):
        ax = axes[c]
        for k, name in enumerate(order):
            m, lo, hi = _seed_band(L[name][key])
            t = np.arange(len(m))
            ax.plot(t, m, label=f"{name} (rank {L[name]['rank']})", color=colors[k % 10])
            ax.fill_between(t, lo, hi, color=colors[k % 10], alpha=0.12)
        ax.set_title(f"small LM: {title}, mean over {lm['config']['pairs']} pairs\n(mean, 95% t-band over {n} "
                     "draws of the pairs)")
        ax.set_xlabel("Adam step")
        ax.set_ylabel("summed response log-prob")
        ax.legend(fontsize=8)
    ax = axes[2]
    for k, name in enumerate(order):
        d = L[name]
        for key, marker in (("chosen_change", "o"), ("rejected_change", "v")):
            m, lo, hi = _seed_band(np.asarray(d[key])[:, None])
            ax.errorbar([d["rank"]], m, yerr=np.nan_to_num([m - lo, hi - m]), fmt="none", ecolor=colors[k % 10],
                        capsize=3, lw=1)
            ax.scatter([d["rank"]], m, color=colors[k % 10], marker=marker, s=50, edgecolor="k")
        ax.annotate(name, (d["rank"], float(np.mean(d["chosen_change"]))), xytext=(5, 3), textcoords="offset points",
                    fontsize=8)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("lattice rank (higher = less constrained)")
    ax.set_ylabel("change over training (● winner, ▼ loser)")
    ax.set_title(f"small LM: constrainedness vs log-prob change (mean, 95% t over {n} seeds)")
    fig.tight_layout()
    return fig


FIGURES = (("lattice", _plot_lattice), ("toy_curves", _plot_toy_curves), ("lm_curves", _plot_lm_curves))


def plot(out: Path) -> list[str]:
    """Draw the figures from ``out/results.json``; return the names of the files written."""
    res = read_results(out)
    return draw_figures(Path(out), res, FIGURES if "lm" in res else FIGURES[:-1])


def run(out: Path, *, quick: bool = True, lm: bool = True) -> dict:
    """Run everything (``lm=False``: without the small-LM part), write ``out/results.json`` and the figures (from
    the JSON); return the results."""
    out = output_dir(out)
    from jalign import logic

    t0 = time.time()
    rng = np.random.default_rng(0)
    forms_err = _closed_form_errors(rng)
    land = _landscape(rng)
    toy = _train(quick)
    lm = _lm(quick) if lm else None
    res = {
        "paper": PAPER,
        "quick": quick,
        "symbolic_forms": _symbolic_table(),
        "counts": {str(n): logic.count_losses(n) for n in range(5)},
        "closed_form_max_abs_error": forms_err,
        "lattice": land,
        "toy": toy,
    }
    if lm is not None:
        res["lm"] = lm
    res["claims"] = claims(res)
    return finish(out, res, plot_from_results, t0=t0, ensure_ascii=False)


def plot_from_results(out: Path) -> list[str]:
    """Redraw every figure from ``out/results.json`` (the figures are never edited by hand)."""
    return plot(Path(out))
