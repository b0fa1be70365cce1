"""The unconstrained-features model of likelihood displacement (Razin et al., ICLR 2025, arXiv 2410.08847).

A single prompt with a free hidden embedding h ∈ R^d and a free unembedding W ∈ R^{V×d}; π = softmax(W h).
The loss L = ℓ(ln π(y+), ln π(y−)) is a pairwise margin loss of the two log-probs with partial derivatives
a = ∂L/∂ln π(y+), b = ∂L/∂ln π(y−) (for ℓ(ln π+ − ln π−): a = ℓ', b = −ℓ'). Under gradient flow
dθ/dt = −∇_θ L, with W̄ = Σ_z π_z W_z and the Gram of log-prob gradients

    K_{zy} = ⟨∇ ln π_z, ∇ ln π_y⟩ = ⟨W_z − W̄, W_y − W̄⟩ + ‖h‖²·(1[z=y] − π_z − π_y + ‖π‖²),

every token's log-prob moves as d/dt ln π_z = −(a·K_{z+} + b·K_{z−}). For margin losses (b = −a = −ℓ'):

* Theorem 4 (z = y+): d/dt ln π+ = −ℓ'·[ m − (1 − π+ + π−)⟨W+, W−⟩ − Σ_{z∉{+,−}} π_z⟨W_z, W+ − W−⟩ ],
  m = (1 − π+)‖W+‖² + π−‖W−‖² + (1 − π+ + π−)‖h‖²;
* Theorem 5 (z ∉ {+, −}): d/dt ln π_z = −ℓ'·[ ⟨W_z, W+ − W−⟩ − ⟨W̄, W+ − W−⟩ − (π+ − π−)‖h‖² ]: the
  tokens that gain are ordered by ⟨W_z, W+ − W−⟩ (the rest does not depend on z).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = Any


def _check(h: Array, W: Array, pos: int, neg: int) -> None:
    if jnp.ndim(h) != 1 or jnp.ndim(W) != 2 or jnp.shape(W)[1] != jnp.shape(h)[0]:
        raise ValueError(f"need h [d] and W [V, d]; got h {jnp.shape(h)} and W {jnp.shape(W)}")
    V = jnp.shape(W)[0]
    for name, t in (("pos", pos), ("neg", neg)):
        if not (0 <= int(t) < V):
            raise ValueError(f"{name}={t} is not a token of the vocabulary [0, {V})")
    if int(pos) == int(neg):
        raise ValueError(f"pos and neg must differ, both are {pos}")


def ufm_logprobs(h: Array, W: Array) -> jax.Array:
    """ln π(·) = log_softmax(W h), ``[V]``."""
    return jax.nn.log_softmax(W @ h)


def logprob_gradient_gram(h: Array, W: Array) -> jax.Array:
    """K_{zy} = ⟨∇_{(h,W)} ln π_z, ∇_{(h,W)} ln π_y⟩ for all token pairs, ``[V, V]`` (closed form)."""
    p = jnp.exp(ufm_logprobs(h, W))
    Wc = W - p @ W  # W_z − W̄
    V = W.shape[0]
    return Wc @ Wc.T + (h @ h) * (jnp.eye(V) - p[:, None] - p[None, :] + p @ p)


def token_logprob_derivatives(h: Array, W: Array, pos: int, neg: int, a: Array, b: Array) -> jax.Array:
    """Exact d/dt ln π_z for every token z under gradient flow on L with ∂L/∂ln π+ = a, ∂L/∂ln π− = b."""
    _check(h, W, pos, neg)
    K = logprob_gradient_gram(h, W)
    return -(a * K[:, pos] + b * K[:, neg])


def theorem4_derivative(h: Array, W: Array, pos: int, neg: int, loss_grad: Array) -> jax.Array:
    """Theorem 4's d/dt ln π(y+) for L = ℓ(ln π+ − ln π−), ``loss_grad`` = ℓ' at the current margin.

    Written term by term as in the paper (independently of :func:`logprob_gradient_gram`).
    """
    _check(h, W, pos, neg)
    p = jnp.exp(ufm_logprobs(h, W))
    Wp, Wn = W[pos], W[neg]
    pp, pn = p[pos], p[neg]
    m = (1 - pp) * (Wp @ Wp) + pn * (Wn @ Wn) + (1 - pp + pn) * (h @ h)
    others = jnp.ones(W.shape[0]).at[pos].set(0.0).at[neg].set(0.0)
    rest = jnp.sum(others * p * (W @ (Wp - Wn)))
    return -loss_grad * (m - (1 - pp + pn) * (Wp @ Wn) - rest)


def theorem5_scores(W: Array, pos: int, neg: int) -> jax.Array:
    """⟨W_z, W+ − W−⟩ for every token z, ``[V]``: Theorem 5's ordering of which tokens gain mass."""
    return W @ (W[pos] - W[neg])


