"""Likelihood displacement and CHES (Razin et al., ICLR 2025, arXiv 2410.08847) on the small byte-level LM.

Three experiments, all on :func:`jalign.models.load_small_lm` (0.86M-parameter byte-level GPT-2) with the
trainer's pure steps (:func:`jalign.train.step.make_train_step`, one pair per step, so every run has the
same shapes and each step function is compiled once for the whole reproduction):

1. **Single-token persona experiment** (paper Section 3, Table 1). Built-in ``persona_yesno`` prompts,
   pairs No ≻ Never (statements the persona rejects), Yes ≻ No and Sure ≻ Yes (statements it endorses).
   *Convention for the byte LM:* a "token" of the paper is a whole answer word, so the response is the word
   with its leading space and EOS (" No"+EOS, 4 byte tokens), π(y|x) its sequence probability, and the
   "tokens that gain" are the paper's label words {Yes, Yeah, Sure, Certainly, Absolutely, No, Never,
   Maybe, Perhaps} (each + EOS) scored by the :class:`~jalign.train.probes.displacement_probe`;
   the probe also reports the byte tokens that gain at the first byte where y+ and y− differ. Each run
   (one prompt = one seed) first fine-tunes on (x, y+) (SFT, as in the paper's runs after SFT, so that
   π(y+) starts high), then runs DPO on the single pair with the SFT model as reference. Metric: the
   largest drop of π(y+) between two steps (:func:`~jalign.diagnostics.largest_drop`), and where the
   dropped mass went. Theorem 5 on the real model: at the first differing byte, the Spearman correlation of
   ⟨W_z, W+ − W−⟩ (tied unembedding of the SFT model) with the change of ln π(z) after the first DPO step,
   and the norms of W+ − W− parallel / orthogonal to W+.
2. **Sample identification** (Section 5). Built-in ``sentiment_pairs``, ranked by CHES, length-normalised
   CHES, −edit distance and the last-hidden-state inner product (higher = more similar = more displacement
   expected). For each score, DPO from the pretrained model on the subsets at its 0/25/50/75/100th
   percentiles; the preferred log-prob change per subset; Spearman correlation of the percentile with the
   change (−1 = the score orders the drop perfectly).
3. **Mitigation** (Section 6). DPO on all pairs, DPO + SFT (``rpo`` loss, α = 1) on all pairs, DPO on the
   lowest length-normalised-CHES fraction and, as a control, on a random subset of the same size. Every run
   makes ``mitigation_epochs`` passes over its own training pairs (one pair per update), so the subset runs
   take fewer updates than the full ones (quick: 10 against 40); change of log π(y+) (and log π(y−)) on the
   full set and on each run's training pairs.

Seeds (claims: 95% t-intervals over seeds, rules in :data:`RULES`): in (1) a seed is a prompt (3 per pair at
quick size, 10 full); in (2) and (3) a seed is a draw of the preference pairs (``sentiment_pairs`` generated with
data seed ``s``, 3 quick, 5 full), scored, subset and trained in its own order. All seeds of a run train together:
the trainer's step vmapped over a leading seed axis (states and batches stacked), one compilation per objective.

Medium mode (``jalign reproduce ches --medium``): quick's settings with 5 prompts per persona pair, 60 DPO steps
(three times quick's) and 5 draws of the preference pairs.

No math lives here: scores, probe, steps and losses come from :mod:`jalign`.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jalign.data import builtin
from jalign.diagnostics import (
    ches_scores,
    largest_drop,
    mass_gainers,
    pack_prompt_response,
    percentile_subsets,
)
from jalign.diagnostics.displacement import difference_components, probe_batch
from jalign.diagnostics.sample_scores import edit_distance, last_hidden_inner_product, spearman
from jalign.diagnostics.ufm import theorem5_scores
from jalign.train.batch import PAIRWISE_FIELDS as PAIR_FIELDS
from jalign.train.probes import displacement_probe
from paper_repro._common import draw_figures, finish, output_dir, read_results

NAME = "ches"
DESCRIPTION = "Likelihood displacement under DPO and the CHES score on the small byte LM (Razin et al. 2025)"
PAPER = "Razin et al., Unintentional Unalignment: Likelihood Displacement in DPO, ICLR 2025"

PAIRS = ((" No", " Never"), (" Yes", " No"), (" Sure", " Yes"))
CANDIDATES = (" Yes", " Yeah", " Sure", " Certainly", " Absolutely", " No", " Never", " Maybe", " Perhaps")
POSITIVE = (" Yes", " Yeah", " Sure", " Certainly", " Absolutely")
# The answer words without EOS: π(" No" + anything) — the mass that continues y+'s bytes instead of ending
# (" Not", " Now", ...) is π(prefix) − π(word + EOS).
PREFIXES = (" No", " Never", " Yes", " Sure")
SCORES = ("ches", "ches_ln", "neg_edit_distance", "last_hidden_ip")
SCORE_LABELS = {"ches": "CHES", "ches_ln": "length-normalised CHES", "neg_edit_distance": "−edit distance",
                "last_hidden_ip": "last-hidden inner product"}
PERCENTILES = (0, 25, 50, 75, 100)
FLOW = ("chosen", "rejected", "positive_words", "negative_words", "chosen_continued", "elsewhere")
FLOW_LABELS = {"chosen": "y+", "rejected": "y−", "positive_words": "other positive words",
               "negative_words": "other negative words", "chosen_continued": "y+ continued (no EOS)",
               "elsewhere": "elsewhere"}
RUNS3 = ("dpo", "dpo+sft", "filtered", "random subset")


def settings(quick: bool, medium: bool = False) -> dict:
    """Every knob of the reproduction (stored in results.json). ``medium``: quick's with 5 prompts per persona
    pair, three times the DPO steps (60) and 5 draws of the preference pairs."""
    if medium:
        return {**settings(True), "seeds": 5, "dpo_steps": 60, "set_seeds": 5}
    return {
        "seq_len": 136,  # BOS + prompt (<= 101 bytes) + response + EOS, for both data sets
        "beta": 0.1,
        "optimizer": "adam (constant lr), one pair per step",
        # (1) single-token persona
        "seeds": 3 if quick else 10,  # prompts per persona pair (batched)
        "sft_steps": 15 if quick else 25,
        "sft_lr": 3e-3,
        "dpo_steps": 20 if quick else 100,
        "dpo_lr": 2e-4,  # every DPO / DPO + SFT run
        # (2) sample identification
        "n_pairs": 40 if quick else 256,
        "subset_size": 6 if quick else 32,
        "epochs": 1 if quick else 2,
        "set_seeds": 3 if quick else 5,  # draws of the preference pairs (data seeds 0..), batched
        # (3) mitigation
        "filter_fraction": 0.25 if quick else 0.05,
        "mitigation_epochs": 1,
        "rpo_alpha": 1.0,
        "eval_chunk": 8,
    }


class _Engine:
    """The small LM, its split state and the three compiled steps (SFT, DPO, DPO + SFT) at one shape."""

    def __init__(self, cfg: dict):
        from flax import nnx

        from jalign.models import load_small_lm
        from jalign.tokenizers import ByteTokenizer
        from jalign.train.objectives import SFT, make_objective
        from jalign.train.step import TrainState, make_train_step, split_model

        self.cfg, self.tok = cfg, ByteTokenizer()
        model = load_small_lm()
        self.model_cfg = model.cfg
        self.graphdef, self.params0, self.model_state = split_model(model)
        self._TrainState = TrainState
        self.tx_sft = optax.adam(cfg["sft_lr"])
        self.tx_dpo = optax.adam(cfg["dpo_lr"])
        beta = cfg["beta"]
        # every step runs all seeds at once: states and batches stacked on a leading seed axis (jax.vmap of the
        # trainer's pure step, one compilation per objective)
        mk = lambda obj, tx: jax.jit(jax.vmap(make_train_step(self.graphdef, obj, tx)))
        self.sft_step = mk(SFT(), self.tx_sft)
        self.dpo_step = mk(make_objective("preference", "dpo", {"beta": beta}), self.tx_dpo)
        self.rpo_step = mk(make_objective("preference", "rpo", {"beta": beta, "rpo_alpha": cfg["rpo_alpha"]}),
                           self.tx_dpo)
        gd, ms = self.graphdef, self.model_state

        def hidden(params, ids, att):
            return nnx.merge(gd, params, ms)(ids, att, return_hidden=True).hidden_states

        def logps(params, ids, mask, att):
            from jalign.train.step import make_logps_fn

            return make_logps_fn(gd, params, ms)(ids, mask, att)[0]

        self.hidden = jax.jit(hidden)
        self.logps = jax.jit(logps)

    def state(self, params, tx, *, reference: bool):
        return self._TrainState(params=params, opt_state=tx.init(params), model_state=self.model_state,
                                ref_params=params if reference else None, step=jnp.zeros((), jnp.int32),
                                rng=jax.random.key_data(jax.random.key(0)))

    def seed_state(self, params, tx, n: int, *, reference: bool):
        """The stacked state of ``n`` seeds, every one starting from ``params``."""
        from jalign.train.step import replicate_tree

        return replicate_tree(self.state(params, tx, reference=reference), n)

    def restart(self, st, tx, *, reference: bool):
        """A fresh stacked state (new optimiser state, step 0, reference = the current params if asked) at the
        stacked params of ``st``."""
        from jalign.train.step import stack_trees, tree_index

        n = int(st.step.shape[0])
        return stack_trees([self.state(tree_index(st.params, s), tx, reference=reference) for s in range(n)])

    def unembedding(self, params) -> np.ndarray:
        """W ``[V, D]`` (rows = token unembeddings; the tied input embedding for the small LM)."""
        if self.model_cfg.tie_embeddings:
            return np.asarray(params["embed"][...], np.float64)
        return np.asarray(params["lm_head"][...], np.float64).T

    def run(self, step_fn, state, batch):
        """One batched step of every seed (``state`` and ``batch`` stacked); returns the losses ``[S]``."""
        state, m = step_fn(state, batch)
        if not (np.all(np.asarray(m["finite/loss"])) and np.all(np.asarray(m["finite/grads"]))):
            raise FloatingPointError(f"non-finite loss or gradient at step {int(state.step[0])}")
        return state, np.asarray(m["loss"], np.float64)

    def encode(self, rec: dict) -> tuple[list[int], list[int], list[int]]:
        t = self.tok
        return (t.encode(rec["prompt"], add_bos=True), t.encode(rec["chosen"], add_eos=True),
                t.encode(rec["rejected"], add_eos=True))

    def pair_batch(self, enc) -> dict:
        b = probe_batch([enc[0]], [enc[1]], [enc[2]], pad_id=self.tok.pad_id, max_length=self.cfg["seq_len"])
        return {k: b[k] for k in PAIR_FIELDS}

    def set_logps(self, params, encs) -> tuple[np.ndarray, np.ndarray]:
        """log π(y+|x), log π(y−|x) of encoded pairs, in fixed-size chunks (one compilation)."""
        n, c = len(encs), self.cfg["eval_chunk"]
        out = np.zeros((2, n))
        for s in range(0, n, c):
            chunk = list(encs[s:s + c])
            k = len(chunk)
            chunk += [chunk[0]] * (c - k)
            for j in (1, 2):
                pk = pack_prompt_response([e[0] for e in chunk], [e[j] for e in chunk], pad_id=self.tok.pad_id,
                                          max_length=self.cfg["seq_len"])
                lp = self.logps(params, pk["input_ids"], pk["response_mask"], pk["attention_mask"])
                out[j - 1, s:s + k] = np.asarray(lp, np.float64)[:k]
        return out[0], out[1]

    def scores(self, encs) -> dict[str, np.ndarray]:
        """CHES, length-normalised CHES, last-hidden inner product (one forward per side and chunk) and
        −edit distance of the responses (without EOS)."""
        n, c = len(encs), self.cfg["eval_chunk"]
        res = {k: np.zeros(n) for k in SCORES}
        for s in range(0, n, c):
            chunk = list(encs[s:s + c])
            k = len(chunk)
            chunk += [chunk[0]] * (c - k)
            pk = [pack_prompt_response([e[0] for e in chunk], [e[j] for e in chunk], pad_id=self.tok.pad_id,
                                       max_length=self.cfg["seq_len"]) for j in (1, 2)]
            hw, hl = (self.hidden(self.params0, p["input_ids"], p["attention_mask"]) for p in pk)
            mw, ml = pk[0]["predictor_mask"], pk[1]["predictor_mask"]
            res["ches"][s:s + k] = np.asarray(ches_scores(hw, hl, mw, ml), np.float64)[:k]
            res["ches_ln"][s:s + k] = np.asarray(ches_scores(hw, hl, mw, ml, length_normalized=True))[:k]
            res["last_hidden_ip"][s:s + k] = last_hidden_inner_product(
                hw, hl, pk[0]["attention_mask"], pk[1]["attention_mask"])[:k]
        res["neg_edit_distance"] = np.array([-edit_distance(e[1][:-1], e[2][:-1]) for e in encs], np.float64)
        return res

    def train_pairs(self, step_fn, tx, encs, steps: int, seed: int):
        """``steps`` updates of one pair each for every seed at once: seed ``s`` cycles through its own pairs
        ``encs[s]`` in the order of ``default_rng([seed, s])`` (a new permutation each epoch), all seeds from the
        pretrained model. Returns the stacked state and the losses ``[steps, S]``."""
        n = len(encs)
        st = self.seed_state(self.params0, tx, n, reference=True)
        batches = [[self.pair_batch(e) for e in es] for es in encs]
        rngs = [np.random.default_rng([seed, s]) for s in range(n)]
        orders: list[list[int]] = [[] for _ in range(n)]
        losses = []
        for _ in range(steps):
            picked = []
            for s in range(n):
                if not orders[s]:
                    orders[s] = list(rngs[s].permutation(len(batches[s])))
                picked.append(batches[s][orders[s].pop(0)])
            st, loss = self.run(step_fn, st, {k: np.stack([b[k] for b in picked]) for k in PAIR_FIELDS})
            losses.append(loss)
        return st, np.asarray(losses)


# ----------------------------------------------------------------------------------------------------------
# (1) single-token persona experiment


def _cand_name(i: int) -> str:
    i = int(i)
    return CANDIDATES[i].strip() if i < len(CANDIDATES) else PREFIXES[i - len(CANDIDATES)].strip() + "…"


def _sft_then_dpo(eng: _Engine, cfg: dict, pbs: list[dict]):
    """For every seed ``s`` (one prompt each, probe batch ``pbs[s]``), all seeds batched: SFT on (x, y+) for
    ``sft_steps``, then DPO on the single pair for ``dpo_steps`` with the SFT model as reference, probing at the
    first differing byte after every step.

    Returns one tuple ``(pre, W, probe, records, losses, d1)`` per seed: the pretrained model's probe values, the
    unembedding of the SFT model (:meth:`_Engine.unembedding`, the start of DPO), the probe, its records (steps
    0 … dpo_steps), the DPO losses and the change of the next-byte log-probs after the first DPO step.
    """
    from jalign.train.step import tree_index

    n = len(pbs)
    stack = lambda fields: {k: np.stack([pb[f] for pb in pbs]) for k, f in fields.items()}
    pair = stack({k: k for k in PAIR_FIELDS})
    sft = stack({"ids": "chosen_ids", "mask": "chosen_mask", "attention_mask": "chosen_attention_mask"})
    st = eng.seed_state(eng.params0, eng.tx_sft, n, reference=False)
    pre = [displacement_probe(pb, position="divergence").evaluate(eng.graphdef, tree_index(st, s))
           for s, pb in enumerate(pbs)]
    for _ in range(cfg["sft_steps"]):
        st, _ = eng.run(eng.sft_step, st, sft)
    st = eng.restart(st, eng.tx_dpo, reference=True)
    probes = [displacement_probe(pb, k=5, position="divergence") for pb in pbs]
    recs = [[p(0, eng.graphdef, tree_index(st, s))] for s, p in enumerate(probes)]
    W = [eng.unembedding(tree_index(st.params, s)) for s in range(n)]
    losses, d1 = [], [None] * n
    for t in range(1, cfg["dpo_steps"] + 1):
        st, loss = eng.run(eng.dpo_step, st, pair)
        losses.append(loss)
        for s, p in enumerate(probes):
            one = tree_index(st, s)
            recs[s].append(p(t, eng.graphdef, one))
            if t == 1:
                d1[s] = p.evaluate(eng.graphdef, one)["next"][0] - p.start["next"][0]
    losses = np.asarray(losses)
    return [(pre[s], W[s], probes[s], recs[s], losses[:, s].tolist(), d1[s]) for s in range(n)]


def _theorem5(W: np.ndarray, pb: dict, probe, d1) -> dict:
    """Theorem 5 at the first differing byte, on the SFT model's unembedding ``W``: the bytes a, b of y+ and y−
    there, the norms of W+ − W− parallel / orthogonal to W+, and the Spearman correlation of ⟨W_z, W+ − W−⟩
    with the change ``d1`` of ln π(z) after the first DPO step (over the other byte tokens z)."""
    tp = int(probe.positions[0])
    a, b = int(pb["chosen_ids"][0, tp + 1]), int(pb["rejected_ids"][0, tp + 1])
    par, orth = (float(v) for v in difference_components(W[a], W[b]))
    th5 = np.asarray(theorem5_scores(W, a, b))
    others = np.array([z for z in range(len(th5)) if z not in (a, b)])
    return {"a": a, "b": b, "parallel": par, "orthogonal": orth, "spearman": spearman(th5[others], d1[others])}


def _mass_flow(cand_lp: np.ndarray, s: int, t: int, yw: str, yl: str) -> dict:
    """Where the probability of y+ went between steps ``s`` and ``t``: the change of π(y+), π(y−), of the other
    positive / negative label words, of y+'s bytes continued without EOS, and the rest (elsewhere)."""
    nw = len(CANDIDATES)
    iw_, il_ = CANDIDATES.index(yw), CANDIDATES.index(yl)
    dp = np.exp(cand_lp[t]) - np.exp(cand_lp[s])
    pos = [i for i, c in enumerate(CANDIDATES) if c in POSITIVE and i not in (iw_, il_)]
    neg = [i for i, c in enumerate(CANDIDATES) if c not in POSITIVE and i not in (iw_, il_)]
    cont = dp[nw + PREFIXES.index(yw)] - dp[iw_]
    flow = {"chosen": float(dp[iw_]), "rejected": float(dp[il_]),
            "positive_words": float(dp[pos].sum()), "negative_words": float(dp[neg].sum()),
            "chosen_continued": float(cont)}
    flow["elsewhere"] = float(-sum(flow.values()))
    return flow


