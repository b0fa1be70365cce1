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
* for the pairs whose chosen log-prob fell, where the mass went: the tokens gaining most probability at the
  chosen response's first position (:func:`jalign.diagnostics.mass_gainers`; :func:`lost_mass`);
* the top-k over-optimisation indicators (Shi et al., 2024) of each model on its own greedy and sampled
  completions of the first prompts (:func:`topk_indicators`);
* on a sample of pairs, the gradient-entanglement statistics at the policy
  (:func:`jalign.diagnostics.pairwise_gradient_stats`) and, for every registered pairwise margin loss, the
  weights a, b (:func:`jalign.diagnostics.loss_weights`) and the condition and case labels
  (:func:`jalign.diagnostics.entanglement_condition`; Yuan et al., 2025).

:func:`diagnose_run` computes the headline diagnostics of a jalign training run at each of its checkpoints
(:func:`write_run_outputs` plots them over training). :func:`write_outputs` writes ``results.json``, ``report.md``, ``report.html`` and two PNG plots. Bad input
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
from jalign.tokenizers import ByteTokenizer
from jalign.train.batch import PAIRWISE_FIELDS, SEQ, SIDES
from jalign.train.online import make_kv_sampler, make_sampler
from jalign.train.plugins.models import is_causal_lm
from jalign.train.probes.rankings import sample_indicators
from jalign.train.step import ExampleLogp, make_logps_fn, split_model
from jalign.train.step import logits_fn as trainer_logits_fn

__all__ = ["DEFAULT_ENTANGLEMENT_LOSSES", "DiagnoseError", "diagnose", "diagnose_run", "encode_pairs",
           "entanglement_losses", "load_model", "load_pairs", "lost_mass", "topk_indicators", "write_outputs",
           "write_run_outputs"]

#: The margin losses always reported first in the entanglement table (all registered ones follow).
DEFAULT_ENTANGLEMENT_LOSSES = ("sigmoid", "ipo", "simpo")
#: p is clipped into [P_CLIP, 1 − P_CLIP] (a unanimous or saturated p would make logit(p) infinite).
P_CLIP = 1e-6
SMALL_LM = "small_lm"
#: The k of the top-k indicators.
TOPK_KS = (1, 5, 10)


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
    graphdef, params, rest = split_model(model)
    return _sequence_stats_split(graphdef, params, rest, batch, batch_size=batch_size, with_hidden=with_hidden,
                                 progress=progress, desc=desc)


def _sequence_stats_split(graphdef, params, rest, batch, *, batch_size: int = 16, with_hidden: bool = False,
                          progress: bool = True, desc: str = "log-probs") -> dict[str, np.ndarray]:
    from tqdm.auto import tqdm

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


@functools.partial(jax.jit, static_argnums=(0,))
def _next_token_logps(graphdef, params, model_state, ids, att, pos):
    """log softmax of the logits at position ``pos[i]`` of row i, ``[N, V]`` float32."""
    logits = trainer_logits_fn(graphdef, params, model_state, ids, att)
    z = jnp.take_along_axis(logits, pos[:, None, None], axis=1)[:, 0].astype(jnp.float32)
    return jax.nn.log_softmax(z, axis=-1)


def first_position_logps(model, batch: dict[str, np.ndarray], rows: np.ndarray, *,
                         batch_size: int = 16) -> np.ndarray:
    """The next-token log-distribution at the chosen response's first position (the prompt's last token, which
    predicts the first response token) of the pairs ``rows``: ``[len(rows), V]`` float32 numpy."""
    graphdef, params, rest = split_model(model)
    bs = max(1, min(batch_size, len(rows)))
    out = []
    for s0 in range(0, len(rows), bs):
        r = rows[s0:s0 + bs]
        k = len(r)
        r = np.concatenate([r, np.full(bs - k, r[0])])
        pos = np.maximum(batch["prompt_lengths"][r] - 1, 0).astype(np.int32)
        lp = _next_token_logps(graphdef, params, rest, jnp.asarray(batch["chosen_ids"][r]),
                               jnp.asarray(batch["chosen_attention_mask"][r]), jnp.asarray(pos))
        out.append(np.asarray(lp)[:k])
    return np.concatenate(out)


