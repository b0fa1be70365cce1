"""Training curves for compiled losses: an exactly solvable categorical toy and a model-agnostic trainer.

:func:`train_curves` takes any ``logps_fn(params) -> PairwiseLogps`` (a categorical policy here; a small LM's
sequence log-probs later) and any loss ``fn(batch, *, validate) -> [B]`` (a compiled structure or a
registered loss), runs Adam for a fixed number of steps, vmapped over seeds, and records the mean winner
and loser log-probs. Non-finite losses raise (training never silently continues on NaN).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jalign.losses import PairwiseLogps


@dataclasses.dataclass(frozen=True)
class CategoricalToy:
    """One prompt, a softmax policy π = softmax(z) over ``n_responses`` responses, preference pairs
    (chosen[k] ≻ rejected[k]). Responses in no pair are free to absorb probability mass.

    Attributes:
      n_responses: K.
      chosen, rejected: response indices of the pairs (equal length).
      init_scale: the initial logits are init_scale · N(0, 1) (per seed).
    """

    n_responses: int = 8
    chosen: tuple[int, ...] = (0, 1)
    rejected: tuple[int, ...] = (2, 3)
    init_scale: float = 0.5

    def __post_init__(self):
        if len(self.chosen) != len(self.rejected) or not self.chosen:
            raise ValueError("chosen and rejected must be non-empty and of equal length")
        for nm in ("chosen", "rejected"):
            idx = getattr(self, nm)
            if any(not 0 <= i < self.n_responses for i in idx):
                raise ValueError(f"{nm} indices must lie in [0, {self.n_responses}), got {idx}")
        if any(c == r for c, r in zip(self.chosen, self.rejected, strict=True)):
            raise ValueError("a pair's chosen and rejected responses must differ")

    def init(self, key) -> jax.Array:
        """Initial logits ``[K]``."""
        return self.init_scale * jax.random.normal(key, (self.n_responses,), jnp.float32)

    def logps(self, logits_K, ref_logits_K=None) -> PairwiseLogps:
        """The pairs' log-probs under softmax(logits); the reference is softmax(ref_logits) if given."""
        lp = jax.nn.log_softmax(logits_K)
        c, r = jnp.asarray(self.chosen), jnp.asarray(self.rejected)
        ref = None if ref_logits_K is None else jax.nn.log_softmax(jax.lax.stop_gradient(ref_logits_K))
        return PairwiseLogps(
            chosen_logps=lp[c],
            rejected_logps=lp[r],
            ref_chosen_logps=None if ref is None else ref[c],
            ref_rejected_logps=None if ref is None else ref[r],
        )


@dataclasses.dataclass(frozen=True)
class LogLinearToy(CategoricalToy):
    """A log-linear policy π(y) ∝ exp(θ·φ(y)) with shared features, so moving one response moves others
    (the regime of likelihood displacement). φ is fixed by ``feature_seed``: rows are N(0, I_d) and each
    rejected response's features are ``similarity·φ(chosen) + sqrt(1 − similarity²)·noise``.

    Attributes (besides :class:`CategoricalToy`'s):
      dim: feature dimension d (the parameters θ are ``[d]``).
      similarity: correlation of a pair's chosen and rejected features, in [0, 1).
      feature_seed: seed of the features.
    """

    dim: int = 8
    similarity: float = 0.6
    feature_seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.similarity < 1:
            raise ValueError(f"similarity must lie in [0, 1), got {self.similarity}")
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")

    def features(self) -> np.ndarray:
        """φ, ``[K, d]``."""
        rng = np.random.default_rng(self.feature_seed)
        phi = rng.normal(size=(self.n_responses, self.dim))
        c, r = list(self.chosen), list(self.rejected)
        phi[r] = self.similarity * phi[c] + np.sqrt(1 - self.similarity**2) * phi[r]
        return phi.astype(np.float32)

    def init(self, key) -> jax.Array:
        """Initial θ ``[d]``."""
        return self.init_scale * jax.random.normal(key, (self.dim,), jnp.float32)

    def logps(self, theta_D, ref_theta_D=None) -> PairwiseLogps:
        phi = jnp.asarray(self.features())
        ref = None if ref_theta_D is None else phi @ ref_theta_D
        return super().logps(phi @ theta_D, ref)


