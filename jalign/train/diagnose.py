"""Every diagnostic of one (policy, reference, preference file) triple — the computation behind ``jalign diagnose``.

Given a policy π and a reference π_ref (Hugging Face-format directories, or ``small_lm`` for the shipped model;
the reference defaults to the policy) and a preference file in any layout :func:`jalign.data.readers.read`
accepts, :func:`diagnose` computes per pair

* the summed response log-probs ln π(y|x) and ln π_ref(y|x) and the response lengths |y| (the trainer's
  :func:`jalign.train.step.make_logps_fn`, ``[BOS] prompt response [EOS]`` with the response mask on the
  response and EOS);
* ranking accuracy, summed and length-normalised, of the policy and of the reference
  (:func:`jalign.diagnostics.ranking_accuracy`, Chen et al., 2024), and the idealised ranking accuracy
  (:func:`jalign.diagnostics.idealized_ranking_accuracy`) where a preference probability p is known: a
  ``pref_prob`` field of the record (top level or in ``meta``), else p = σ(score_chosen − score_rejected)
  from the record's scores;
* the pairs the reference misranks (ln π_ref(y_w) ≤ ln π_ref(y_l)) and the DPO loss each must fall below
  before it flips (:func:`jalign.diagnostics.dpo_loss_at_flip`);
* the log-prob changes ln π(y) − ln π_ref(y) of chosen and rejected responses (likelihood displacement: how
  many pairs lost chosen mass);
* CHES and length-normalised CHES of the pair under the reference (:func:`jalign.diagnostics.ches_scores`,
  Razin et al., 2025) and the ranking of the pairs by them;
* on a sample of pairs, the gradient-entanglement statistics at the policy
  (:func:`jalign.diagnostics.pairwise_gradient_stats`) and, for every registered pairwise margin loss, the
  weights a, b (:func:`jalign.diagnostics.loss_weights`) and the condition and case labels
  (:func:`jalign.diagnostics.entanglement_condition`; Yuan et al., 2025).

:func:`write_outputs` writes ``results.json``, ``report.md``, ``report.html`` and two PNG plots. Bad input
raises :class:`DiagnoseError`, a ``ValueError`` whose message is one line naming the file (and line).
"""

from __future__ import annotations

import functools
import html
import json
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jalign import diagnostics as dg
from jalign import losses
from jalign.data import readers
from jalign.data.schema import RecordError
from jalign.errors import UserError
from jalign.train.batch import SEQ, SIDES
from jalign.train.step import ExampleLogp, make_logps_fn, split_model

__all__ = ["DEFAULT_ENTANGLEMENT_LOSSES", "DiagnoseError", "diagnose", "encode_pairs", "entanglement_losses", "load_model", "load_pairs",
           "write_outputs"]

#: The margin losses always reported first in the entanglement table (all registered ones follow).
DEFAULT_ENTANGLEMENT_LOSSES = ("sigmoid", "ipo", "simpo")
#: p is clipped into [P_CLIP, 1 − P_CLIP] (a unanimous or saturated p would make logit(p) infinite).
P_CLIP = 1e-6
SMALL_LM = "small_lm"


class DiagnoseError(ValueError):
    """Bad input to :func:`diagnose`; the message is one line naming the file (and line where there is one)."""


# ----------------------------------------------------------------------------------------------------------
# Inputs: models, tokenizer, pairs.


def _json_key_line(path: Path, key: str) -> int:
    """1-based line of ``"key"`` in a JSON file (1 if not found)."""
    try:
        for i, ln in enumerate(path.read_text().splitlines(), start=1):
            if f'"{key}"' in ln:
                return i
    except OSError:
        pass
    return 1


def load_model(spec: str):
    """``(model, source)``: ``small_lm`` (the shipped model) or a Hugging Face-format directory.

    ``source`` is the ``config.json`` path the model came from (used in messages).
    """
    from jalign.models import checkpoints, load_pretrained, load_small_lm

    if spec == SMALL_LM:
        return load_small_lm(), checkpoints.SMALL_LM_DIR / "config.json"
    path = Path(spec)
    if not path.is_dir():
        raise DiagnoseError(f"{path}: no such model directory (give a Hugging Face-format directory or "
                            f"'{SMALL_LM}')")
    try:
        return load_pretrained(path), path / "config.json"
    except (FileNotFoundError, ValueError, KeyError) as e:
        first = str(e).splitlines()[0]
        raise DiagnoseError(f"{path}: cannot load the model: {first}") from None


def check_vocabularies(policy, policy_src: Path, reference, reference_src: Path) -> None:
    """``DiagnoseError`` when policy and reference have different vocabulary sizes."""
    vp, vr = policy.cfg.vocab_size, reference.cfg.vocab_size
    if vp != vr:
        raise DiagnoseError(
            f"{reference_src}:{_json_key_line(reference_src, 'vocab_size')}: vocabulary mismatch: the reference "
            f"has vocab_size={vr}, the policy ({policy_src}:{_json_key_line(policy_src, 'vocab_size')}) has "
            f"vocab_size={vp}; policy and reference must share one tokenizer")