def _persona_batch(eng: _Engine, cfg: dict, rec: dict, cands: list) -> dict:
    """The probe batch of one persona run (one prompt, one pair y+ ≻ y−, the candidate words)."""
    enc = eng.encode(rec)
    return probe_batch([enc[0]], [enc[1]], [enc[2]], candidates=cands, pad_id=eng.tok.pad_id,
                       max_length=cfg["seq_len"])


def _single_token_run(eng: _Engine, rec: dict, pb: dict, out: tuple, seed: int) -> dict:
    """One run of the persona experiment (one prompt, one pair y+ ≻ y−) from its SFT + DPO outputs ``out`` (of
    :func:`_sft_then_dpo`): Theorem 5, the largest drop of π(y+) and where its mass went."""
    tok = eng.tok
    yw, yl = rec["chosen"], rec["rejected"]
    nw = len(CANDIDATES)
    pre, W, probe, recs, losses, d1 = out
    th5 = _theorem5(W, pb, probe, d1)
    p_w = np.exp([r["chosen_logps"][0] for r in recs])
    p_l = np.exp([r["rejected_logps"][0] for r in recs])
    cand_lp = np.array([r["candidate_logps"][0] for r in recs])  # [steps+1, C]
    drop_a, s_a, t_a = largest_drop(p_w)
    drop, s, t = float(drop_a), int(s_a), int(t_a)
    # the label words (other than y+ and y−) that gained most from the peak s to the trough t
    gi, gv = mass_gainers(cand_lp[s, :nw], cand_lp[t, :nw], 3,
                          exclude=[CANDIDATES.index(yw), CANDIDATES.index(yl)])
    last = recs[-1]
    return {
        "seed": seed, "statement": rec["prompt"].split('"')[1],
        "pretrained_chosen_prob": float(np.exp(pre["chosen"][0])),
        "chosen_prob": p_w.tolist(), "rejected_prob": p_l.tolist(), "loss": losses,
        "candidate_prob": np.exp(cand_lp).tolist(),
        "largest_drop": drop, "drop_from_step": s, "drop_to_step": t,
        "mass_flow_during_drop": _mass_flow(cand_lp, s, t, yw, yl),
        "divergence_bytes": [tok.decode([th5["a"]]), tok.decode([th5["b"]])],
        "w_diff_parallel": th5["parallel"], "w_diff_orthogonal": th5["orthogonal"],
        "theorem5_spearman_first_step": th5["spearman"],
        "gainers_during_drop": [CANDIDATES[i].strip() for i in np.asarray(gi)],
        "gains_during_drop": np.asarray(gv, np.float64).tolist(),
        "final_candidate_gainers": [_cand_name(i) for i in last["candidate_gainers"][0]],
        "final_byte_gainers": [tok.decode([int(i)]) if int(i) < 256 else f"<{int(i)}>"
                               for i in last["token_gainers"][0]],
        "final_byte_gains": [float(v) for v in last["token_gains"][0]],
    }


