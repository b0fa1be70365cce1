"""Online pairwise preference optimisation: ``mode="online"`` with ``online.algorithm`` = ``"pairwise"`` or
``"nash_md"`` (docs/rl.md, "Online pairwise training").

One trainer step = one sampling round over the B prompts of the batch:

* ``pairwise`` (online IPO / DPO / SLiC, IPO-MD; Calandriello et al., 2024): two completions y₁, y₂ per prompt
  from the stop-gradient policy — or, with ``online.mixture_beta`` = β_mix > 0, from the token-level geometric
  mixture π_mix ∝ π^{1−β_mix}·μ^{β_mix} with the frozen reference μ (IPO-MD) — scored by ``online.reward``;
  a preference model labels each pair (:func:`preference_probs`, :func:`sample_labels`), the winner becomes
  ``chosen`` and the pair goes through the registered pairwise loss ``loss.name`` (``ipo``, ``dpo``/``sigmoid``,
  ``hinge``, ``slic``, …, with ``loss.hparams``) against the reference log-probs, as an offline batch would.
* ``nash_md`` (Munos et al., 2024, Nash-MD-PG): y ~ π and an opponent y' ~ π_mix, p = P(y ≻ y') from the
  preference model, and the policy-gradient surrogate :func:`jalign.losses.nash_md_pg` with β = ``online.kl_coef``.

Preference models over the reward r (``online.preference``): ``bradley_terry``: P(y₁ ≻ y₂) = σ((r₁ − r₂)/t)
with t = ``online.preference_temperature``, the label drawn from it (seeded by the trainer's key); ``judge``:
the hard comparison r₁ > r₂, ties broken by a fair coin (P = ½). Nash-MD uses p itself (the expected label).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jalign import losses
from jalign.errors import UserError
from jalign.train.batch import SEQ
from jalign.train.objectives import Pairwise

PAIR_ALGORITHMS = ("pairwise", "nash_md")
PREFERENCES = ("bradley_terry", "judge")


@dataclasses.dataclass(frozen=True)
class PairOptions:
    """The options of the online pairwise modes (config keys ``online.*`` of the same names)."""

    algorithm: str = "pairwise"
    mixture_beta: float = 0.0
    preference: str = "bradley_terry"
    preference_temperature: float = 1.0
    kl_coef: float = 0.0  # nash_md: β of the KL term
    num_samples: int = 2

    @classmethod
    def from_config(cls, online) -> PairOptions:
        return cls(**{f.name: online[f.name] for f in dataclasses.fields(cls)})


def check_options(o: PairOptions, *, loss_name: str, loss_hparams: dict, reference: str, mitigation: str) -> None:
    """The rules of the ``online.*`` keys of the pairwise modes; ``UserError`` naming the key."""

    def need(ok, key, value, what):
        if not ok:
            raise UserError(f"config {key}={value!r} must be {what}")

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    need(o.algorithm in PAIR_ALGORITHMS, "online.algorithm", o.algorithm, f"one of {PAIR_ALGORITHMS}")
    need(o.num_samples == 2, "online.num_samples", o.num_samples,
         f"2 with online.algorithm={o.algorithm!r} (one pair of completions per prompt)")
    need(number(o.mixture_beta) and 0 <= o.mixture_beta <= 1, "online.mixture_beta", o.mixture_beta,
         "a number in [0, 1] (weight of the reference in the geometric mixture; 0: sample from the policy)")
    need(o.preference in PREFERENCES, "online.preference", o.preference, f"one of {PREFERENCES}")
    need(number(o.preference_temperature) and o.preference_temperature > 0, "online.preference_temperature",
         o.preference_temperature, "a finite number > 0")
    need(reference == "frozen", "loss.reference", reference,
         f"'frozen' with online.algorithm={o.algorithm!r} (reference log-probs of fresh samples, and the mixture)")
    need(mitigation == "none", "loss.mitigation", mitigation, f"'none' with online.algorithm={o.algorithm!r}")
    if o.algorithm == "nash_md":
        need(number(o.kl_coef) and o.kl_coef >= 0, "online.kl_coef", o.kl_coef, "a finite number >= 0 (Nash-MD's β)")
        if loss_hparams:
            raise UserError(f"config loss.hparams {sorted(loss_hparams)} are not used with online.algorithm="
                            "'nash_md' (its β is online.kl_coef); remove them")
        return
    try:
        bound = losses.bind(loss_name)
    except (KeyError, ValueError) as e:
        raise UserError(f"config loss.name: {e.args[0]}") from None
    need(bound.kind == "pairwise", "loss.name", loss_name,
         f"a pairwise loss with online.algorithm='pairwise' (e.g. ipo, dpo, hinge, slic); this one is {bound.kind}")
    bad = sorted(set(loss_hparams) - set(bound.spec.hparams))
    if bad:
        raise UserError(f"config loss.hparams {bad} unknown for loss {bound.spec.name!r}; valid: "
                        f"{sorted(bound.spec.hparams)}")
    try:
        losses.bind(bound, **loss_hparams)
    except (TypeError, ValueError) as e:
        raise UserError(f"config loss.hparams: {e.args[0]}") from None


def preference_probs(r1, r2, *, preference: str = "bradley_terry", temperature: float = 1.0) -> np.ndarray:
    """P(y₁ ≻ y₂) ``[N]`` (float64) from rewards: ``bradley_terry``: σ((r₁ − r₂)/temperature) (as exp of
    log σ, stable for any gap); ``judge``: 1 if r₁ > r₂, 0 if r₁ < r₂, ½ on a tie."""
    r1, r2 = np.asarray(r1, np.float64), np.asarray(r2, np.float64)
    if preference == "bradley_terry":
        return np.exp(-np.logaddexp(0.0, -(r1 - r2) / temperature))
    if preference == "judge":
        return np.where(r1 > r2, 1.0, np.where(r1 < r2, 0.0, 0.5))
    raise ValueError(f"preference={preference!r} must be one of {PREFERENCES}")


def sample_labels(probs, key) -> np.ndarray:
    """Labels ``[N]`` (bool: y₁ wins) drawn with P(y₁ ≻ y₂) = ``probs``: 1[u < p], u ~ U[0, 1) from ``key``
    (a judge's ½ on a tie is a fair coin; 0 and 1 are certain)."""
    p = np.asarray(probs, np.float64)
    u = np.asarray(jax.random.uniform(key, p.shape, jnp.float32), np.float64)
    return u < p


def pair_batch(first: dict, second: dict, first_wins) -> dict[str, np.ndarray]:
    """The pairwise batch (``chosen_*`` / ``rejected_*`` ``[B, T]``) of two sampler outputs of B rows each:
    row i's winner (``first_wins[i]``: the first sample) is ``chosen``."""
    w = np.asarray(first_wins, bool)[:, None]
    a = {f: np.asarray(first[f]) for f in SEQ}
    b = {f: np.asarray(second[f]) for f in SEQ}
    out = {f"chosen_{f}": np.where(w, a[f], b[f]) for f in SEQ}
    out |= {f"rejected_{f}": np.where(w, b[f], a[f]) for f in SEQ}
    return out


def pair_metrics(r1, r2, probs, labels, *, prompt_len: int, samples=()) -> dict[str, float]:
    """Host metrics of a labelled round: ``preference/mean`` (mean P(y₁ ≻ y₂); Nash-MD: of the policy's sample
    over the mixture's), ``preference/label_rate`` (share of pairs labelled y₁ ≻ y₂), ``preference/tie_rate``
    (r₁ = r₂), ``reward/mean`` (over both samples), ``reward/first``, ``reward/second``, ``reward/gap``
    (mean |r₁ − r₂|) and ``completions/mean_length`` of ``samples``."""
    r1, r2 = np.asarray(r1, np.float64), np.asarray(r2, np.float64)
    out = {"preference/mean": float(np.mean(probs)), "preference/label_rate": float(np.mean(labels)),
           "preference/tie_rate": float(np.mean(r1 == r2)), "reward/mean": float(np.mean([r1.mean(), r2.mean()])),
           "reward/first": float(r1.mean()), "reward/second": float(r2.mean()),
           "reward/gap": float(np.abs(r1 - r2).mean())}
    if samples:
        lengths = np.concatenate([np.asarray(s["mask"])[:, prompt_len:].sum(-1) for s in samples])
        out["completions/mean_length"] = float(lengths.mean())
    return out


class OnlinePairwise(Pairwise):
    """:class:`jalign.train.objectives.Pairwise` on freshly sampled, labelled pairs; adds ``kl``: the mean
    log π(y)/μ(y) over both completions — the k1 Monte-Carlo estimate of KL(π‖μ) when they come from π
    (β_mix = 0); under the mixture (IPO-MD) an average log-ratio of mixture samples, not a KL."""

    def metrics(self, per_ex):
        m = super().metrics(per_ex)
        lr = jnp.concatenate([per_ex["chosen_logps"] - per_ex["ref_chosen_logps"],
                              per_ex["rejected_logps"] - per_ex["ref_rejected_logps"]])
        return m | {"kl": lr.mean()}


class NashMD:
    """Nash-MD-PG on completions y ~ π: ``ids``/``mask``/``attention_mask`` ``[B, T]`` and ``preference``
    ``[B]`` = P(y ≻ y'), y' the mixture's opponent; loss = mean :func:`jalign.losses.nash_md_pg` with β.

    Metrics: ``kl`` (mean log π(y)/μ(y): k1 estimate of KL(π‖μ)), ``score`` (mean P(y ≻ y')) and
    ``logps/mean``."""

    kind = "nash_md"
    fields = (*SEQ, "preference")
    optional: tuple[str, ...] = ()
    needs_reference = True

    def __init__(self, beta: float):
        self.beta = float(beta)

    def denominator(self, batch):
        return jnp.asarray(batch["ids"].shape[0], jnp.float32)

    def loss_sum(self, logps_fn, ref_logps_fn, batch):
        if ref_logps_fn is None:
            raise ValueError("online.algorithm='nash_md' needs a frozen reference (loss.reference='frozen')")
        logps, _ = logps_fn(batch["ids"], batch["mask"], batch["attention_mask"])
        ref = jax.lax.stop_gradient(ref_logps_fn(batch["ids"], batch["mask"], batch["attention_mask"])[0])
        p = jnp.asarray(batch["preference"], jnp.float32)
        per = losses.nash_md_pg(logps, ref, p, beta=self.beta)
        return per.sum(), {"logps": logps, "ref_logps": ref, "preference": p}

    def metrics(self, per_ex):
        return {"kl": (per_ex["logps"] - per_ex["ref_logps"]).mean(), "score": per_ex["preference"].mean(),
                "logps/mean": per_ex["logps"].mean()}


def make_objective(o: PairOptions, loss_name, loss_hparams: dict | None = None):
    """The objective of ``o.algorithm``: :class:`OnlinePairwise` over ``loss_name`` (a registered pairwise
    loss or loss object, bound to ``loss_hparams``) or :class:`NashMD` with β = ``o.kl_coef``."""
    if o.algorithm == "nash_md":
        return NashMD(o.kl_coef)
    bound = losses.bind(loss_name, **dict(loss_hparams or {}))
    if bound.kind != "pairwise":
        raise UserError(f"online.algorithm='pairwise' needs a pairwise loss; {bound.spec.name!r} is {bound.kind}")
    return OnlinePairwise(bound)


def sample_round(o: PairOptions, sampler, reward_fn, params, ref_params, model_state, prompt_ids, prompt_mask,
                 key, *, reward_kwargs: dict | None = None):
    """Sample, score and label one round on host prompts ``[B, P]``; return ``(batch, metrics)``.

    ``pairwise``: both completions from ``sampler`` with ``ref_params`` when ``o.mixture_beta`` > 0 (the
    mixture), one call on the prompts repeated twice; ``nash_md``: y from the policy, y' from the mixture.
    Labels (pairwise) are drawn with :func:`sample_labels` from ``fold_in(key, 1)``."""
    from jalign.train import online

    kw = dict(reward_kwargs or {})
    b, plen = prompt_ids.shape
    k_pair, k_label = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    if o.algorithm == "pairwise":
        ids2, mask2 = np.repeat(prompt_ids, 2, 0), np.repeat(prompt_mask, 2, 0)
        s = sampler(params, model_state, jnp.asarray(ids2), jnp.asarray(mask2), k_pair,
                    ref_params if o.mixture_beta > 0 else None)
        s = {f: np.asarray(v) for f, v in s.items()}
        first, second = ({f: v[i::2] for f, v in s.items()} for i in (0, 1))
    else:
        first = sampler(params, model_state, jnp.asarray(prompt_ids), jnp.asarray(prompt_mask), k_pair)
        second = sampler(params, model_state, jnp.asarray(prompt_ids), jnp.asarray(prompt_mask),
                         jax.random.fold_in(key, 2), ref_params)
        first, second = ({f: np.asarray(v) for f, v in x.items()} for x in (first, second))
    r1 = online.score(reward_fn, prompt_ids, first, **kw)
    r2 = online.score(reward_fn, prompt_ids, second, **kw)
    for r in (r1, r2):
        if r.shape != (b,) or not np.isfinite(r).all():
            raise UserError(f"the reward returned shape {r.shape} or a non-finite value (expected {b} finite "
                            "rewards); training stopped before the update")
    p = preference_probs(r1, r2, preference=o.preference, temperature=o.preference_temperature)
    if o.algorithm == "pairwise":
        labels = sample_labels(p, k_label)
        batch = pair_batch(first, second, labels)
    else:
        labels = p > 0.5
        batch = {f: first[f] for f in SEQ} | {"preference": p.astype(np.float32)}
    return batch, pair_metrics(r1, r2, p, labels, prompt_len=plen, samples=(first, second))