def train_curves(
    loss_fn: Callable[..., Any],
    logps_fn: Callable[[Any], PairwiseLogps],
    init_fn: Callable[[jax.Array], Any],
    seeds: Sequence[int],
    *,
    steps: int = 1000,
    learning_rate: float = 0.05,
) -> dict[str, np.ndarray]:
    """Adam on mean(loss_fn(logps_fn(params))) for ``steps`` steps, vmapped over ``seeds``.

    Args:
      loss_fn: ``fn(batch, *, validate) -> [B]`` (compiled structure or registered loss).
      logps_fn: ``params -> PairwiseLogps`` of the training pairs (differentiable in params).
      init_fn: ``key -> params`` (the initial parameters of a seed).
      seeds: integer seeds (vmapped).
      steps: optimisation steps.
      learning_rate: Adam step size.

    Returns:
      ``{"loss", "chosen_logps", "rejected_logps"}``, each ``[S, steps + 1]`` (row s = seed s; column 0 is
      the initial state; log-probs are means over the pairs).

    Raises:
      FloatingPointError: if any loss or log-prob became non-finite (naming seed and step).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    opt = optax.adam(learning_rate)

    def objective(p):
        b = logps_fn(p)
        return jnp.mean(loss_fn(b, validate=False)), b

    def run(key):
        params = init_fn(key)
        state = opt.init(params)

        def step(carry, _):
            params, state = carry
            (loss, b), g = jax.value_and_grad(objective, has_aux=True)(params)
            upd, state = opt.update(g, state, params)
            params = optax.apply_updates(params, upd)
            return (params, state), (loss, b.chosen_logps.mean(), b.rejected_logps.mean())

        (params, _), (loss, cw, cl) = jax.lax.scan(step, (params, state), None, length=steps)
        last_loss, b = objective(params)
        cat = lambda h, x: jnp.concatenate([h, x[None]])
        return cat(loss, last_loss), cat(cw, b.chosen_logps.mean()), cat(cl, b.rejected_logps.mean())

    keys = jnp.stack([jax.random.key_data(jax.random.key(int(s))) for s in seeds])
    loss, cw, cl = jax.jit(jax.vmap(lambda k: run(jax.random.wrap_key_data(k))))(keys)
    out = {"loss": np.asarray(loss), "chosen_logps": np.asarray(cw), "rejected_logps": np.asarray(cl)}
    for name, arr in out.items():
        bad = ~np.isfinite(arr)
        if bad.any():
            s, t = (int(i) for i in np.argwhere(bad)[0])
            raise FloatingPointError(f"training produced a non-finite {name} at seed {seeds[s]}, step {t}")
    return out


def train_structures(
    structures: Sequence[Any],
    logps_fn: Callable[[Any], PairwiseLogps],
    params: Any,
    *,
    steps: int,
    learning_rate: float,
    f: str = "logistic",
    beta: float = 1.0,
    length_normalize: bool = False,
    grad_clip: float = 0.0,
    data: Any = None,
) -> dict[str, np.ndarray]:
    """Train one copy of ``params`` per preference structure with ONE compiled training loop.

    The structures' ✓ / ✗ world sets enter the compiled loop as data (:func:`jalign.logic.compile.rho_from_masks`),
    so any number of structures over the same variables costs a single compilation (the loop is ``lax.scan``
    over Adam steps on the full, fixed set of pairs returned by ``logps_fn``). The loss of structure s is
    mean_b f(ρ_s(b)) exactly as :func:`jalign.logic.as_loss` (``f``, ``beta``, ``length_normalize``) computes it.

    Args:
      structures: :class:`PreferenceStructure` objects sharing their variables (names in
        :data:`jalign.logic.DEFAULT_FIELDS`).
      logps_fn: ``params -> PairwiseLogps`` of the training pairs (with ``chosen_lengths`` /
        ``rejected_lengths`` when ``length_normalize``); e.g. a language model's summed response log-probs.
      params: the initial parameters (a pytree; every structure starts from them).
      steps: Adam steps.
      learning_rate: Adam step size (> 0).
      f, beta: as in :func:`jalign.logic.compile`.
      length_normalize: weight variables by exp(log π/|y|) (see :mod:`jalign.logic.loss`).
      grad_clip: global-norm clipping threshold before Adam (0 disables).
      data: seeds, batched. When given (a pytree whose leaves share a leading axis of length R, e.g. R draws of
        the training pairs), ``logps_fn`` is called as ``logps_fn(params, data_r)`` and every structure is
        trained once per r, all r in one program (``jax.vmap`` of the training loop over that axis; run r equals
        the unbatched run with ``logps_fn(·, data_r)`` up to float round-off).

    Returns:
      ``{"loss", "chosen_logps", "rejected_logps"}``, each ``[S, steps + 1]`` (row s = structure s, column 0
      the initial state; log-probs are ``logps_fn``'s means over the pairs, not normalised); with ``data``
      each is ``[S, R, steps + 1]``.

    Raises:
      FloatingPointError: a non-finite loss or log-prob (naming the structure and the step).
    """
    from jalign.logic.compile import DEFAULT_FIELDS, F_FORMULAS, _apply_f, _check_structure, rho_from_masks
    from jalign.logic.loss import _LENGTH_FIELD

    structures = list(structures)
    if not structures:
        raise ValueError("structures is empty")
    vs = structures[0].variables
    for s in structures:
        _check_structure(s)
        if s.variables != vs:
            raise ValueError(f"all structures must share variables {vs}; {s} has {s.variables}")
    unknown = [v for v in vs if v not in DEFAULT_FIELDS]
    if unknown:
        raise ValueError(f"variables {unknown} have no PairwiseLogps field; known: {sorted(DEFAULT_FIELDS)}")
    if f not in F_FORMULAS:
        raise ValueError(f"unknown f={f!r}; valid: {', '.join(F_FORMULAS)}")
    if not (isinstance(beta, (int, float)) and np.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be finite and > 0, got beta={beta!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if grad_clip < 0:
        raise ValueError(f"grad_clip must be >= 0 (0 disables), got {grad_clip}")
    opt = optax.adam(learning_rate)
    if grad_clip > 0:
        opt = optax.chain(optax.clip_by_global_norm(grad_clip), opt)
    chk = jnp.asarray(np.stack([s.check_mask for s in structures]))
    crs = jnp.asarray(np.stack([s.cross_mask for s in structures]))

    def logw(b):
        cols = []
        for v in vs:
            x = getattr(b, DEFAULT_FIELDS[v])
            if x is None:
                raise ValueError(f"variable {v!r}: logps_fn returned no {DEFAULT_FIELDS[v]!r}")
            if length_normalize:
                n = getattr(b, _LENGTH_FIELD[v])
                if n is None:
                    raise ValueError(f"length_normalize=True: logps_fn returned no {_LENGTH_FIELD[v]!r}")
                x = x / n
            cols.append(x)
        return jnp.stack(cols, -1)

    def objective(p, c, x, d):
        b = logps_fn(p) if d is None else logps_fn(p, d)
        return jnp.mean(_apply_f(f, rho_from_masks(logw(b), c, x), float(beta))), b

    def run(p0, c, x, d):
        def step(carry, _):
            p, st = carry
            (loss, b), g = jax.value_and_grad(objective, has_aux=True)(p, c, x, d)
            upd, st = opt.update(g, st, p)
            return (optax.apply_updates(p, upd), st), (loss, b.chosen_logps.mean(), b.rejected_logps.mean())

        (p, _), (loss, cw, cl) = jax.lax.scan(step, (p0, opt.init(p0)), None, length=steps)
        last, b = objective(p, c, x, d)
        cat = lambda h, v: jnp.concatenate([h, v[None]])  # noqa: E731
        return cat(loss, last), cat(cw, b.chosen_logps.mean()), cat(cl, b.rejected_logps.mean())

    if data is None:
        run_j = jax.jit(run)
    else:
        sizes = {int(np.shape(v)[0]) if np.ndim(v) else -1 for v in jax.tree.leaves(data)}
        if len(sizes) != 1 or min(sizes) < 1:
            raise ValueError(f"data: every leaf needs the same leading (seed) axis, got lengths {sorted(sizes)}")
        run_j = jax.jit(jax.vmap(run, in_axes=(None, None, None, 0)))
    rows = [run_j(params, chk[i], crs[i], data) for i in range(len(structures))]
    out = {k: np.stack([np.asarray(r[j]) for r in rows]) for j, k in enumerate(("loss", "chosen_logps",
                                                                                "rejected_logps"))}
    for name, arr in out.items():
        bad = ~np.isfinite(arr)
        if bad.any():
            idx = [int(i) for i in np.argwhere(bad)[0]]
            s, t = idx[0], idx[-1]
            where = "" if data is None else f", seed index {idx[1]}"
            raise FloatingPointError(f"training produced a non-finite {name} for structure {structures[s]} "
                                     f"(index {s}{where}) at step {t}")
    return out