def _pair_summary(yw: str, yl: str, runs: list[dict]) -> dict:
    """The runs of one pair y+ ≻ y− and their means over prompts."""
    drops = [r["largest_drop"] for r in runs]
    return {
        "chosen": yw.strip(), "rejected": yl.strip(), "runs": runs,
        "mean_largest_drop": float(np.mean(drops)), "max_largest_drop": float(np.max(drops)),
        "mean_start_prob": float(np.mean([r["chosen_prob"][0] for r in runs])),
        "mean_final_prob": float(np.mean([r["chosen_prob"][-1] for r in runs])),
        "mean_final_rejected_prob": float(np.mean([r["rejected_prob"][-1] for r in runs])),
        "mean_theorem5_spearman": float(np.mean([r["theorem5_spearman_first_step"] for r in runs])),
        "mean_mass_flow_during_drop": {k: float(np.mean([r["mass_flow_during_drop"][k] for r in runs]))
                                       for k in FLOW},
    }


def _single_token(eng: _Engine, cfg: dict) -> dict:
    """The persona experiment: for each pair of :data:`PAIRS`, one run per seed (prompt; the seeds batched),
    summarised."""
    persona = builtin.load("persona_yesno")
    tok = eng.tok
    cands = [tok.encode(c, add_eos=True) for c in CANDIDATES] + [tok.encode(c) for c in PREFIXES]
    out = {}
    for yw, yl in PAIRS:
        endorsed = yw != " No"
        prompts = [r["prompt"] for r in persona if r["meta"]["endorsed"] == endorsed]
        recs = [{"prompt": prompts[seed], "chosen": yw, "rejected": yl} for seed in range(cfg["seeds"])]
        pbs = [_persona_batch(eng, cfg, r, cands) for r in recs]
        outs = _sft_then_dpo(eng, cfg, pbs)  # every prompt (seed) of this pair batched
        runs = [_single_token_run(eng, r, pb, o, seed) for seed, (r, pb, o) in enumerate(zip(recs, pbs, outs,
                                                                                               strict=True))]
        out[f"{yw.strip()}>{yl.strip()}"] = _pair_summary(yw, yl, runs)
    return out


