"""Training objectives: how a batch of token ids becomes a scalar loss (one class per mode / batch kind).

An objective turns a batch (dict of arrays, leading axis = examples) into

* ``denominator(batch)``: the normaliser of the *full* batch (pairs for preference losses, response
  tokens for SFT), computed before microbatching so that gradient accumulation is exact;
* ``loss_sum(logps_fn, ref_logps_fn, batch) -> (Σ losses, per-example outputs)`` for one microbatch;
* ``metrics(per_example) -> dict`` from the per-example outputs of the whole batch.

``logps_fn(ids, mask, attention_mask) -> (logps, lengths)`` gives summed response log-probabilities under
the policy: ``sequence_logps(logits[:, :-1], ids[:, 1:], mask[:, 1:])`` (logits at t predict token t+1; the
response mask is aligned with ``ids``). ``ref_logps_fn`` is the same under the frozen reference, or ``None``.
Cached reference log-probs in the batch (``ref_chosen_logps``/``ref_rejected_logps`` or ``ref_logps``) take
precedence over ``ref_logps_fn``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jalign.logic  # noqa: F401  (registers the "logic:<name>" loss names with jalign.losses.bind)
from jalign import losses
from jalign.diagnostics import entanglement as ent
from jalign.train.batch import PAIRWISE_FIELDS, SEQ, contrastive_response_masks

# The trainer's mitigations: "normalized" needs per-pair gradients (jalign.studies.entanglement trains with it).
MITIGATIONS = tuple(m for m in ent.MITIGATIONS if m != "normalized")


def check_mitigation(mitigation: str, kind: str, *, reference: str = "frozen") -> None:
    """The rule of ``loss.mitigation``: ``"masked"`` needs a pairwise loss and an in-step (or no) reference —
    cached reference log-probs are computed on the unmasked responses. ``ValueError`` naming the key."""
    if mitigation not in MITIGATIONS:
        raise ValueError(f"loss.mitigation={mitigation!r} must be one of {MITIGATIONS}")
    if mitigation == "masked" and kind != "pairwise":
        raise ValueError(f"loss.mitigation='masked' needs a pairwise loss; this one is {kind}")
    if mitigation == "masked" and reference == "cached":
        raise ValueError("loss.mitigation='masked' needs loss.reference='frozen' or 'none' (cached reference "
                         "log-probs are computed on the unmasked responses)")


def _refuse_cached_masked(batch, where: str) -> None:
    if "ref_chosen_logps" in batch:
        raise ValueError(f"{where}: mitigation 'masked' cannot use precomputed ref_chosen_logps/ref_rejected_logps "
                         "(computed on the unmasked responses); use loss.reference='frozen'")


def _f32(x):
    return jnp.asarray(x, jnp.float32)


class SFT:
    """Token-level negative log-likelihood of the response: ``−Σ_{b,t} m·log π(x_t|x_<t) / Σ_{b,t} m``."""

    kind = "sft"
    fields = SEQ
    optional: tuple[str, ...] = ()
    needs_reference = False

    def denominator(self, batch):
        return jnp.maximum(_f32(batch["mask"][:, 1:]).sum(), 1.0)

    def loss_sum(self, logps_fn, ref_logps_fn, batch):
        logps, lengths = logps_fn(batch["ids"], batch["mask"], batch["attention_mask"])
        return -logps.sum(), {"logps": logps, "lengths": lengths}

    def metrics(self, per_ex):
        tokens = per_ex["lengths"].sum()
        return {"nll_per_token": -per_ex["logps"].sum() / jnp.maximum(tokens, 1.0), "tokens": tokens}


class _Registered:
    """A loss of the library bound to its hyperparameters (:func:`jalign.losses.bind`), averaged over examples
    (denominator = number of examples)."""

    def __init__(self, loss: losses.BoundLoss | str | Any, hparams: dict | None = None):
        if not isinstance(loss, losses.BoundLoss) or hparams:
            loss = losses.bind(loss, **dict(hparams or {}))
        self.loss, self.spec, self.hparams = loss, loss.spec, loss.hparams
        if self.spec.kind != self.kind:
            raise ValueError(f"loss {self.spec.name!r} is a {self.spec.kind} loss; this objective needs {self.kind}")
        self.needs_reference = self.spec.needs_reference

    def _call(self, b):
        return self.loss(b)  # no host-side validation: values are traced under jit

    def denominator(self, batch):
        return jnp.asarray(batch[self.fields[0]].shape[0], jnp.float32)

    @property
    def beta(self):
        return float(self.hparams.get("beta", 0.1))


def _ref(batch, key, ref_logps_fn, ids, mask, attn, needed):
    if key in batch:
        return _f32(batch[key])
    if ref_logps_fn is None:
        if needed:
            raise ValueError(f"the loss needs reference log-probs: pass batch field {key!r} or a frozen reference")
        return None
    return jax.lax.stop_gradient(ref_logps_fn(ids, mask, attn)[0])


class Pairwise(_Registered):
    """Any registered pairwise loss on ``chosen_*`` / ``rejected_*`` sequences ``[B, T]``.

    Chosen and rejected go through the model in one forward pass of ``2B`` rows.
    """

    kind = "pairwise"
    fields = PAIRWISE_FIELDS
    optional = ("ref_chosen_logps", "ref_rejected_logps")
    masked = False  # token masking (gradient-entanglement mitigation): see make_objective

    def loss_sum(self, logps_fn, ref_logps_fn, batch):
        if self.masked:
            _refuse_cached_masked(batch, "mitigation 'masked'")
            batch = {**batch, **contrastive_response_masks(batch)}
        b = batch["chosen_ids"].shape[0]
        cat = {f: jnp.concatenate([batch[f"chosen_{f}"], batch[f"rejected_{f}"]]) for f in SEQ}
        logps, lengths = logps_fn(cat["ids"], cat["mask"], cat["attention_mask"])
        if self.masked:  # an empty contrasting span (refused by check_batch) would make length-normalised 0/0
            lengths = jnp.maximum(lengths, 1)
        if "ref_chosen_logps" in batch:
            ref_c, ref_r = _f32(batch["ref_chosen_logps"]), _f32(batch["ref_rejected_logps"])
        elif ref_logps_fn is not None:
            ref = jax.lax.stop_gradient(ref_logps_fn(cat["ids"], cat["mask"], cat["attention_mask"])[0])
            ref_c, ref_r = ref[:b], ref[b:]
        elif self.needs_reference:
            raise ValueError(f"loss {self.spec.name!r} needs reference log-probs: batch fields "
                             "ref_chosen_logps/ref_rejected_logps or a frozen reference")
        else:
            ref_c = ref_r = None
        pb = losses.PairwiseLogps(chosen_logps=logps[:b], rejected_logps=logps[b:], ref_chosen_logps=ref_c,
                                  ref_rejected_logps=ref_r, chosen_lengths=lengths[:b],
                                  rejected_lengths=lengths[b:])
        per = self._call(pb)
        out = {"chosen_logps": logps[:b], "rejected_logps": logps[b:]}
        if ref_c is not None:
            out |= {"ref_chosen_logps": ref_c, "ref_rejected_logps": ref_r}
        return per.sum(), out

    def metrics(self, per_ex):
        return losses.preference_metrics(losses.PairwiseLogps(
            per_ex["chosen_logps"], per_ex["rejected_logps"], per_ex.get("ref_chosen_logps"),
            per_ex.get("ref_rejected_logps")), beta=self.beta)


class Unpaired(_Registered):
    """Registered unpaired (KTO-style) losses on ``ids``/``mask``/``attention_mask`` ``[B, T]`` and
    ``desirable`` ``[B]``; optional ``kl_ids``/``kl_mask``/``kl_attention_mask`` ``[B, T]`` hold mismatched
    (prompt, completion) pairs whose log-probs feed KTO's KL estimate (``kl_logps``, ``ref_kl_logps``)."""

    kind = "unpaired"
    fields = (*SEQ, "desirable")
    optional = ("ref_logps", "kl_ids", "kl_mask", "kl_attention_mask", "ref_kl_logps")

    def loss_sum(self, logps_fn, ref_logps_fn, batch):
        logps, lengths = logps_fn(batch["ids"], batch["mask"], batch["attention_mask"])
        ref = _ref(batch, "ref_logps", ref_logps_fn, batch["ids"], batch["mask"], batch["attention_mask"], True)
        kl = ref_kl = None
        if "kl_ids" in batch:
            kl_seq = (batch["kl_ids"], batch["kl_mask"], batch["kl_attention_mask"])
            kl = logps_fn(*kl_seq)[0]
            ref_kl = _ref(batch, "ref_kl_logps", ref_logps_fn, *kl_seq, True)
        ub = losses.UnpairedLogps(logps=logps, ref_logps=ref, desirable=batch["desirable"], lengths=lengths,
                                  kl_logps=kl, ref_kl_logps=ref_kl)
        return self._call(ub).sum(), {"logps": logps, "ref_logps": ref, "desirable": _f32(batch["desirable"])}

    def metrics(self, per_ex):
        d = per_ex["desirable"]
        r = self.beta * (per_ex["logps"] - per_ex["ref_logps"])
        return {"rewards/desirable": (r * d).sum() / jnp.maximum(d.sum(), 1.0),
                "rewards/undesirable": (r * (1 - d)).sum() / jnp.maximum((1 - d).sum(), 1.0)}