def resolve_tokenizer(spec: str | None, policy_spec: str):
    """``(tokenizer, description)``: ``byte``, a ``tokenizer.json`` path / directory, or (``None``) the
    policy directory's ``tokenizer.json`` if it has one, else the byte tokenizer."""
    from jalign.tokenizers import ByteTokenizer, load_tokenizer

    if spec is None:
        cand = Path(policy_spec) / "tokenizer.json"
        if policy_spec != SMALL_LM and cand.exists():
            spec = str(cand)
        else:
            return ByteTokenizer(), "byte"
    try:
        return load_tokenizer(spec), spec
    except (FileNotFoundError, ValueError, OSError) as e:
        raise DiagnoseError(f"{spec}: cannot load the tokenizer: {str(e).splitlines()[0]}") from None


def _pref_prob(raw: Any, rec: dict, where: str) -> tuple[float | None, str | None]:
    """``(p, source)`` of one pair: an explicit ``pref_prob`` (record or ``meta``), else σ(score difference)."""
    p = None
    if isinstance(raw, dict):
        p = raw.get("pref_prob")
        if p is None and isinstance(raw.get("meta"), dict):
            p = raw["meta"].get("pref_prob")
    if p is None and isinstance(rec.get("meta"), dict):
        p = rec["meta"].get("pref_prob")
    if p is not None:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0.0 <= float(p) <= 1.0):
            raise DiagnoseError(f"{where}: field 'pref_prob' must be a number in [0, 1], got {p!r}")
        return float(p), "pref_prob"
    if "score_chosen" in rec and "score_rejected" in rec:
        d = float(rec["score_chosen"]) - float(rec["score_rejected"])
        return float(0.5 * (1.0 + math.tanh(0.5 * d))), "scores"  # σ(d) without overflow
    return None, None


def load_pairs(path: str | Path, *, format: str | None = None, max_pairs: int | None = None,
               skip_invalid: bool = False) -> tuple[list[dict], dict]:
    """Preference pairs of a data file: ``([{"line", "prompt", "chosen", "rejected", "pref_prob",
    "pref_source"}], info)``.

    Pairwise layouts give their pairs; listwise layouts (and OpenAssistant trees) every strictly ordered pair
    (with the listwise scores as scores). Unpaired and scored layouts are refused.
    """
    path = Path(path)
    if not path.exists():
        raise DiagnoseError(f"{path}: no such data file")
    if not path.is_file():
        raise DiagnoseError(f"{path}: not a file")
    raw = {}
    try:
        for line, obj in readers.iter_raw(path):
            raw[line] = obj
    except UserError as e:  # an empty file, say: the message names the file
        raise DiagnoseError(str(e).splitlines()[0]) from None
    except Exception as e:  # an unreadable Parquet file, say
        raise DiagnoseError(f"{path}: cannot read the data file: {str(e).splitlines()[0]}") from None
    if not raw:
        raise DiagnoseError(f"{path}: empty data file (no records)")
    try:
        fmt = readers.canonical_format(format) if format else readers.detect_format(path)
        kind = readers.FORMATS[fmt][0]
        if kind not in ("pairwise", "listwise"):
            raise DiagnoseError(f"{path}: format {fmt!r} holds {kind} records; jalign diagnose needs preference "
                                "pairs (pairwise, hh, ultrafeedback, listwise or oasst layouts)")
        want = "pairwise" if fmt == "oasst" else kind
        recs, report = readers.read_with_lines(path, format=fmt, kind=want)
    except DiagnoseError:
        raise
    except ValueError as e:
        raise DiagnoseError(f"{path}: {str(e).splitlines()[0]}") from None
    if report.errors and not skip_invalid:
        err: RecordError = report.errors[0]
        more = f" (and {len(report.errors) - 1} more invalid records)" if len(report.errors) > 1 else ""
        raise DiagnoseError(f"{err}{more}; list them with `jalign data inspect {path}`, or pass --skip-invalid")
    pairs: list[dict] = []
    for line, rec in recs:
        sub = readers.listwise_to_pairwise([rec]) if kind == "listwise" and fmt != "oasst" else [rec]
        # Ranks alone (OpenAssistant trees, listwise records without scores) give no preference probability.
        ranks_only = fmt == "oasst" or (kind == "listwise" and not (isinstance(raw.get(line), dict)
                                                                    and raw[line].get("scores") is not None))
        for r in sub:
            if ranks_only:
                r = {k: v for k, v in r.items() if k not in ("score_chosen", "score_rejected")}
            p, src = _pref_prob(raw.get(line) if fmt != "oasst" else None, r, f"{path}:{line}")
            pairs.append({"line": line, "prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
                          "pref_prob": p, "pref_source": src})
    if not pairs:
        raise DiagnoseError(f"{path}: no preference pairs (empty data file, or only ties)")
    total = len(pairs)
    if max_pairs is not None:
        pairs = pairs[:max_pairs]
    info = {"path": str(path), "format": fmt, "kind": kind, "pairs_in_file": total, "pairs_used": len(pairs),
            "invalid_skipped": len(report.errors)}
    return pairs, info