# ----------------------------------------------------------------------------------------------------------
# (2) sample identification and (3) mitigation


def _sets(eng: _Engine, cfg: dict) -> tuple[dict, dict]:
    """Sample identification and mitigation, one seed per draw of the ``n_pairs`` preference pairs
    (``sentiment_pairs`` generated with data seed ``s``; seed 0 is the card's draw), every training run of all
    seeds batched. Per seed: the four scores, the percentile subsets of each and the change of log π(y+) after
    DPO on each subset; the four mitigation runs on the seed's own pairs."""
    from jalign.train.step import tree_index

    seeds = list(range(cfg["set_seeds"]))
    encs = [[eng.encode(r) for r in builtin.load("sentiment_pairs", n=cfg["n_pairs"], seed=s)] for s in seeds]
    sc = [eng.scores(e) for e in encs]
    base = [eng.set_logps(eng.params0, e) for e in encs]
    m, E = cfg["subset_size"], cfg["epochs"]
    cache: dict[tuple, list[dict]] = {}
    ident: dict = {"seeds": seeds, "scores": [{k: v.tolist() for k, v in x.items()} for x in sc]}
    for name in SCORES:
        subsets = [percentile_subsets(x[name], m, PERCENTILES) for x in sc]
        rows = []
        for q in PERCENTILES:
            idx = tuple(tuple(int(i) for i in sub[q]) for sub in subsets)  # per seed
            if idx not in cache:
                st, losses = eng.train_pairs(eng.dpo_step, eng.tx_dpo, [[encs[s][i] for i in idx[s]] for s in seeds],
                                             m * E, seed=0)
                cache[idx] = []
                for s in seeds:
                    w, l = eng.set_logps(tree_index(st.params, s), [encs[s][i] for i in idx[s]])
                    cache[idx].append({"chosen_change": float(np.mean(w - base[s][0][list(idx[s])])),
                                       "rejected_change": float(np.mean(l - base[s][1][list(idx[s])])),
                                       "final_loss": float(np.mean(losses[-m:, s]))})
            rows.append({"percentile": q, "indices": [list(x) for x in idx],
                         "mean_score": [float(np.mean(sc[s][name][list(idx[s])])) for s in seeds],
                         **{k: [c[k] for c in cache[idx]] for k in ("chosen_change", "rejected_change", "final_loss")}})
        rho = [spearman(PERCENTILES, [r["chosen_change"][s] for r in rows]) for s in seeds]
        ident[name] = {"subsets": rows, "spearman": rho}

    n = cfg["n_pairs"]
    keep = [[int(i) for i in np.sort(np.argsort(x["ches_ln"], kind="stable")[:max(1, int(np.ceil(
        cfg["filter_fraction"] * n - 1e-9)))])] for x in sc]
    rand = [[int(i) for i in np.sort(np.random.default_rng([0, s]).choice(n, len(keep[s]), replace=False))]
            for s in seeds]
    E = cfg["mitigation_epochs"]
    mit = {"seeds": seeds, "kept_indices": keep, "random_indices": rand, "epochs": E}
    full = [list(range(n)) for _ in seeds]
    for run, step_fn, idx in (("dpo", eng.dpo_step, full), ("dpo+sft", eng.rpo_step, full),
                              ("filtered", eng.dpo_step, keep), ("random subset", eng.dpo_step, rand)):
        st, losses = eng.train_pairs(step_fn, eng.tx_dpo, [[encs[s][i] for i in idx[s]] for s in seeds],
                                     E * len(idx[0]), seed=1)
        row = {"train_pairs": len(idx[0]), "mean_loss": np.mean(losses, axis=0).tolist()}
        for s in seeds:
            w, l = eng.set_logps(tree_index(st.params, s), encs[s])
            bw, bl = base[s]
            for k, v in (("chosen_change_all", np.mean(w - bw)), ("rejected_change_all", np.mean(l - bl)),
                         ("chosen_change_train", np.mean(w[idx[s]] - bw[idx[s]])),
                         ("rejected_change_train", np.mean(l[idx[s]] - bl[idx[s]]))):
                row.setdefault(k, []).append(float(v))
        mit[run] = row
    return ident, mit