def _flat_logps(fn, batch, prefix=""):
    ids = batch[f"{prefix}ids"]
    b, k, t = ids.shape
    lp, ln = fn(ids.reshape(b * k, t), batch[f"{prefix}mask"].reshape(b * k, t),
                batch[f"{prefix}attention_mask"].reshape(b * k, t))
    return lp.reshape(b, k), ln.reshape(b, k)


class Listwise(_Registered):
    """Registered listwise losses: ``ids``/``mask``/``attention_mask`` ``[B, K, T]``, ``scores`` ``[B, K]``,
    optional ``list_mask`` ``[B, K]`` (valid entries)."""

    kind = "listwise"
    fields = (*SEQ, "scores")
    optional = ("ref_logps", "list_mask")

    def loss_sum(self, logps_fn, ref_logps_fn, batch):
        logps, lengths = _flat_logps(logps_fn, batch)
        if "ref_logps" in batch:
            ref = _f32(batch["ref_logps"])
        elif ref_logps_fn is not None:
            ref = jax.lax.stop_gradient(_flat_logps(ref_logps_fn, batch)[0])
        else:
            ref = None
        lb = losses.ListwiseLogps(logps=logps, scores=_f32(batch["scores"]), ref_logps=ref, lengths=lengths,
                                  mask=batch.get("list_mask"))
        return self._call(lb).sum(), {"logps": logps}

    def metrics(self, per_ex):
        return {"logps/mean": per_ex["logps"].mean()}