def encode_pairs(pairs: list[dict], tokenizer, *, context: int, vocab_size: int, path: str) -> dict[str, np.ndarray]:
    """The trainer's right-padded pairwise layout (``chosen_ids``/``_mask``/``_attention_mask`` etc., ``[N, T]``)
    with T the longest sequence, plus ``prompt_lengths [N]``.

    Raises :class:`DiagnoseError` naming ``path:line`` for a pair longer than ``context`` tokens or a token id
    outside the model's vocabulary.
    """
    seqs = {s: [] for s in SIDES}
    prompt_lens = []
    for pr in pairs:
        plen = None
        for s in SIDES:
            ids, mask = tokenizer.encode_pair(pr["prompt"], pr[s])
            if len(ids) > context:
                raise DiagnoseError(
                    f"{path}:{pr['line']}: pair longer than the model's context: prompt + {s} is {len(ids)} "
                    f"tokens > {context} (max_seq_len)")
            bad = [i for i in ids if not 0 <= i < vocab_size]
            if bad:
                raise DiagnoseError(f"{path}:{pr['line']}: token id {bad[0]} is outside the model's vocabulary "
                                    f"[0, {vocab_size}) (tokenizer and model do not match)")
            seqs[s].append((ids, mask))
            plen = mask.index(1) if 1 in mask else len(mask)
        prompt_lens.append(plen)
    T = max(len(ids) for s in SIDES for ids, _ in seqs[s])
    pad = int(getattr(tokenizer, "pad_id", 0) or 0)
    out: dict[str, np.ndarray] = {}
    for s in SIDES:
        n = len(seqs[s])
        ids_a = np.full((n, T), pad, np.int32)
        m_a = np.zeros((n, T), np.int32)
        att = np.zeros((n, T), np.int32)
        for i, (ids, mask) in enumerate(seqs[s]):
            ids_a[i, :len(ids)], m_a[i, :len(ids)], att[i, :len(ids)] = ids, mask, 1
        out[f"{s}_ids"], out[f"{s}_mask"], out[f"{s}_attention_mask"] = ids_a, m_a, att
    out["prompt_lengths"] = np.asarray(prompt_lens, np.int32)
    return out


# ----------------------------------------------------------------------------------------------------------
# Model passes.


@functools.partial(jax.jit, static_argnums=(0, 4))
def _sequence_pass(graphdef, params, model_state, batch, with_hidden: bool):
    """Summed response log-probs and lengths of both sides; with ``with_hidden`` also CHES and CHES-LN."""
    lp = make_logps_fn(graphdef, params, model_state)
    out, hid, pred = {}, {}, {}
    for s in SIDES:
        ids, mask, att = (batch[f"{s}_{f}"] for f in SEQ)
        w, n = lp(ids, mask, att)
        out[f"{s}_logps"], out[f"{s}_lengths"] = w.astype(jnp.float32), n.astype(jnp.float32)
        if with_hidden:
            res = nnx.merge(graphdef, params, model_state)(ids, att, return_hidden=True)
            hid[s] = res.hidden_states
            # CHES positions: those predicting a response token (last prompt token .. penultimate response token).
            pred[s] = jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1)
    if with_hidden:
        out["ches"] = dg.ches_scores(hid["chosen"], hid["rejected"], pred["chosen"], pred["rejected"])
        out["ches_ln"] = dg.ches_scores(hid["chosen"], hid["rejected"], pred["chosen"], pred["rejected"],
                                        length_normalized=True)
    return out


def sequence_stats(model, batch: dict[str, np.ndarray], *, batch_size: int = 16, with_hidden: bool = False,
                   progress: bool = True, desc: str = "log-probs") -> dict[str, np.ndarray]:
    """Per-pair ``chosen_logps``, ``rejected_logps``, ``chosen_lengths``, ``rejected_lengths`` (and ``ches``,
    ``ches_ln`` with ``with_hidden``) of a whole encoded data set, float64 numpy ``[N]``.

    Batches of ``batch_size`` (the last one padded with copies of its first row, then trimmed: one
    compilation), under a tqdm progress bar.
    """
    from tqdm.auto import tqdm

    graphdef, params, rest = split_model(model)
    fields = [f"{s}_{f}" for s in SIDES for f in SEQ]
    n = batch["chosen_ids"].shape[0]
    bs = max(1, min(batch_size, n))
    acc: dict[str, list] = {}
    starts = range(0, n, bs)
    for s in tqdm(starts, desc=desc, total=len(starts), disable=not progress, leave=False):
        idx = np.arange(s, min(s + bs, n))
        k = len(idx)
        idx = np.concatenate([idx, np.full(bs - k, idx[0])])
        chunk = {f: jnp.asarray(batch[f][idx]) for f in fields}
        out = _sequence_pass(graphdef, params, rest, chunk, with_hidden)
        for key, v in out.items():
            acc.setdefault(key, []).append(np.asarray(v, np.float64)[:k])
    res = {k: np.concatenate(v) for k, v in acc.items()}
    for k in ("chosen_logps", "rejected_logps"):
        bad = ~np.isfinite(res[k])
        if bad.any():
            raise DiagnoseError(f"non-finite {k.split('_')[0]} log-prob at pair {int(np.argmax(bad))} ({desc})")
    return res