# ----------------------------------------------------------------------------------------------------------
# claims


# The pass rules, fixed in code before the run. In the persona experiment a seed is a prompt (``seeds`` per
# pair); the Theorem 5 rows pool the runs of all pairs (each run is one (pair, prompt) instance of the
# theorem's statement). In the identification and mitigation experiments a seed is a draw of the preference
# pairs (``set_seeds`` data seeds) with its own training order; every rule is a 95% t-interval over the seeds.
LARGE_DROP = 0.1
RULES = {
    "drop": f"95% t-interval over the pair's prompts (seeds) of the largest drop of π(y+) between two DPO steps "
    f"lies above {LARGE_DROP}",
    "catastrophic": "95% t-interval over the No≻Never prompts of the share of the drop of π(y+) that went to the "
    "other positive label words lies above 0.5",
    "theorem5": "95% t-interval over every persona run (pairs × prompts) of Spearman(⟨W_z, W+ − W−⟩, Δ ln π(z)) "
    "lies above 0",
    "orthogonal": "95% t-interval over every persona run of ‖(W+ − W−)⊥W+‖ − ‖(W+ − W−)∥W+‖ lies above 0",
    "identification": "the 95% t-interval over seeds of Spearman(percentile, Δ log π(y+)) for CHES lies below "
    "−0.9, and those of −edit distance and of the last-hidden inner product lie above −0.9",
    "sft": "the 95% t-intervals over seeds of −Δ log π(y+) under DPO and of Δ log π(y+) under DPO + SFT (all "
    "pairs) lie above 0",
    "filtered": "the 95% t-interval over seeds of Δ log π(y+)[filtered] − max(DPO on all, random subset) on the "
    "training pairs lies above 0",
}