class Scored(_Registered):
    """Registered policy-gradient losses on K sampled completions per prompt: ``ids``/``mask``/
    ``attention_mask`` ``[B, K, T]``, ``rewards`` ``[B, K]`` (the online loop builds these)."""

    kind = "scored"
    fields = (*SEQ, "rewards")
    optional = ("ref_logps",)

    def loss_sum(self, logps_fn, ref_logps_fn, batch):
        logps, _ = _flat_logps(logps_fn, batch)
        if "ref_logps" in batch:
            ref = _f32(batch["ref_logps"])
        elif ref_logps_fn is not None:
            ref = jax.lax.stop_gradient(_flat_logps(ref_logps_fn, batch)[0])
        else:
            ref = None
        sb = losses.ScoredLogps(logps=logps, rewards=_f32(batch["rewards"]), ref_logps=ref)
        return self._call(sb).sum(), {"logps": logps, "rewards": _f32(batch["rewards"])}

    def metrics(self, per_ex):
        return {"reward/mean": per_ex["rewards"].mean(), "logps/mean": per_ex["logps"].mean()}


class Sampled(_Registered):
    """Registered f-DPG-style losses on completions y ~ q: ``ids``/``mask``/``attention_mask`` ``[B, T]``,
    ``proposal_logps`` ``[B]`` (log q(y|x), from the sampler) and ``log_potential`` ``[B]``; the target is
    ``log p(y|x) = log π_ref(y|x) + log_potential`` (an EBM over the reference, e.g. GDC / RLHF targets)."""

    kind = "sampled"
    fields = (*SEQ, "proposal_logps", "log_potential")
    optional = ("ref_logps",)

    def loss_sum(self, logps_fn, ref_logps_fn, batch):
        logps, _ = logps_fn(batch["ids"], batch["mask"], batch["attention_mask"])
        ref = _ref(batch, "ref_logps", ref_logps_fn, batch["ids"], batch["mask"], batch["attention_mask"], True)
        sb = losses.SampledLogps(policy_logps=logps, target_logps=ref + _f32(batch["log_potential"]),
                                 proposal_logps=_f32(batch["proposal_logps"]))
        return self._call(sb).sum(), {"logps": logps, "log_potential": _f32(batch["log_potential"])}

    def metrics(self, per_ex):
        return {"log_potential/mean": per_ex["log_potential"].mean(), "logps/mean": per_ex["logps"].mean()}