def token_text(tokenizer, i: int) -> str:
    """A readable form of token ``i``: the byte (escaped) for the byte tokenizer, ``<bos>``/``<eos>``/``<pad>``
    for special ids, else the tokenizer's decoding."""
    for name in ("bos", "eos", "pad"):
        if getattr(tokenizer, f"{name}_id", None) == i:
            return f"<{name}>"
    if isinstance(tokenizer, ByteTokenizer):
        return repr(bytes([i]))[2:-1] if 0 <= i < 256 else f"<{i}>"
    try:
        return tokenizer.decode([i])
    except Exception:  # noqa: BLE001 - an undecodable id is shown as its number
        return f"<{i}>"


def lost_mass(policy, reference, batch: dict[str, np.ndarray], chosen_change: np.ndarray, tokenizer, *,
              k: int = 5, top: int = 10, batch_size: int = 16) -> dict[str, Any] | None:
    """Where the mass went for the pairs whose chosen log-prob fell (Δ chosen < 0): at the chosen response's first
    position, per pair the ``k`` tokens with the largest gain π(z) − π_ref(z)
    (:func:`jalign.diagnostics.mass_gainers`), and over those pairs the ``top`` tokens with the largest mean gain
    mean_i π_i(z) − mean_i π_ref,i(z) (``mass_gainers`` of the mean distributions), with the number of pairs
    having each among their own top k. The pair's own chosen first token is left out of the gainers (its gain
    counts as 0); the change of its probability is reported apart. ``None`` when no pair lost chosen mass."""
    rows = np.flatnonzero(chosen_change < 0)
    if rows.size == 0:
        return None
    lp_ref = first_position_logps(reference, batch, rows, batch_size=batch_size)
    lp_pol = first_position_logps(policy, batch, rows, batch_size=batch_size)
    V = lp_ref.shape[-1]
    first = batch["chosen_ids"][rows, batch["prompt_lengths"][rows]]
    at = (np.arange(len(rows)), first)
    p_first_ref = np.exp(lp_ref[at].astype(np.float64))
    p_first_pol = np.exp(lp_pol[at].astype(np.float64))
    lp_pol = lp_pol.copy()
    lp_pol[at] = lp_ref[at]  # the chosen first token itself is left out (gain 0; its change is reported apart)
    toks, gains = (np.asarray(x) for x in dg.mass_gainers(lp_ref, lp_pol, min(k, V)))
    mean_ref = np.log(np.exp(lp_ref.astype(np.float64)).mean(0))
    mean_pol = np.log(np.exp(lp_pol.astype(np.float64)).mean(0))
    agg_tok, agg_gain = (np.asarray(x) for x in dg.mass_gainers(mean_ref, mean_pol, min(top, V)))
    tokens = [{"token": int(t), "text": token_text(tokenizer, int(t)), "mean_gain": float(g),
               "pairs_in_top_k": int((toks == t).any(-1).sum())} for t, g in zip(agg_tok, agg_gain, strict=True)]
    return {"pairs": rows, "k": int(min(k, V)), "token_gainers": toks, "token_gains": gains,
            "top_tokens": tokens, "first_chosen_token": first, "first_chosen_token_prob_ref": p_first_ref,
            "first_chosen_token_prob_policy": p_first_pol,
            "mean_first_chosen_token_prob_change": float(np.mean(p_first_pol - p_first_ref))}