def _claim(claim: str, measured: str, status_ev, source: str = "paper") -> dict:
    from jalign.reporting import make_claim

    return make_claim(paper=PAPER, claim=claim, measured=measured, status=status_ev[0], evidence=status_ev[1],
                      source=source)


def _displacement_claims(st: dict) -> list[dict]:
    """Persona experiment: π(y+) drops under DPO on a single pair (judged per pair), and where its mass goes
    (No ≻ Never)."""
    from paper_repro._common import seeded

    claims = []
    for k, v in st.items():
        drops = [r["largest_drop"] for r in v["runs"]]
        s, ev, txt = seeded(drops, LARGE_DROP, above=True, rule=RULES["drop"])
        claims.append(_claim(
            f"DPO on a single preference pair can lower π(y+) (likelihood displacement): persona pair "
            f"{k.replace('>', '≻')} after SFT shows large drops of π(y+)",
            f"largest drop per prompt {', '.join(f'{d:.2f}' for d in drops)}: {txt}; π(y+) {v['mean_start_prob']:.2f} "
            f"→ {v['mean_final_prob']:.2f} at the end (mean)", (s, ev)))
    runs = st["No>Never"]["runs"]
    shares = [r["mass_flow_during_drop"]["positive_words"] / r["largest_drop"] if r["largest_drop"] > 0 else 0.0
              for r in runs]
    fl = st["No>Never"]["mean_mass_flow_during_drop"]
    drop = -fl["chosen"]
    share = {k: (fl[k] / drop if drop > 0 else 0.0) for k in FLOW if k != "chosen"}
    top = [r["gainers_during_drop"][0] for r in runs]
    small = max(abs(r["gains_during_drop"][0]) for r in runs) < 1e-3
    note = f" (top gaining other label word per run: {', '.join(top)}" + ("; every such gain < 1e-3)" if small else ")")
    s, ev, txt = seeded(shares, 0.5, above=True, rule=RULES["catastrophic"])
    claims.append(_claim(
        "Displacement can be catastrophic: in No≻Never the probability of 'No' moves to a word of the opposite "
        "meaning ('Yes')",
        "No≻Never, share of the mean drop of π(y+) that went to: " + ", ".join(
            f"{FLOW_LABELS[k]} {v:+.3f}" for k, v in share.items()) + note + f"; share to positive words {txt}",
        (s, ev)))
    return claims


