"""An exactly analysable toy for gradient entanglement: a log-linear autoregressive policy.

π_θ(y_t | y_{t−1}) = softmax(W φ(y_{t−1}) + b), with a *fixed* feature table φ: V → R^d and learnable
W ∈ R^{V×d} (and optionally a bias b ∈ R^V). The first context is the prompt token. Then, exactly,

    ∇_W log π(y|x) = Σ_t (e_{y_t} − p_t) φ_tᵀ,     ∇_b log π(y|x) = Σ_t (e_{y_t} − p_t),

so ⟨g_w, g_l⟩ = Σ_{t,s} ⟨e_{y_t} − p_t, e_{y'_s} − p'_s⟩·(⟨φ_t, φ'_s⟩ + 1[bias]) — the same
"α_{ts} × hidden inner product" structure as Razin et al.'s Theorem 6. With all features equal the model is
a context-free (unigram) softmax, where g_w − g_l = e_A − e_B for responses differing only in their first
token, and DPO's chosen log-prob falls iff |y|·(p_A − p_B) > 1.

:func:`suffix_experiment` is the shared-suffix design of Yuan et al. (chosen = A s…s, rejected = B s…s,
with B's features aligned with the suffix contexts): DPO lets both log-probs fall, the pairwise-normalised
update and the token-masked margin keep the chosen log-prob rising.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jalign.diagnostics import entanglement as ent


@dataclasses.dataclass(eq=False)
class LogLinearToy:
    """The toy policy with a fixed feature table ``features_VxD`` (hashable by identity, so its bound
    methods can be passed to jitted diagnostics as ``logp_fn``).

    Examples are dicts of ``[T]`` arrays: ``context`` (token preceding each position; the prompt token
    first), ``tokens`` (response tokens) and ``mask`` (1 on response positions).
    """

    features_VxD: Any
    bias: bool = False

    @property
    def vocab(self) -> int:
        return int(np.shape(self.features_VxD)[0])

    def init(self, scale: float = 0.0, key: Any = None) -> dict[str, jax.Array]:
        V, d = np.shape(self.features_VxD)
        W = jnp.zeros((V, d)) if key is None else scale * jax.random.normal(key, (V, d))
        params = {"W": W}
        if self.bias:
            params["b"] = jnp.zeros((V,))
        return params

    def logits(self, params: dict, context_T: jax.Array) -> jax.Array:
        phi_TxD = jnp.asarray(self.features_VxD, params["W"].dtype)[context_T]
        out = phi_TxD @ params["W"].T
        return out + params["b"] if "b" in params else out

    def token_logps(self, params: dict, example: dict) -> jax.Array:
        """Per-position log π(y_t | y_{t−1}), zero where ``mask`` is 0; ``[T]``."""
        logits_TxV = self.logits(params, example["context"])
        picked = jnp.take_along_axis(logits_TxV, example["tokens"][:, None], axis=-1)[:, 0]
        return (picked - jax.nn.logsumexp(logits_TxV, axis=-1)) * example["mask"]

    def logp(self, params: dict, example: dict) -> jax.Array:
        """Sequence log-probability Σ_t mask_t log π(y_t | y_{t−1})."""
        return self.token_logps(params, example).sum()

    def closed_form_grad(self, params: dict, example: dict) -> dict[str, np.ndarray]:
        """∇ log π(y|x) in closed form (numpy float64), for checking autodiff-free."""
        W = np.asarray(params["W"], np.float64)
        F = np.asarray(self.features_VxD, np.float64)
        ctx, tok, m = (np.asarray(example[k]) for k in ("context", "tokens", "mask"))
        logits = F[ctx] @ W.T + (np.asarray(params["b"], np.float64) if "b" in params else 0.0)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        r = (np.eye(self.vocab)[tok] - p) * m[:, None]  # [T, V]
        out = {"W": r.T @ F[ctx]}
        if "b" in params:
            out["b"] = r.sum(0)
        return out


def make_example(prompt_token: int, response: list[int], length: int) -> dict[str, np.ndarray]:
    """A right-padded toy example: contexts (prompt then response[:-1]), tokens and mask, each ``[length]``."""
    n = len(response)
    if n == 0:
        raise ValueError("make_example: response is empty")
    if n > length:
        raise ValueError(f"make_example: response has {n} tokens but length is {length}")
    ctx = np.zeros(length, np.int32)
    tok = np.zeros(length, np.int32)
    mask = np.zeros(length, np.float32)
    ctx[:n] = [prompt_token, *response[:-1]]
    tok[:n] = response
    mask[:n] = 1.0
    return {"context": ctx, "tokens": tok, "mask": mask}


def stack(examples: list[dict]) -> dict[str, jax.Array]:
    """Batch examples on axis 0."""
    return {k: jnp.stack([jnp.asarray(e[k]) for e in examples]) for k in examples[0]}


def suffix_design(suffix_len: int = 8) -> tuple[LogLinearToy, dict, dict]:
    """Yuan et al.'s shared-suffix design on the toy.

    Vocabulary {x=0, A=1, B=2, s=3, u=4, v=5}; chosen = A sᵏ, rejected = B sᵏ after prompt x. Features:
    φ(x) = e₁, φ(A) = e₂, φ(B) = φ(s) = e₃ (the rejected token "looks like" the suffix contexts), φ(u) = φ(v)
    = (e₁ + e₂)/√2. At W = 0 DPO's first-order changes are, with q = 1/V,
    Δlog π_w ∝ 1 + (1 − q) − (k − 1)(1 − q) and Δlog π_l ∝ −1 − k(1 − q): both fall once k ≥ 4.

    Returns:
      ``(toy, chosen, rejected)`` with ``chosen`` / ``rejected`` batched examples of one pair.
    """
    if suffix_len < 0:
        raise ValueError(f"suffix_len must be >= 0, got {suffix_len}")
    F = np.zeros((6, 3), np.float32)
    F[0, 0] = 1.0
    F[1, 1] = 1.0
    F[2, 2] = F[3, 2] = 1.0
    F[4] = F[5] = np.array([1.0, 1.0, 0.0]) / np.sqrt(2.0)
    toy = LogLinearToy(F)
    T = suffix_len + 1
    chosen = stack([make_example(0, [1] + [3] * suffix_len, T)])
    rejected = stack([make_example(0, [2] + [3] * suffix_len, T)])
    return toy, chosen, rejected


def suffix_experiment(
    method: str = "dpo",
    *,
    suffix_len: int = 8,
    steps: int = 30,
    lr: float = 0.5,
    loss: str = "dpo",
    **hparams: Any,
) -> dict[str, list[float]]:
    """Train the toy on the shared-suffix pair and record the log-prob curves.

    Methods:
      ``"dpo"``: gradient descent on the margin loss ``loss`` (θ ← θ − lr·(a g_w + b g_l));
      ``"normalized"``: the pairwise-normalised step θ ← θ + lr·s·(g_w/‖g_w‖ − g_l/‖g_l‖), s = (b − a)/2
      (= βσ(−βh) for DPO, so the step size follows the loss's weighting);
      ``"masked"``: gradient descent on the loss of the *token-masked* log-probs (common prefix / suffix
      dropped by :func:`jalign.diagnostics.contrastive_token_masks`; reference log-probs masked the same way).

    Returns:
      dict of per-step lists (``steps + 1`` entries): ``chosen_logps``, ``rejected_logps`` (full sequences),
      ``cosine`` (of the full-sequence gradients), and ``case`` (the first-order case code of the step taken
      by plain DPO at that point).
    """
    if method not in ("dpo", "normalized", "masked"):
        raise ValueError(f"method must be 'dpo', 'normalized' or 'masked', got {method!r}")
    from jalign.losses import PairwiseLogps

    toy, chosen, rejected = suffix_design(suffix_len)
    params = toy.init()
    if method == "masked":
        kw, kl = ent.contrastive_token_masks(chosen["tokens"], rejected["tokens"], chosen["mask"], rejected["mask"])
        ch_m, rj_m = {**chosen, "mask": kw}, {**rejected, "mask": kl}
    else:
        ch_m, rj_m = chosen, rejected
    vlogp = jax.vmap(toy.logp, in_axes=(None, 0))
    ref_w, ref_l = vlogp(params, ch_m), vlogp(params, rj_m)

    def batch_of(lw, ll):
        n = jnp.ones_like(lw) * suffix_len + 1
        return PairwiseLogps(lw, ll, ref_w, ref_l, n, n)

    fn = ent.margin_loss(loss, hparams)  # hyperparameters validated once, outside the trace
    weights = lambda lw, ll: ent.loss_weights(fn, batch_of(lw, ll))
    c0 = jax.tree.map(lambda x: x[0], ch_m)
    r0 = jax.tree.map(lambda x: x[0], rj_m)
    vg = jax.value_and_grad(toy.logp)

    def step(params, _):
        full = ent.pairwise_gradient_stats(toy.logp, params, chosen, rejected)
        a_f, b_f = weights(full.chosen_logps, full.rejected_logps)
        case = ent.entanglement_condition(full, a_f, b_f)["case"][0]
        rec = (full.chosen_logps[0], full.rejected_logps[0], full.cosine[0], case)
        (lw, gw), (ll, gl) = vg(params, c0), vg(params, r0)
        a, b = weights(lw[None], ll[None])
        a, b = a[0], b[0]
        if method == "normalized":
            d = ent.pairwise_normalized_direction(gw, gl)
            new = jax.tree.map(lambda p, x: p + lr * 0.5 * (b - a) * x, params, d)
        else:
            new = jax.tree.map(lambda p, x, y: p - lr * (a * x + b * y), params, gw, gl)
        return new, rec

    # steps + 1 records: the state before each of the `steps` updates and the final state.
    _, (lw, ll, cos, case) = jax.jit(lambda p: jax.lax.scan(step, p, None, length=steps + 1))(params)
    return {
        "chosen_logps": [float(x) for x in lw],
        "rejected_logps": [float(x) for x in ll],
        "cosine": [float(x) for x in cos],
        "case": [int(x) for x in case],
    }