def _prompt_batch(pairs: list[dict], tokenizer, n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The first ``n`` distinct prompts of the pairs, tokenised as the trainer does and left-padded."""
    prompts, seqs = [], []
    for pr in pairs:
        if len(prompts) == n:
            break
        if pr["prompt"] in prompts:
            continue
        ids, mask = tokenizer.encode_pair(pr["prompt"], "")
        plen = mask.index(1) if 1 in mask else len(mask)
        if plen == 0:
            continue
        prompts.append(pr["prompt"])
        seqs.append(ids[:plen])
    P = max((len(x) for x in seqs), default=0)
    pad = int(getattr(tokenizer, "pad_id", 0) or 0)
    ids_a = np.full((len(seqs), P), pad, np.int32)
    m_a = np.zeros((len(seqs), P), np.int32)
    for i, x in enumerate(seqs):
        ids_a[i, P - len(x):], m_a[i, P - len(x):] = x, 1
    return prompts, ids_a, m_a


def topk_indicators(models: dict[str, Any], pairs: list[dict], tokenizer, *, n_prompts: int = 8,
                    max_new_tokens: int = 32, context: int, seed: int = 0, ks=TOPK_KS) -> dict[str, Any] | None:
    """Top-k over-optimisation indicators (Shi et al., 2024) of each model on its own completions of the first
    ``n_prompts`` distinct prompts: greedy and sampled (temperature 1, key ``seed``) with the trainer's samplers,
    then the token-weighted means of M_k, H_k and H along them
    (:func:`jalign.train.probes.rankings.sample_indicators`). ``None`` when there is no prompt or no room in the
    context."""
    prompts, ids, mask = _prompt_batch(pairs, tokenizer, n_prompts)
    if not prompts:
        return None
    new = min(max_new_tokens, context - ids.shape[1])
    if new < 1:
        return None
    eos, pad = tokenizer.eos_id, int(getattr(tokenizer, "pad_id", 0) or 0)
    out: dict[str, Any] = {"prompts": prompts, "max_new_tokens": int(new), "seed": seed, "ks": list(ks),
                           "models": {}}
    for label, model in models.items():
        graphdef, params, rest = split_model(model)
        make = make_kv_sampler if is_causal_lm(model) else make_sampler
        res = {}
        for decoding, greedy in (("greedy", True), ("sampled", False)):
            sampler = make(graphdef, max_new_tokens=new, greedy=greedy, eos_id=eos, pad_id=pad)
            smp = sampler(params, rest, jnp.asarray(ids), jnp.asarray(mask), jax.random.key(seed))
            ind = {k_: float(v) for k_, v in sample_indicators(graphdef, tuple(ks), params, rest, smp["ids"],
                                                               smp["attention_mask"], smp["mask"]).items()}
            s_ids, s_mask = np.asarray(smp["ids"]), np.asarray(smp["mask"])
            comp = [[int(t) for t, m in zip(s_ids[i], s_mask[i], strict=True) if m] for i in range(len(prompts))]
            ind["tokens"] = int(ind["tokens"])
            res[decoding] = {**ind, "mean_length": float(s_mask.sum() / len(prompts)), "completions": comp,
                             "texts": [_decode(tokenizer, c) for c in comp]}
        out["models"][label] = res
    return out


def _decode(tokenizer, ids: list[int]) -> str:
    keep = [i for i in ids if i not in (getattr(tokenizer, "eos_id", None), getattr(tokenizer, "pad_id", None))]
    try:
        return tokenizer.decode(keep)
    except Exception:  # noqa: BLE001
        return " ".join(map(str, keep))


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
             seed: int = 0, skip_invalid: bool = False, progress: bool = True, sample_prompts: int = 8,
             max_new_tokens: int = 32) -> dict[str, Any]:
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
    if sample_prompts < 0:
        raise DiagnoseError(f"--sample-prompts must be >= 0, got {sample_prompts}")
    if max_new_tokens < 1:
        raise DiagnoseError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
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

    lost = None
    if reference is not None:
        lost = lost_mass(pol, ref_model, batch, dw, tok, batch_size=batch_size)
    topk = None
    if sample_prompts > 0:
        models = {"policy": pol} if reference is None else {"policy": pol, "reference": ref_model}
        topk = topk_indicators(models, pairs, tok, n_prompts=sample_prompts, max_new_tokens=max_new_tokens,
                               context=context, seed=seed)
        if topk is None:
            notes.append("Top-k indicators omitted: no prompt leaves room for a completion in the context.")
        elif topk["max_new_tokens"] < max_new_tokens:
            notes.append(f"Completions shortened to {topk['max_new_tokens']} tokens (the model's context).")

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
        "entanglement": ent, "lost_mass": lost, "topk": topk, "pairs": per_pair, "notes": notes,
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
    lm = res.get("lost_mass")
    if lm is not None:
        out.append(("Where the lost mass went", f"For the {len(lm['pairs'])} pairs whose chosen log-prob fell: the "
                    "tokens other than the chosen response's own first token whose probability at the chosen "
                    "response's first position grew most, reference → policy (mean over those pairs of "
                    "π(z) − π_ref(z)), and in how many of the pairs each is among the pair's own "
                    f"{lm['k']} largest gainers. Mean change of the probability of the chosen first "
                    f"token there: {_fmt(lm['mean_first_chosen_token_prob_change'])}.",
                    ["rank", "token id", "token", "mean gain", f"pairs with it in their top {lm['k']}"],
                    [[str(r + 1), str(t["token"]), repr(t["text"]), _fmt(t["mean_gain"]), str(t["pairs_in_top_k"])]
                     for r, t in enumerate(lm["top_tokens"])]))
    tk = res.get("topk")
    if tk is not None:
        ks = tk["ks"]
        rows = []
        for label, per in tk["models"].items():
            for decoding, r in per.items():
                rows.append([label, decoding, _fmt(r["mean_length"], 3)] + [_fmt(r[f"mass_top{k}"]) for k in ks]
                            + [_fmt(r[f"entropy_top{k}"]) for k in ks] + [_fmt(r["entropy"])])
        out.append(("Top-k indicators on the models' own completions", f"Each model completes the first "
                    f"{len(tk['prompts'])} distinct prompts ({tk['max_new_tokens']} new tokens at most; greedy, and "
                    f"sampled at temperature 1 with seed {tk['seed']}); along its completions, the mean top-k "
                    "mass M_k, renormalised top-k entropy H_k and entropy H of its next-token distributions "
                    "(Shi et al., 2024: falling M_k / rising H_k on the model's own generations indicate "
                    "over-optimisation).",
                    ["model", "decoding", "mean length", *[f"M_{k}" for k in ks], *[f"H_{k}" for k in ks], "H"],
                    rows))
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


# ----------------------------------------------------------------------------------------------------------
# A jalign training run over its checkpoints (``jalign diagnose --run WORKDIR``).


def _run_state_like(cfg):
    """``(model, graphdef, like)``: the run's model as built at step 0 and a TrainState of the checkpoints'
    structure (with a frozen reference copy exactly when the trainer keeps one)."""
    from jalign.train import plugins
    from jalign.train.step import init_state, make_optimizer

    if cfg.get("mode") == "reward":
        raise DiagnoseError("the run trained a reward model (mode='reward'); jalign diagnose examines policies")
    model = plugins.make_model(cfg.model.name, seed=cfg.seed, **dict(cfg.model.kwargs))
    frozen = False
    if cfg.mode != "sft" and cfg.loss.reference == "frozen":
        frozen = losses.bind(cfg.loss.name, **dict(cfg.loss.hparams)).spec.needs_reference
    tx, _ = make_optimizer(cfg.optim, cfg.train.steps)
    graphdef, like = init_state(model, tx, seed=cfg.seed, reference=frozen)
    return model, graphdef, like


def _run_pairs(cfg, workdir: Path, max_pairs: int) -> dict[str, np.ndarray]:
    """The first ``max_pairs`` pairs of the run's own data source (its first batches, seed ``cfg.seed``)."""
    from jalign.train import plugins

    src = plugins.make_data(cfg.data.name, batch_size=cfg.data.batch_size, seq_len=cfg.data.seq_len, seed=cfg.seed,
                            **dict(cfg.data.kwargs))
    parts, n = [], 0
    for b in src:
        if "chosen_ids" not in b:
            raise DiagnoseError(f"{workdir / 'config.json'}: data source {cfg.data.name!r} gives no preference "
                                "pairs; pass --data FILE")
        parts.append({k: np.asarray(v) for k, v in b.items() if k in PAIRWISE_FIELDS})
        n += parts[-1]["chosen_ids"].shape[0]
        if n >= max_pairs:
            break
    if not parts:
        raise DiagnoseError(f"{workdir / 'config.json'}: data source {cfg.data.name!r} gave no batches")
    return {k: np.concatenate([p[k] for p in parts])[:max_pairs] for k in parts[0]}


def diagnose_run(workdir: str | Path, *, data: str | Path | None = None, max_pairs: int = 64,
                 tokenizer: str | None = None, format: str | None = None, batch_size: int = 16,
                 skip_invalid: bool = False, progress: bool = True) -> dict[str, Any]:
    """The headline diagnostics of a jalign training run at each saved checkpoint.

    The model is rebuilt from ``workdir/config.json`` (``jalign.train.plugins.make_model`` with the run's seed:
    the initial model, step 0) and each checkpoint's parameters are restored
    (:class:`jalign.train.checkpoint.Checkpointer`). On the pairs of ``data`` (any preference file
    :func:`load_pairs` reads; default: the first ``max_pairs`` pairs of the run's own data source), per step:
    the ranking accuracy, summed and length-normalised; the mean change of ln π(y_w) and ln π(y_l) since the
    initial model; the fraction of pairs whose chosen log-prob fell; the mean margin.

    Raises:
      DiagnoseError: no ``config.json`` or no checkpoint in ``workdir``, a data source without pairs, bad data.
    """
    import ml_collections

    from jalign.train.checkpoint import Checkpointer

    workdir = Path(workdir)
    conf = workdir / "config.json"
    if not conf.is_file():
        raise DiagnoseError(f"{conf}: no such file (is {workdir} a jalign training run's workdir?)")
    if max_pairs < 1:
        raise DiagnoseError(f"--max-pairs must be >= 1, got {max_pairs}")
    try:
        cfg = ml_collections.ConfigDict(json.loads(conf.read_text()))
    except json.JSONDecodeError as e:
        raise DiagnoseError(f"{conf}:{e.lineno}: invalid JSON ({e.msg})") from None
    model, graphdef, like = _run_state_like(cfg)
    ckdir = workdir / "checkpoints"
    ckpt = Checkpointer(ckdir, async_save=False) if ckdir.is_dir() else None
    steps = ckpt.all_steps() if ckpt else []
    if not steps:
        raise DiagnoseError(f"{workdir}: no checkpoint in {ckdir} (train with a workdir and checkpoint.enabled)")
    if data is not None:
        tok, _ = resolve_tokenizer(tokenizer or "byte", SMALL_LM)
        pairs, info = load_pairs(data, format=format, max_pairs=max_pairs, skip_invalid=skip_invalid)
        mcfg = getattr(model, "cfg", None)
        context = int(getattr(mcfg, "max_seq_len", 1 << 30))
        V = int(getattr(mcfg, "vocab_size", getattr(model, "vocab_size", 1 << 30)))
        batch = encode_pairs(pairs, tok, context=context, vocab_size=V, path=info["path"])
        source = info["path"]
    else:
        batch = _run_pairs(cfg, workdir, max_pairs)
        source = f"the run's data source {cfg.data.name!r}"
    n = int(batch["chosen_ids"].shape[0])
    rows = []
    base = None
    try:
        for step in [0, *[s for s in steps if s != 0]]:
            if step == 0:
                params, rest = like.params, like.model_state
            else:
                state, _, _ = ckpt.restore(step, like)
                params, rest = state.params, state.model_state
            st = _sequence_stats_split(graphdef, params, rest, batch, batch_size=batch_size, progress=progress,
                                       desc=f"step {step}")
            w, l_, nw, nl = st["chosen_logps"], st["rejected_logps"], st["chosen_lengths"], st["rejected_lengths"]
            if base is None:
                base = (w, l_)
            dw, dl = w - base[0], l_ - base[1]
            rows.append({"step": int(step),
                         "accuracy": float(dg.ranking_accuracy(w, l_)),
                         "accuracy_normalized": float(dg.ranking_accuracy(
                             w, l_, chosen_lengths=np.maximum(nw, 1), rejected_lengths=np.maximum(nl, 1))),
                         "mean_chosen_logps": float(w.mean()), "mean_rejected_logps": float(l_.mean()),
                         "mean_chosen_change": float(dw.mean()), "mean_rejected_change": float(dl.mean()),
                         "mean_margin": float((w - l_).mean()), "frac_chosen_down": float((dw < 0).mean())})
    finally:
        ckpt.close()
    return {"run": {"workdir": str(workdir), "model": cfg.model.name, "loss": cfg.loss.name, "mode": cfg.mode,
                    "steps": [r["step"] for r in rows], "data": source, "pairs": n,
                    "baseline": "the initial model (step 0, rebuilt from config.json)"},
            "over_training": rows}


RUN_PLOT = "diagnostics_over_training.png"
RUN_FIELDS = ("step", "accuracy", "accuracy_normalized", "mean_chosen_change", "mean_rejected_change",
              "mean_margin", "frac_chosen_down")


def _run_table(res: dict) -> tuple[list[str], list[list[str]]]:
    header = ["step", "ranking accuracy", "length-normalised", "mean Δ chosen", "mean Δ rejected", "mean margin",
              "fraction chosen down"]
    return header, [[_fmt(r[f]) for f in RUN_FIELDS] for r in res["over_training"]]


def write_run_outputs(res: dict, out: str | Path) -> list[Path]:
    """``results.json``, ``report.md``, ``report.html`` and :data:`RUN_PLOT` of :func:`diagnose_run`."""
    from jalign.plotting import plt, style

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = res["run"]
    header, rows = _run_table(res)
    text = (f"Run {run['workdir']} (model {run['model']}, loss {run['loss']}); {run['pairs']} pairs of "
            f"{run['data']}; changes are relative to {run['baseline']}.")
    md = ["# jalign diagnose: diagnostics over training", "", text, "", "| " + " | ".join(header) + " |",
          "|" + "|".join("---" for _ in header) + "|", *["| " + " | ".join(r) + " |" for r in rows], "",
          f"![diagnostics over training]({RUN_PLOT})", ""]
    e = html.escape
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>jalign diagnose --run</title></head><body>"
            f"<h1>jalign diagnose: diagnostics over training</h1><p>{e(text)}</p><table border='1'><tr>"
            + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
            + f"</table><p><img src='{RUN_PLOT}' alt='{RUN_PLOT}'></p></body></html>")
    paths = [out / "results.json", out / "report.md", out / "report.html", out / RUN_PLOT]
    paths[0].write_text(json.dumps(_jsonable(res), indent=1) + "\n")
    paths[1].write_text("\n".join(md))
    paths[2].write_text(page)
    ot = res["over_training"]
    x = [r["step"] for r in ot]
    with style():
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
        a1.plot(x, [r["accuracy"] for r in ot], "o-", label="summed")
        a1.plot(x, [r["accuracy_normalized"] for r in ot], "s--", label="length-normalised")
        a1.set_xlabel("step")
        a1.set_ylabel("ranking accuracy")
        a1.set_ylim(-0.02, 1.02)
        a1.legend()
        a2.plot(x, [r["mean_chosen_change"] for r in ot], "o-", label="mean Δ ln π(y_w)")
        a2.plot(x, [r["mean_rejected_change"] for r in ot], "s-", label="mean Δ ln π(y_l)")
        a2.axhline(0.0, color="k", lw=0.8)
        a2.set_xlabel("step")
        a2.set_ylabel("log-prob change since step 0 (nats)")
        b2 = a2.twinx()
        b2.plot(x, [r["frac_chosen_down"] for r in ot], "^:", color="0.4", label="fraction chosen down")
        b2.set_ylim(-0.02, 1.02)
        b2.set_ylabel("fraction of pairs with chosen down")
        h1, l1 = a2.get_legend_handles_labels()
        h2, l2 = b2.get_legend_handles_labels()
        a2.legend(h1 + h2, l1 + l2, fontsize="small")
        fig.tight_layout()
        fig.savefig(paths[3], metadata={"Software": None})
        plt.close(fig)
    return paths