class RewardPairs:
    """Reward-model training on pairwise batches (``chosen_*`` / ``rejected_*`` ``[B, T]``): the model is a
    :class:`jalign.models.RewardModel` with a scalar head; r = its score of the last real token of each
    sequence (attention mask), and the loss per pair is :func:`jalign.losses.reward_model_loss`
    −log σ(r_c − r_r − margin) + center_coef·(r_c + r_r)², averaged over pairs. An optional batch field
    ``margin`` ``[B]`` replaces the configured margin per pair (TRL's margin column).

    Metrics: ``accuracy`` = mean 1[r_c > r_r], ``margin`` = mean(r_c − r_r), ``rewards/chosen``,
    ``rewards/rejected`` (means).
    """

    kind = "reward"
    fields = PAIRWISE_FIELDS
    optional = ("margin",)
    needs_reference = False
    masked = False

    def __init__(self, *, margin: float = 0.0, center_coef: float = 0.0):
        losses.reward_model_loss(jnp.zeros(1), jnp.zeros(1), margin=margin, center_coef=center_coef)  # validates
        self.margin, self.center_coef = float(margin), float(center_coef)

    @staticmethod
    def make_model_fn(graphdef, params, model_state):
        """``(ids, mask, attention_mask) -> (rewards [B], lengths [B])`` (the step's model-function shape)."""

        def fn(ids, mask, attention_mask):
            out = nnx.merge(graphdef, params, model_state)(ids, attention_mask)
            return out.scores[:, 0], _f32(mask[:, 1:]).sum(-1)

        return fn

    def denominator(self, batch):
        return jnp.asarray(batch["chosen_ids"].shape[0], jnp.float32)

    def loss_sum(self, model_fn, ref_fn, batch):
        b = batch["chosen_ids"].shape[0]
        cat = {f: jnp.concatenate([batch[f"chosen_{f}"], batch[f"rejected_{f}"]]) for f in SEQ}
        r, _ = model_fn(cat["ids"], cat["mask"], cat["attention_mask"])
        rc, rr = _f32(r[:b]), _f32(r[b:])
        margin = _f32(batch["margin"]) if "margin" in batch else self.margin
        per = losses.reward_model_loss(rc, rr, margin=margin, center_coef=self.center_coef)
        return per.sum(), {"chosen_rewards": rc, "rejected_rewards": rr}

    def metrics(self, per_ex):
        return reward_metrics(per_ex["chosen_rewards"], per_ex["rejected_rewards"])


def reward_metrics(chosen_rewards, rejected_rewards) -> dict:
    """``accuracy`` (fraction of pairs with r_c > r_r, ties count 0), ``margin`` = mean(r_c − r_r),
    ``rewards/chosen`` and ``rewards/rejected`` (means) of a batch of reward-model scores."""
    rc, rr = _f32(chosen_rewards), _f32(rejected_rewards)
    return {"accuracy": (rc > rr).astype(jnp.float32).mean(), "margin": (rc - rr).mean(),
            "rewards/chosen": rc.mean(), "rewards/rejected": rr.mean()}


_BY_KIND = {"pairwise": Pairwise, "unpaired": Unpaired, "listwise": Listwise, "scored": Scored,
            "sampled": Sampled}


def make_objective(mode: str, loss: str | Any = "dpo", hparams: dict | None = None, *, mitigation: str = "none",
                   reference: str = "frozen"):
    """The objective for ``mode`` (``"sft"``, or the batch kind of the loss).

    ``loss``: anything :func:`jalign.losses.bind` takes — a registered name, a ``"logic:<name>[:<f>]"`` name,
    a loss object with a ``.spec`` (e.g. :func:`jalign.logic.as_loss`) or a bound loss; ``hparams`` are bound
    to it (validated here, once). ``mitigation="masked"`` (pairwise losses; rule: :func:`check_mitigation`):
    the loss and its in-step reference log-probs see only the contrasting span of each pair — the response
    masks without the common prefix and suffix of chosen and rejected
    (:func:`jalign.train.batch.contrastive_response_masks`), the token-masking mitigation of gradient
    entanglement. Metrics then report the masked log-probs.
    """
    if mode == "sft":
        check_mitigation(mitigation, "sft", reference=reference)
        return SFT()
    if mode == "reward":  # hparams: margin, center_coef (config section reward_model)
        if mitigation != "none":
            raise ValueError(f"loss.mitigation={mitigation!r} is not available in mode='reward' (use 'none')")
        return RewardPairs(**dict(hparams or {}))
    bound = loss if isinstance(loss, losses.BoundLoss) and not hparams else losses.bind(loss, **dict(hparams or {}))
    check_mitigation(mitigation, bound.kind, reference=reference)
    obj = _BY_KIND[bound.kind](bound)
    obj.masked = mitigation == "masked"
    return obj