def _theorem5_claims(st: dict) -> list[dict]:
    """Persona experiment: Theorem 5's ordering of the gaining tokens, and the orthogonal part of W+ − W−."""
    from paper_repro._common import seeded

    claims = []
    runs = [r for v in st.values() for r in v["runs"]]
    r5 = [r["theorem5_spearman_first_step"] for r in runs]
    s, ev, txt = seeded(r5, 0.0, above=True, rule=RULES["theorem5"])
    claims.append(_claim(
        "Theorem 5: which tokens gain is ordered by ⟨W_z, W+ − W−⟩ (here: next-byte log-prob change at the first "
        "byte where y+ and y− differ, first DPO step)",
        "Spearman(⟨W_z, W+ − W−⟩, Δ ln π(z)) over the other 257 byte tokens: " + ", ".join(
            f"{k} {v['mean_theorem5_spearman']:+.2f}" for k, v in st.items()) + f"; over the {len(runs)} runs {txt}",
        (s, ev)))
    diff = [r["w_diff_orthogonal"] - r["w_diff_parallel"] for r in runs]
    s, ev, txt = seeded(diff, 0.0, above=True, rule=RULES["orthogonal"])
    claims.append(_claim(
        "The component of W+ − W− orthogonal to W+ is the larger one",
        "first differing bytes: " + ", ".join(
            f"{k} '{v['runs'][0]['divergence_bytes'][0]}' vs '{v['runs'][0]['divergence_bytes'][1]}' "
            f"{v['runs'][0]['w_diff_orthogonal']:.2f} vs {v['runs'][0]['w_diff_parallel']:.2f}" for k, v in st.items())
        + f"; orthogonal − parallel over the {len(runs)} runs {txt}", (s, ev)))
    return claims


def _identification_claims(ident: dict) -> list[dict]:
    """Sample identification: CHES orders the drop of the preferred log-prob; the other scores do not."""
    from paper_repro._common import combine, seeded

    rho = {k: np.asarray(ident[k]["spearman"], np.float64) for k in SCORES}
    txt = ", ".join(f"{SCORE_LABELS[k]} {rho[k].mean():+.2f}" for k in SCORES)
    rule = RULES["identification"]
    s, ev, one = combine([("CHES", seeded(rho["ches"], -0.9, above=False, rule=rule))]
                         + [(SCORE_LABELS[k], seeded(rho[k], -0.9, above=True, rule=rule))
                            for k in ("neg_edit_distance", "last_hidden_ip")])
    return [_claim(
        "Ranking pairs by CHES orders the drop of the preferred log-prob across the 0/25/50/75/100th percentile "
        "subsets perfectly; edit distance and last-hidden inner product do not",
        f"Spearman(percentile, mean Δ log π(y+)), seed means — {txt} (−1 = perfect); most negative: "
        f"{SCORE_LABELS[min(SCORES, key=lambda k: rho[k].mean())]}; {one}", (s, ev))]


def _mitigation_claims(mit: dict) -> list[dict]:
    """Mitigation: DPO + SFT and CHES filtering against DPO on all pairs (and a random subset)."""
    from paper_repro._common import seeded, seeded_all

    claims = []
    a = {r: {k: np.asarray(v, np.float64) for k, v in mit[r].items() if isinstance(v, list)} for r in RUNS3}
    d, sft, f, r = a["dpo"], a["dpo+sft"], a["filtered"], a["random subset"]
    mean = lambda x: f"{float(np.mean(x)):+.2f}"
    s, ev, one = seeded_all([("−Δ(DPO)", -d["chosen_change_all"]), ("Δ(DPO + SFT)", sft["chosen_change_all"])],
                            0.0, above=True, rule=RULES["sft"])
    claims.append(_claim(
        "DPO lowers the preferred log-prob on a preference set; adding an SFT term (DPO + SFT) raises it",
        f"mean Δ log π(y+) over all pairs (seed means): DPO {mean(d['chosen_change_all'])}, DPO+SFT "
        f"{mean(sft['chosen_change_all'])} (Δ log π(y−): {mean(d['rejected_change_all'])}, "
        f"{mean(sft['rejected_change_all'])}); {one}", (s, ev)))
    gap = f["chosen_change_train"] - np.maximum(d["chosen_change_train"], r["chosen_change_train"])
    s, ev, one = seeded(gap, 0.0, above=True, rule=RULES["filtered"])
    ft, dt = mit["filtered"]["train_pairs"], mit["dpo"]["train_pairs"]
    claims.append(_claim(
        "Training only on the lowest length-normalised-CHES pairs mitigates the drop of the preferred log-prob "
        "(less negative than DPO on all pairs, and than a random subset of the same size)",
        f"kept {ft}/{dt} pairs, {mit['epochs']} epoch(s) each (so {ft} against {dt} updates); Δ log π(y+) on the "
        f"training pairs (seed means): filtered {mean(f['chosen_change_train'])}, DPO on all "
        f"{mean(d['chosen_change_train'])}, random subset {mean(r['chosen_change_train'])}; on all pairs: "
        f"{mean(f['chosen_change_all'])}, {mean(d['chosen_change_all'])}, {mean(r['chosen_change_all'])}; "
        f"filtered − max(all, random) {one}", (s, ev)))
    return claims


def claims(res: dict) -> list[dict]:
    """Every claim with its evidence, from the saved results (rules: :data:`RULES`), in order:
    displacement, Theorem 5, identification, mitigation, and the billion-parameter unalignment result (not
    reproducible here)."""
    from paper_repro._common import not_here

    st, ident, mit = res["single_token"], res["identification"], res["mitigation"]
    out = (_displacement_claims(st) + _theorem5_claims(st) + _identification_claims(ident)
           + _mitigation_claims(mit))
    out.append(_claim(
        "Unalignment: DPO on refusal data lowers refusal rates (Gemma-2B-IT 80.5%→54.8%, Llama-3-8B-Instruct "
        "74.4%→33.4%) and CHES filtering mitigates it",
        "needs SORRY-Bench and instruction-tuned billion-parameter models (gated weights, GPUs); the small byte LM "
        "cannot refuse", not_here("needs SORRY-Bench and billion-parameter instruction-tuned models")))
    return out