def predicted_gaining_tokens(h: Array, W: Array, pos: int, neg: int, loss_grad: Array) -> jax.Array:
    """Boolean ``[V]``: tokens z ∉ {y+, y−} whose ln π_z increases (Theorem 5, first order).

    d/dt ln π_z = −ℓ'·[⟨W_z, W+ − W−⟩ − ⟨W̄, W+ − W−⟩ − (π+ − π−)‖h‖²].
    """
    _check(h, W, pos, neg)
    p = jnp.exp(ufm_logprobs(h, W))
    d = W[pos] - W[neg]
    rate = -loss_grad * (W @ d - (p @ W) @ d - (p[pos] - p[neg]) * (h @ h))
    others = jnp.ones(W.shape[0], bool).at[pos].set(False).at[neg].set(False)
    return others & (rate > 0)


def margin_loss(name: str, ref_chosen: float = 0.0, ref_rejected: float = 0.0, **hparams: Any) -> Callable:
    """A registry pairwise loss as ``fn(chosen_logp, rejected_logp) -> scalar`` for the simulator."""
    from jalign import losses

    fn = losses.get(name)
    s = losses.spec(name)
    if s.kind != "pairwise":
        raise ValueError(f"loss {name!r} is not pairwise (kind={s.kind!r})")

    def loss(lw: Array, ll: Array) -> jax.Array:
        lw, ll = jnp.reshape(lw, (1,)), jnp.reshape(ll, (1,))
        batch = losses.PairwiseLogps(
            lw, ll, jnp.full((1,), ref_chosen, lw.dtype), jnp.full((1,), ref_rejected, lw.dtype),
            jnp.ones((1,), lw.dtype), jnp.ones((1,), lw.dtype),
        )
        return fn(batch, validate=False, **hparams)[0]

    return loss


def ufm_simulate(
    h: Array,
    W: Array,
    pos: int,
    neg: int,
    loss_fn: Callable[[Array, Array], Array],
    *,
    lr: float = 1e-2,
    steps: int = 100,
) -> dict[str, jax.Array]:
    """Gradient descent on L = loss_fn(ln π(y+), ln π(y−)) over the free (h, W).

    Returns ``logprobs`` ``[steps + 1, V]`` (ln π of every token along the run) and the final ``h``, ``W``.
    """
    _check(h, W, pos, neg)
    return _simulate(jnp.asarray(h), jnp.asarray(W), int(pos), int(neg), loss_fn, lr, int(steps))


@functools.partial(jax.jit, static_argnames=("pos", "neg", "loss_fn", "steps"))
def _simulate(h, W, pos, neg, loss_fn, lr, steps):
    def L(hw):
        lp = ufm_logprobs(*hw)
        return loss_fn(lp[pos], lp[neg])

    g = jax.grad(L)

    def step(hw, _):
        gh, gW = g(hw)
        new = (hw[0] - lr * gh, hw[1] - lr * gW)
        return new, ufm_logprobs(*new)

    (hT, WT), traj = jax.lax.scan(step, (h, W), None, length=steps)
    return {"logprobs": jnp.concatenate([ufm_logprobs(h, W)[None], traj]), "h": hT, "W": WT}