def check_batch(objective, batch: dict, *, where: str = "batch") -> None:
    """Host-side validation of a numpy batch for ``objective``; raises ``ValueError`` naming the field and
    the first offending row (missing fields, inconsistent shapes, non-integer ids, a response mask outside
    the attention mask, empty responses, non-finite float fields)."""
    missing = [f for f in objective.fields if f not in batch]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing} for a {objective.kind} objective "
                         f"(needs {list(objective.fields)}, got {sorted(batch)})")
    n = None
    for f in (*objective.fields, *[o for o in objective.optional if o in batch]):
        v = np.asarray(batch[f])
        if v.ndim == 0:
            raise ValueError(f"{where}: field {f!r} is a scalar; expected a leading batch axis")
        if n is None:
            n, first = v.shape[0], f
        elif v.shape[0] != n:
            raise ValueError(f"{where}: field {f!r} has {v.shape[0]} rows but {first!r} has {n}")
        if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
            row = int(np.argwhere((~np.isfinite(v.reshape(n, -1))).any(-1))[0, 0])
            raise ValueError(f"{where}: field {f!r} is not finite at row {row}")
    prefixes = ("chosen_", "rejected_") if objective.kind in ("pairwise", "reward") else ("",)
    for p in prefixes:
        ids, mask, attn = (np.asarray(batch[f"{p}{f}"]) for f in SEQ)
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"{where}: field {p}ids must hold integer token ids, got dtype {ids.dtype}")
        if not (ids.shape == mask.shape == attn.shape):
            raise ValueError(f"{where}: {p}ids {ids.shape}, {p}mask {mask.shape} and {p}attention_mask "
                             f"{attn.shape} must have the same shape")
        if (ids < 0).any():
            raise ValueError(f"{where}: field {p}ids has a negative token id at row "
                             f"{int(np.argwhere(ids.reshape(ids.shape[0], -1) < 0)[0, 0])}")
        outside = (mask != 0) & (attn == 0)
        if outside.any():
            row = int(np.argwhere(outside.reshape(n, -1))[0, 0])
            raise ValueError(f"{where}: field {p}mask marks response tokens outside {p}attention_mask at row {row}")
        empty = (mask.reshape(-1, mask.shape[-1])[:, 1:] != 0).sum(-1) == 0
        if objective.kind == "listwise" and "list_mask" in batch:
            empty &= np.asarray(batch["list_mask"]).reshape(-1) != 0
        if empty.any():
            row = int(np.argwhere(empty)[0, 0])
            k = mask.shape[1] if mask.ndim == 3 else 1
            loc = f"row {row // k}" + (f", sample {row % k}" if mask.ndim == 3 else "")
            raise ValueError(f"{where}: field {p}mask has an empty response at {loc} (no scored token after "
                             "position 0)")
    if objective.kind == "pairwise" and getattr(objective, "masked", False):
        _check_masked(batch, where)


def _check_masked(batch: dict, where: str) -> None:
    """``mitigation='masked'``: contiguous response masks, no precomputed reference, a non-empty contrasting
    span on both sides of every pair."""
    _refuse_cached_masked(batch, where)
    for s in ("chosen", "rejected"):
        m = np.asarray(batch[f"{s}_mask"]) != 0
        starts = (m[:, 1:] & ~m[:, :-1]).sum(-1) + m[:, 0]
        if (starts > 1).any():
            row = int(np.argwhere(starts > 1)[0, 0])
            raise ValueError(f"{where}: mitigation 'masked' needs one contiguous response span per row; field "
                             f"{s}_mask has {int(starts[row])} spans at row {row}")
    masks = contrastive_response_masks(batch)
    for s in ("chosen", "rejected"):
        empty = (np.asarray(masks[f"{s}_mask"])[:, 1:] != 0).sum(-1) == 0
        if empty.any():
            row = int(np.argwhere(empty)[0, 0])
            raise ValueError(f"{where}: mitigation 'masked': the {s} response of pair {row} has no token outside "
                             "the common prefix/suffix of the pair (identical responses, or one extends the other)")