def entanglement_losses(spec: str | None) -> list[str]:
    """Canonical loss names from ``None`` (:data:`DEFAULT_ENTANGLEMENT_LOSSES`), ``"all"`` (every registered
    pairwise margin loss) or a comma-separated list of names / aliases."""
    if spec is None:
        return list(DEFAULT_ENTANGLEMENT_LOSSES)
    margin = dg.pairwise_margin_losses()
    if spec.strip() == "all":
        return [n for n in DEFAULT_ENTANGLEMENT_LOSSES if n in margin] + [
            n for n in margin if n not in DEFAULT_ENTANGLEMENT_LOSSES]
    out = []
    for name in (x.strip() for x in spec.split(",") if x.strip()):
        try:
            canon = losses.spec(name).name
        except KeyError as e:
            raise DiagnoseError(f"--entanglement-losses: {e.args[0]}") from None
        if canon not in margin:
            raise DiagnoseError(f"--entanglement-losses: {name!r} is not a pairwise margin loss; valid: "
                                f"{', '.join(margin)} (or 'all')")
        if canon not in out:
            out.append(canon)
    if not out:
        raise DiagnoseError(f"--entanglement-losses: no loss named in {spec!r}")
    return out


def entanglement(model, batch: dict[str, np.ndarray], idx: np.ndarray, ref: dict[str, np.ndarray], *, beta: float,
                 loss_names: list[str] | None = None, chunk: int = 4, progress: bool = False) -> dict[str, Any]:
    """Gradient entanglement at the policy on the pairs ``idx``: per-pair statistics and, for each loss of
    ``loss_names`` (default :data:`DEFAULT_ENTANGLEMENT_LOSSES`), a, b, the condition and the case labels
    (``beta`` replaces β of the losses that use a reference). Gradients are taken ``chunk`` pairs at a time
    (peak memory ≈ 2·chunk gradient copies), under a progress bar with ``progress``."""
    from tqdm.auto import tqdm

    graphdef, params, rest = split_model(model)
    lm = ExampleLogp(graphdef, rest)
    T = int(max(batch[f"{s}_attention_mask"][idx].sum(-1).max() for s in SIDES))
    k = max(1, min(chunk, len(idx)))
    parts = []
    starts = range(0, len(idx), k)
    for s0 in tqdm(starts, desc="entanglement", total=len(starts), disable=not progress, leave=False):
        rows = idx[s0:s0 + k]
        n_real = len(rows)
        rows = np.concatenate([rows, np.full(k - n_real, rows[0])])  # same shape every chunk: one compilation
        side = {s: {f: jnp.asarray(batch[f"{s}_{f}"][rows, :T]) for f in SEQ} for s in SIDES}
        part = dg.pairwise_gradient_stats(lm.logp, params, side["chosen"], side["rejected"])
        parts.append(jax.tree.map(lambda x, n_real=n_real: x[:n_real], part))
    stats = jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
    st = {k_: np.asarray(v, np.float64) for k_, v in stats.as_dict().items()}
    lengths = {s: np.asarray(batch[f"{s}_mask"][idx, 1:].sum(-1), np.float32) for s in SIDES}
    pb = losses.PairwiseLogps(jnp.asarray(st["chosen_logps"], jnp.float32),
                              jnp.asarray(st["rejected_logps"], jnp.float32),
                              jnp.asarray(ref["chosen_logps"][idx], jnp.float32),
                              jnp.asarray(ref["rejected_logps"][idx], jnp.float32),
                              jnp.asarray(lengths["chosen"]), jnp.asarray(lengths["rejected"]))
    per_loss, skipped = {}, {}
    for name in loss_names or DEFAULT_ENTANGLEMENT_LOSSES:
        spec = losses.spec(name)
        hp = {"beta": beta} if spec.needs_reference and "beta" in spec.hparams else {}
        try:
            a, b = dg.loss_weights(name, pb, **hp)
            cond = dg.entanglement_condition(stats, a, b)
        except (ValueError, TypeError, KeyError) as e:
            skipped[name] = str(e).splitlines()[0]
            continue
        case = np.asarray(cond["case"])
        per_loss[name] = {
            "hparams": {**spec.hparams, **hp},
            "a": np.asarray(a, np.float64), "b": np.asarray(b, np.float64), "case": case,
            "case_names": dg.case_names(case),
            "chosen_rises": np.asarray(cond["chosen_rises"]), "rejected_falls": np.asarray(cond["rejected_falls"]),
            "case_fractions": {c: float(np.mean(case == i)) for i, c in enumerate(dg.CASES)},
            "frac_chosen_rises": float(np.mean(np.asarray(cond["chosen_rises"]))),
            "frac_rejected_falls": float(np.mean(np.asarray(cond["rejected_falls"]))),
        }
    return {"pairs": np.asarray(idx), "stats": st, "losses": per_loss, "skipped": skipped}