# ----------------------------------------------------------------------------------------------------------
# figures


def _plot_single_token(res: dict):
    """Persona experiment: π(y+), π(y−) and the other label words along DPO per pair, and where y+'s mass went."""
    import matplotlib.pyplot as plt

    st = res["single_token"]
    fig, axes = plt.subplots(1, len(st) + 1, figsize=(4.2 * (len(st) + 1), 3.8))
    for ax, (k, v) in zip(axes, st.items(), strict=False):
        for i, r in enumerate(v["runs"]):
            steps = np.arange(len(r["chosen_prob"]))
            ax.plot(steps, r["chosen_prob"], color="C0", alpha=0.6, label="π(y+)" if i == 0 else None)
            ax.plot(steps, r["rejected_prob"], color="C1", ls="--", alpha=0.6, label="π(y−)" if i == 0 else None)
            cp = np.asarray(r["candidate_prob"])
            other = [j for j, c in enumerate(CANDIDATES) if c.strip() not in (v["chosen"], v["rejected"])]
            ax.plot(steps, cp[:, other].sum(-1), color="C2", ls=":", alpha=0.6,
                    label="other label words" if i == 0 else None)
        ax.set(xlabel="DPO step (after SFT)", ylabel="probability", title=f"{k}: mean largest drop "
               f"{v['mean_largest_drop']:.2f}", ylim=(-0.02, 1.02))
        ax.legend(fontsize=7)
    ax = axes[-1]
    x = np.arange(len(FLOW))
    w = 0.8 / len(st)
    for i, (k, v) in enumerate(st.items()):
        fl = v["mean_mass_flow_during_drop"]
        ax.bar(x + (i - (len(st) - 1) / 2) * w, [fl[f] for f in FLOW], w, label=k)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, [FLOW_LABELS[f] for f in FLOW], rotation=35, ha="right", fontsize=8)
    ax.set(ylabel="mean Δπ over the largest drop", title="where the mass of y+ goes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _mean_half(values) -> tuple[np.ndarray, np.ndarray]:
    """Seed means and 95% t half-widths of ``values`` ``[..., S]`` (half-width 0 with one seed)."""
    from jalign.reporting import t_interval

    v = np.asarray(values, np.float64)
    flat = v.reshape(-1, v.shape[-1])
    iv = np.array([t_interval(x) for x in flat])
    half = np.nan_to_num(iv[:, 2] - iv[:, 0])
    return iv[:, 0].reshape(v.shape[:-1]), half.reshape(v.shape[:-1])


def _plot_identification_mitigation(res: dict):
    """Δ log π(y+) against the percentile of each similarity score, and the mitigation runs (seed means, error
    bars: 95% t-intervals over the seeds)."""
    import matplotlib.pyplot as plt

    ident, mit = res["identification"], res["mitigation"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for k in SCORES:
        rows = ident[k]["subsets"]
        y, h = _mean_half([r["chosen_change"] for r in rows])
        ax.errorbar([r["percentile"] for r in rows], y, yerr=h, marker="o", capsize=3,
                    label=f"{SCORE_LABELS[k]} (ρ={np.mean(ident[k]['spearman']):+.2f})")
    ax.set(xlabel="percentile of the similarity score", ylabel="mean Δ log π(y+) after DPO",
           title=f"sample identification ({len(ident['seeds'])} seeds)")
    ax.legend(fontsize=7)
    ax = axes[1]
    x = np.arange(len(RUNS3))
    for dx, key, label, alpha in ((-0.2, "chosen_change_train", "Δ log π(y+) (training pairs)", 1.0),
                                  (0.2, "chosen_change_all", "Δ log π(y+) (all pairs)", 0.6)):
        y, h = _mean_half([mit[r][key] for r in RUNS3])
        ax.bar(x + dx, y, 0.4, yerr=h, capsize=3, label=label, alpha=alpha)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, [f"{r}\n({mit[r]['train_pairs']} pairs)" for r in RUNS3])
    ax.set(ylabel="mean change", title=f"mitigation ({len(mit['seeds'])} seeds)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


FIGURES = (("ches_single_token", _plot_single_token),
           ("ches_identification_mitigation", _plot_identification_mitigation))


def run(out: Path, *, quick: bool = True, medium: bool = False) -> dict:
    """Run the three experiments, write ``out/results.json`` and the figures, return the results (``medium``:
    :func:`settings` with ``medium=True``)."""
    out = output_dir(out)
    t0 = time.time()
    cfg = settings(quick, medium)
    eng = _Engine(cfg)
    res: dict = {"settings": cfg, "quick": quick and not medium, "candidates": [c.strip() for c in CANDIDATES]}
    if medium:
        res["size"] = "medium"
    res["single_token"] = _single_token(eng, cfg)
    print(f"ches: single-token experiment done after {time.time() - t0:.0f} s", flush=True)
    res["identification"], res["mitigation"] = _sets(eng, cfg)
    print(f"ches: sample identification and mitigation done after {time.time() - t0:.0f} s", flush=True)
    res["claims"] = claims(res)
    return finish(out, res, plot_from_results, t0=t0)


def plot_from_results(out: Path) -> list[str]:
    """Redraw every figure from ``out/results.json`` (the figures are never edited by hand)."""
    return draw_figures(Path(out), read_results(out), FIGURES)