# ----------------------------------------------------------------------------------------------------------
# The whole diagnosis.


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3:
        return None
    rx = np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(np.float64)
    ry = np.argsort(np.argsort(y, kind="stable"), kind="stable").astype(np.float64)
    rx -= rx.mean()
    ry -= ry.mean()
    den = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry / den) if den > 0 else None


def _auc(score: np.ndarray, label: np.ndarray) -> float | None:
    """P(score of a positive > score of a negative) + ½ P(tie); None without both classes."""
    pos, neg = score[label], score[~label]
    if len(pos) == 0 or len(neg) == 0:
        return None
    gt = (pos[:, None] > neg[None, :]).mean()
    eq = (pos[:, None] == neg[None, :]).mean()
    return float(gt + 0.5 * eq)


def diagnose(policy: str, data: str | Path, *, reference: str | None = None, beta: float = 0.1,
             max_pairs: int | None = None, tokenizer: str | None = None, format: str | None = None,
             batch_size: int = 16, entanglement_pairs: int = 16, entanglement_loss_names: str | None = None,
             seed: int = 0, skip_invalid: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run every diagnostic (module docstring) and return the results (numpy arrays in ``pairs`` and
    ``entanglement``; :func:`write_outputs` turns them into files).

    Raises:
      DiagnoseError: missing / unloadable models, mismatched vocabularies, an empty or invalid data file, a
        pair longer than the model's context (naming file and line), bad arguments.
    """
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise DiagnoseError(f"--beta must be a finite number > 0, got {beta!r}")
    if max_pairs is not None and max_pairs < 1:
        raise DiagnoseError(f"--max-pairs must be >= 1, got {max_pairs}")
    if batch_size < 1:
        raise DiagnoseError(f"--batch-size must be >= 1, got {batch_size}")
    if entanglement_pairs < 0:
        raise DiagnoseError(f"--entanglement-pairs must be >= 0, got {entanglement_pairs}")
    loss_names = entanglement_losses(entanglement_loss_names)
    notes: list[str] = []
    pol, pol_src = load_model(policy)
    if reference is None:
        ref_model, ref_src = pol, pol_src
        notes.append("No --reference: the reference is the policy, so every log-prob change is 0.")
    else:
        ref_model, ref_src = load_model(reference)
        check_vocabularies(pol, pol_src, ref_model, ref_src)
    tok, tok_desc = resolve_tokenizer(tokenizer, policy)
    V = pol.cfg.vocab_size
    if tok.vocab_size > V:
        raise DiagnoseError(f"{pol_src}:{_json_key_line(pol_src, 'vocab_size')}: vocabulary mismatch: the "
                            f"tokenizer ({tok_desc}) has {tok.vocab_size} tokens, the model vocab_size={V}")
    for name in ("bos_id", "eos_id"):
        mid, tid = getattr(pol.cfg, name), getattr(tok, name, None)
        if mid is not None and tid is not None and mid != tid:
            notes.append(f"The tokenizer's {name[:3].upper()} id ({tid}) differs from the model config's ({mid}).")
    pairs, info = load_pairs(data, format=format, max_pairs=max_pairs, skip_invalid=skip_invalid)
    if info["invalid_skipped"]:
        notes.append(f"{info['invalid_skipped']} invalid record(s) skipped (--skip-invalid).")
    if info["pairs_used"] < info["pairs_in_file"]:
        notes.append(f"Only the first {info['pairs_used']} of {info['pairs_in_file']} pairs (--max-pairs).")
    context = min(pol.cfg.max_seq_len, ref_model.cfg.max_seq_len)
    batch = encode_pairs(pairs, tok, context=context, vocab_size=V, path=info["path"])
    n = len(pairs)

    ches_ok = bool(np.all(batch["prompt_lengths"] > 0))
    pol_st = sequence_stats(pol, batch, batch_size=batch_size, with_hidden=ches_ok and reference is None,
                            progress=progress, desc="policy")
    if reference is None:
        ref_st = pol_st
    else:
        ref_st = sequence_stats(ref_model, batch, batch_size=batch_size, with_hidden=ches_ok, progress=progress,
                                desc="reference")
    if not ches_ok:
        notes.append("CHES omitted: some prompt tokenises to no tokens (CHES needs the last prompt token).")

    w, l_ = pol_st["chosen_logps"], pol_st["rejected_logps"]
    rw, rl = ref_st["chosen_logps"], ref_st["rejected_logps"]
    nw, nl = pol_st["chosen_lengths"], pol_st["rejected_lengths"]

    def acc(a, b):
        return {"summed": float(dg.ranking_accuracy(a, b)),
                "length_normalized": float(dg.ranking_accuracy(a, b, chosen_lengths=nw, rejected_lengths=nl))}

    ranking = {"policy": acc(w, l_), "reference": acc(rw, rl)}
    p = np.array([np.nan if pr["pref_prob"] is None else pr["pref_prob"] for pr in pairs], np.float64)
    known = np.isfinite(p)
    sources = sorted({pr["pref_source"] for pr in pairs if pr["pref_source"]})
    if known.any():
        pc = np.clip(p[known], P_CLIP, 1 - P_CLIP)
        ideal = float(dg.idealized_ranking_accuracy(rw[known], rl[known], pc, beta))
        pol_known = float(dg.ranking_accuracy(w[known], l_[known]))
        ranking["idealized"] = {"value": ideal, "pairs": int(known.sum()), "beta": beta, "p_from": sources,
                                "policy_accuracy_on_these_pairs": pol_known, "alignment_gap": ideal - pol_known}
        if not known.all():
            notes.append(f"Idealised ranking accuracy on the {int(known.sum())} of {n} pairs with a preference "
                         "probability or scores.")
        if (p[known] <= P_CLIP).any() or (p[known] >= 1 - P_CLIP).any():
            notes.append(f"Preference probabilities clipped into [{P_CLIP:g}, 1 − {P_CLIP:g}] for logit(p).")
    else:
        ranking["idealized"] = None
        notes.append("Idealised ranking accuracy omitted: the records carry neither a preference probability "
                     "(pref_prob) nor scores (score_chosen/score_rejected).")

    flip_loss = np.asarray(dg.dpo_loss_at_flip(rw, rl, beta), np.float64)
    ref_margin = rw - rl
    misranked = ~(rw > rl)
    policy_right = w > l_
    mis = {"count": int(misranked.sum()), "fraction": float(misranked.mean()), "beta": beta,
           "pairs": np.flatnonzero(misranked),
           "flipped_by_policy": int((misranked & policy_right).sum()),
           "unflipped_by_policy": int((misranked & ~policy_right).sum()),
           "mean_loss_at_flip": float(flip_loss[misranked].mean()) if misranked.any() else None,
           "auc_loss_at_flip_predicts_flip": _auc(flip_loss[misranked], policy_right[misranked])
           if reference is not None and misranked.any() else None}

    dw, dl = w - rw, l_ - rl
    disp = {"mean_chosen_change": float(dw.mean()), "mean_rejected_change": float(dl.mean()),
            "mean_margin_change": float((dw - dl).mean()),
            "chosen_down": int((dw < 0).sum()), "frac_chosen_down": float((dw < 0).mean()),
            "rejected_down": int((dl < 0).sum()), "both_down": int(((dw < 0) & (dl < 0)).sum()),
            "margin_up": int((dw - dl > 0).sum())}

    ches = None
    if "ches" in ref_st:
        c, cln = ref_st["ches"], ref_st["ches_ln"]
        ches = {"order": np.argsort(-c, kind="stable"), "order_ln": np.argsort(-cln, kind="stable"),
                "spearman_ches_vs_chosen_change": _spearman(c, dw) if reference is not None else None,
                "spearman_ches_ln_vs_chosen_change": _spearman(cln, dw) if reference is not None else None}

    ent = None
    k = min(entanglement_pairs, n)
    if k > 0:
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(n, size=k, replace=False))
        ent = entanglement(pol, batch, idx, ref_st, beta=beta, loss_names=loss_names, progress=progress)

    per_pair = {"line": np.array([pr["line"] for pr in pairs]), "chosen_logps": w, "rejected_logps": l_,
                "ref_chosen_logps": rw, "ref_rejected_logps": rl, "chosen_lengths": nw, "rejected_lengths": nl,
                "chosen_change": dw, "rejected_change": dl, "ref_margin": ref_margin,
                "ref_misranked": misranked, "policy_ranks_right": policy_right, "dpo_loss_at_flip": flip_loss,
                "pref_prob": p}
    if "ches" in ref_st:
        per_pair["ches"], per_pair["ches_ln"] = ref_st["ches"], ref_st["ches_ln"]
    return {
        "inputs": {"policy": str(policy), "reference": str(reference if reference is not None else policy),
                   "reference_is_policy": reference is None, "tokenizer": tok_desc, "beta": beta,
                   "context": context, "vocab_size": V, "seed": seed, **{f"data_{k_}": v for k_, v in info.items()}},
        "n_pairs": n, "ranking": ranking, "misranked": mis, "displacement": disp, "ches": ches,
        "entanglement": ent, "pairs": per_pair, "notes": notes,
    }


# ----------------------------------------------------------------------------------------------------------
# Outputs.


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.ndarray, jax.Array)):
        return _jsonable(np.asarray(v).tolist())
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "—" if not math.isfinite(float(v)) else f"{float(v):.{digits}g}"
    return str(v)


def _sections(res: dict) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """``(title, explanation, header, rows)`` for each report table."""
    inp, rk, mis, disp = res["inputs"], res["ranking"], res["misranked"], res["displacement"]
    pp = res["pairs"]
    out = []
    out.append(("Inputs", "What was compared.", ["item", "value"],
                [["policy", inp["policy"]], ["reference", inp["reference"] + (" (= policy)" if inp[
                    "reference_is_policy"] else "")], ["data", f"{inp['data_path']} (format {inp['data_format']})"],
                 ["pairs", f"{inp['data_pairs_used']} of {inp['data_pairs_in_file']}"],
                 ["tokenizer", inp["tokenizer"]], ["β", _fmt(inp["beta"])], ["context (tokens)", str(inp["context"])]]))
    rows = [[m, _fmt(rk[m]["summed"]), _fmt(rk[m]["length_normalized"])] for m in ("policy", "reference")]
    out.append(("Ranking accuracy", "Fraction of pairs with ln π(y_w|x) > ln π(y_l|x) (strict), on summed and on "
                "length-normalised log-probs (Chen et al., 2024).", ["model", "summed", "length-normalised"], rows))
    ide = rk["idealized"]
    if ide is not None:
        out.append(("Idealised ranking accuracy", "Accuracy of the exact DPO/RLHF optimum "
                    "π* ∝ π_ref·exp(r*/β): mean 1[rp_w − rp_l + logit(p)/β > 0], p from " + ", ".join(ide["p_from"])
                    + " (scores: p = σ(score_chosen − score_rejected)). Alignment gap = idealised − policy accuracy.",
                    ["pairs with p", "β", "idealised", "policy (same pairs)", "alignment gap"],
                    [[str(ide["pairs"]), _fmt(ide["beta"]), _fmt(ide["value"]),
                      _fmt(ide["policy_accuracy_on_these_pairs"]), _fmt(ide["alignment_gap"])]]))
    out.append(("Pairs the reference misranks", "ln π_ref(y_w) ≤ ln π_ref(y_l). Such a pair is ranked right only "
                "once the DPO loss falls below −ln σ(β·(rp_l − rp_w)) (dpo_loss_at_flip); AUC: how well a larger "
                "loss-at-flip predicts that the policy flipped it.",
                ["misranked", "fraction", "flipped by policy", "not flipped", "mean loss at flip", "AUC"],
                [[str(mis["count"]), _fmt(mis["fraction"]), str(mis["flipped_by_policy"]),
                  str(mis["unflipped_by_policy"]), _fmt(mis["mean_loss_at_flip"]),
                  _fmt(mis["auc_loss_at_flip_predicts_flip"])]]))
    mi = np.asarray(mis["pairs"])
    worst = mi[np.argsort(np.asarray(pp["dpo_loss_at_flip"])[mi], kind="stable")][:10]
    if len(worst):
        out.append(("Hardest misranked pairs", "Lowest DPO loss at the flip (the reference misranks them by the "
                    "widest margin).", ["pair", "line", "ref margin rp_w − rp_l", "loss at flip", "policy ranks right"],
                    [[str(i), str(pp["line"][i]), _fmt(pp["ref_margin"][i]), _fmt(pp["dpo_loss_at_flip"][i]),
                      _fmt(bool(pp["policy_ranks_right"][i]))] for i in worst]))
    out.append(("Likelihood displacement", "Log-prob changes reference → policy, Δ = ln π(y) − ln π_ref(y) "
                "(summed over the response).",
                ["mean Δ chosen", "mean Δ rejected", "mean Δ margin", "pairs with chosen down", "fraction",
                 "rejected down", "both down", "margin up"],
                [[_fmt(disp["mean_chosen_change"]), _fmt(disp["mean_rejected_change"]),
                  _fmt(disp["mean_margin_change"]), str(disp["chosen_down"]), _fmt(disp["frac_chosen_down"]),
                  str(disp["rejected_down"]), str(disp["both_down"]), str(disp["margin_up"])]]))
    ch = res["ches"]
    if ch is not None:
        top = np.asarray(ch["order"])[:10]
        out.append(("CHES ranking", "Centered hidden-embedding similarity under the reference (Razin et al., "
                    "2025); higher = more likelihood displacement expected. Top pairs by CHES. Spearman(CHES, Δ "
                    f"chosen) = {_fmt(ch['spearman_ches_vs_chosen_change'])}, Spearman(CHES-LN, Δ chosen) = "
                    f"{_fmt(ch['spearman_ches_ln_vs_chosen_change'])}.",
                    ["rank", "pair", "line", "CHES", "CHES-LN", "Δ chosen"],
                    [[str(r + 1), str(i), str(pp["line"][i]), _fmt(pp["ches"][i]), _fmt(pp["ches_ln"][i]),
                      _fmt(pp["chosen_change"][i])] for r, i in enumerate(top)]))
    ent = res["entanglement"]
    if ent is not None:
        st = ent["stats"]
        out.append(("Gradient entanglement: statistics", f"At the policy, on {len(ent['pairs'])} sampled pairs: "
                    "g_w = ∇ ln π(y_w|x), g_l = ∇ ln π(y_l|x) over all parameters (Yuan et al., 2025).",
                    ["mean cos(g_w, g_l)", "min cos", "max cos", "mean ⟨g_w, g_l⟩", "mean ‖g_w‖²", "mean ‖g_l‖²"],
                    [[_fmt(np.mean(st["cosine"])), _fmt(np.min(st["cosine"])), _fmt(np.max(st["cosine"])),
                      _fmt(np.mean(st["inner"])), _fmt(np.mean(st["chosen_sq_norm"])),
                      _fmt(np.mean(st["rejected_sq_norm"]))]]))
        rows = []
        for name, r in ent["losses"].items():
            rows.append([name, _fmt(r["frac_chosen_rises"]), _fmt(r["frac_rejected_falls"]),
                         *[_fmt(r["case_fractions"][c]) for c in dg.CASES]])
        out.append(("Gradient entanglement: conditions per loss", "First-order effect of one gradient step on each "
                    "pair's own loss (a = ∂ℓ/∂ln π_w, b = ∂ℓ/∂ln π_l): fraction of pairs whose chosen log-prob "
                    "rises / rejected falls, and the case fractions. Skipped: "
                    + (", ".join(f"{k} ({v})" for k, v in ent["skipped"].items()) or "none") + ".",
                    ["loss", "chosen rises", "rejected falls", *dg.CASES], rows))
    return out


PLOTS = ("logp_changes.png", "margin_vs_flip_loss.png")


def _plots(res: dict, out: Path) -> list[Path]:
    from jalign.plotting import plt, style

    pp = res["pairs"]
    paths = []
    with style():
        fig, ax = plt.subplots()
        dw, dl = np.asarray(pp["chosen_change"]), np.asarray(pp["rejected_change"])
        lo, hi = float(min(dw.min(), dl.min())), float(max(dw.max(), dl.max()))
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 31)
        ax.hist(dw, bins=bins, alpha=0.6, label="chosen: ln π(y_w) − ln π_ref(y_w)")
        ax.hist(dl, bins=bins, alpha=0.6, label="rejected: ln π(y_l) − ln π_ref(y_l)")
        ax.axvline(0.0, color="k", lw=0.8)
        ax.set_xlabel("log-prob change, reference → policy (nats)")
        ax.set_ylabel("pairs")
        ax.set_title(f"Likelihood displacement: chosen down in {res['displacement']['chosen_down']} of "
                     f"{res['n_pairs']} pairs")
        ax.legend()
        paths.append(out / PLOTS[0])
        fig.savefig(paths[-1], metadata={"Software": None})
        plt.close(fig)

        fig, ax = plt.subplots()
        m, fl = np.asarray(pp["ref_margin"]), np.asarray(pp["dpo_loss_at_flip"])
        right = np.asarray(pp["policy_ranks_right"], bool)
        beta = res["inputs"]["beta"]
        xs = np.linspace(min(m.min(), -1e-3), max(m.max(), 1e-3), 200)
        ax.plot(xs, np.logaddexp(0.0, beta * xs), color="0.5", lw=1.0, label="−ln σ(β·(rp_l − rp_w))")
        ax.scatter(m[right], fl[right], s=14, label="policy ranks right")
        ax.scatter(m[~right], fl[~right], s=14, marker="x", label="policy ranks wrong")
        ax.axvline(0.0, color="k", lw=0.8)
        ax.set_xlabel("reference margin rp_w − rp_l (nats; < 0: misranked)")
        ax.set_ylabel(f"DPO loss at the flip (β = {beta:g})")
        ax.legend()
        paths.append(out / PLOTS[1])
        fig.savefig(paths[-1], metadata={"Software": None})
        plt.close(fig)
    return paths


def render_markdown(res: dict) -> str:
    lines = ["# jalign diagnose report", ""]
    for title, text, header, rows in _sections(res):
        lines += [f"## {title}", "", text, "", "| " + " | ".join(header) + " |",
                  "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        lines.append("")
    lines += ["## Plots", "", f"![log-prob changes]({PLOTS[0]})", "", f"![margin vs loss at flip]({PLOTS[1]})", ""]
    if res["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    return "\n".join(lines)


def render_html(res: dict) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>jalign diagnose</title>",
             "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse;"
             "margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "th{background:#f3f3f3}</style></head><body><h1>jalign diagnose report</h1>"]
    for title, text, header, rows in _sections(res):
        parts.append(f"<h2>{e(title)}</h2><p>{e(text)}</p><table><tr>"
                     + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts.append("</table>")
    parts.append("<h2>Plots</h2>" + "".join(f"<p><img src='{p}' alt='{p}'></p>" for p in PLOTS))
    if res["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in res["notes"]) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_outputs(res: dict, out: str | Path) -> list[Path]:
    """Write ``results.json``, ``report.md``, ``report.html`` and the PNG plots into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = _jsonable(res)
    paths = [out / "results.json", out / "report.md", out / "report.html"]
    paths[0].write_text(json.dumps(data, indent=1) + "\n")
    paths[1].write_text(render_markdown(res))
    paths[2].write_text(render_html(res))
    return paths + _plots(res, out)
