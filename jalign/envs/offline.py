"""Offline (off-policy) alignment on a K-armed bandit: CoPG and its baselines, exactly and by sampling.

Data are pairs (y, y') with y ~ μ1 and y' ~ μ2 (fixed, arbitrary distributions) and, for the preference
methods, a label drawn from a preference model (Bradley–Terry by default). The policy is tabular softmax
initialised at π_ref. Methods (index = position in :data:`METHODS`):

* ``copg`` — :func:`jalign.losses.copg` on each unranked pair with the known rewards;
* ``ipo`` — IPO on the labelled pair: (h_wl − 1/(2τ))², h_wl = ln π(y_w)/π_ref(y_w) − ln π(y_l)/π_ref(y_l);
* ``pg_zero_baseline`` — :func:`jalign.losses.off_policy_pg` on both samples of the pair, b = 0;
* ``pg_value_baseline`` — the same with the exact value b = E_π[R] (a constant, as in the CoPG paper);
* ``pg_soft_value_baseline`` — the same with b = J_β(π) = E_π[R^π_β] (not in the paper: at π* this b equals
  β·ln Z, so π* is a fixed point of the expected gradient).

Everything is a pure function of PRNG keys and arrays: ``jax.vmap`` over seeds, methods (an int index),
β, τ, μ1, μ2 or bandits, and ``jax.jit`` of the whole training run (``lax.scan`` over epochs and steps).

The exact (population) loss :func:`expected_loss` weights all K² pairs by μ1(a)·μ2(b) (and, for IPO, both label
outcomes by P(a ≻ b)); its gradient is the expected stochastic gradient of a uniformly drawn pair.

IPO is the registered ``"ipo"`` loss on summed log-ratios (``ipo_average=False``; a bandit arm is one token),
wrapped by :func:`ipo_pair_loss`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jalign import losses
from jalign.envs.bandit import Bandit, check_probs, expected_reward, objective
from jalign.envs.data import sample_labelled_pairs
from jalign.envs.policies import tabular_init, tabular_logps
from jalign.envs.preferences import preference_matrix

METHODS = ("copg", "ipo", "pg_zero_baseline", "pg_value_baseline", "pg_soft_value_baseline")
PAPER_METHODS = METHODS[:4]


def method_index(method) -> int | jax.Array:
    """Index of a method name in :data:`METHODS` (ints and arrays pass through)."""
    if isinstance(method, str):
        if method not in METHODS:
            raise ValueError(f"argument method={method!r} must be one of {METHODS}")
        return METHODS.index(method)
    return method


def ipo_pair_loss(h, tau):
    """IPO's per-pair loss (h − 1/(2τ))² on the reference-corrected margin h (Azar et al., AISTATS 2024).

    Evaluated by the registered ``"ipo"`` loss (``ipo_average=False``) on a batch whose margin is ``h``.
    """
    h = jnp.asarray(h)
    zero = jnp.zeros_like(h)
    batch = losses.PairwiseLogps(chosen_logps=h, rejected_logps=zero, ref_chosen_logps=zero, ref_rejected_logps=zero)
    return losses.get("ipo")(batch, beta=tau, ipo_average=False, validate=False)


def pair_losses(method, logits_K, bandit: Bandit, a, b, p_a_wins, beta, ipo_tau):
    """Per-pair losses ``[n]`` of ``method`` (an index into :data:`METHODS`) on pairs (a, b).

    ``p_a_wins`` is the label for IPO: 1/0 for a sampled label, or P(a ≻ b) for the expected loss over labels.
    """
    logps = tabular_logps(logits_K)
    R, ref = bandit.rewards, bandit.ref_logps
    lp_a, lp_b = logps[a], logps[b]

    def _copg(_):
        return losses.copg(lp_a, ref[a], R[a], lp_b, ref[b], R[b], beta=beta)

    def _ipo(_):
        h = (lp_a - ref[a]) - (lp_b - ref[b])
        return p_a_wins * ipo_pair_loss(h, ipo_tau) + (1.0 - p_a_wins) * ipo_pair_loss(-h, ipo_tau)

    def _pg(baseline):
        return losses.off_policy_pg(
            jnp.stack([lp_a, lp_b], -1),
            jnp.stack([ref[a], ref[b]], -1),
            jnp.stack([R[a], R[b]], -1),
            beta=beta,
            baseline=baseline,
        )

    pi = jax.lax.stop_gradient(logps)
    value = expected_reward(pi, R)
    soft_value = objective(pi, R, ref, beta)
    branches = [
        _copg,
        _ipo,
        lambda _: _pg(0.0),
        lambda _: _pg(value),
        lambda _: _pg(soft_value),
    ]
    return jax.lax.switch(method, branches, None)


def batch_loss(method, logits_K, bandit: Bandit, a, b, p_a_wins, weights, beta, ipo_tau):
    """Weighted mean Σ w·ℓ / Σ w of :func:`pair_losses` (weights 0 mask padding)."""
    ell = pair_losses(method, logits_K, bandit, a, b, p_a_wins, beta, ipo_tau)
    return jnp.sum(weights * ell) / jnp.maximum(jnp.sum(weights), 1e-30)


def _all_pairs(k: int):
    a, b = jnp.meshgrid(jnp.arange(k), jnp.arange(k), indexing="ij")
    return a.reshape(-1), b.reshape(-1)


@functools.partial(jax.jit, static_argnames=("model",))
def _expected_loss(method, logits_K, bandit, mu1_K, mu2_K, beta, ipo_tau, scale, *, model):
    a, b = _all_pairs(bandit.num_arms)
    w = (jnp.asarray(mu1_K, jnp.float32)[:, None] * jnp.asarray(mu2_K, jnp.float32)[None, :]).reshape(-1)
    p = preference_matrix(bandit.rewards, model, scale=scale).reshape(-1)
    return batch_loss(method, logits_K, bandit, a, b, p, w, beta, ipo_tau)


_expected_grad = jax.jit(jax.grad(_expected_loss, argnums=1), static_argnames=("model",))


def expected_loss(method, logits_K, bandit: Bandit, mu1_K, mu2_K, beta, ipo_tau=1.0, model="bradley_terry",
                  scale=1.0):
    """E_{a~μ1, b~μ2, label}[ℓ(a, b)] computed exactly over the K² pairs (jitted; vmap-able)."""
    return _expected_loss(method_index(method), logits_K, bandit, mu1_K, mu2_K, beta, ipo_tau, scale, model=model)


def expected_gradient(method, logits_K, bandit: Bandit, mu1_K, mu2_K, beta, ipo_tau=1.0, model="bradley_terry",
                      scale=1.0):
    """∇_θ of :func:`expected_loss` (minus the expected ascent direction of the method)."""
    return _expected_grad(method_index(method), logits_K, bandit, mu1_K, mu2_K, beta, ipo_tau, scale, model=model)


def ipo_fixed_point(bandit: Bandit, mu1_K, mu2_K, tau, model="bradley_terry", scale=1.0):
    """ln π of IPO's population optimum for a tabular policy (analytic).

    With g = ln π/π_ref, the expected IPO loss is Σ_{a,b} μ1(a)μ2(b)·[P_ab(g_a − g_b − c)² +
    (1 − P_ab)(g_b − g_a − c)²], c = 1/(2τ), i.e. (up to a constant) the weighted least squares
    Σ_{a,b} μ1(a)μ2(b)·(g_a − g_b − t_ab)² with t_ab = (P_ab − ½)/τ. Setting its gradient to zero gives the
    graph-Laplacian system L·g = s, L = diag(W·1) − W, W = w + wᵀ (w_ab = μ1(a)μ2(b)), s_a = Σ_b W_ab·t_ab,
    solved up to the constant (irrelevant after normalisation); π = softmax(ln π_ref + g).
    """
    w = jnp.asarray(mu1_K, jnp.float32)[:, None] * jnp.asarray(mu2_K, jnp.float32)[None, :]
    W = w + w.T
    t = (preference_matrix(bandit.rewards, model, scale=scale) - 0.5) / tau
    L = jnp.diag(W.sum(1)) - W
    s = (W * t).sum(1)
    g = jnp.linalg.pinv(L) @ s
    return jax.nn.log_softmax(bandit.ref_logps + g)


def shuffle(key, n: int):
    """A uniformly random permutation of ``range(n)`` by two rounds of a packed single-operand sort.

    Each round sorts uint32 words holding fresh random bits in the high bits and the current position in the
    low ⌈log2 n⌉ bits (one sort of n words, no key–value sort: ~10–20× faster than
    ``jax.random.permutation`` on CPU). A pair of items keeps a non-random relative order only if its random
    bits tie in both rounds (probability 2^(−2·(32−⌈log2 n⌉)) per pair). Falls back to
    ``jax.random.permutation`` when n > 2^20.
    """
    bits = max(1, math.ceil(math.log2(max(n, 2))))
    if bits > 20:
        return jax.random.permutation(key, n)
    low = jnp.uint32((1 << bits) - 1)
    perm = jnp.arange(n, dtype=jnp.uint32)
    for k in jax.random.split(key, 2):
        words = (jax.random.bits(k, (n,), jnp.uint32) & ~low) | jnp.arange(n, dtype=jnp.uint32)
        perm = perm[jax.lax.sort(words) & low]
    return perm.astype(jnp.int32)


def _check_positive(name, v):
    if isinstance(v, jax.core.Tracer):
        return
    x = np.asarray(v)
    if np.issubdtype(x.dtype, np.number) and not (np.all(np.isfinite(x)) and np.all(x > 0)):
        raise ValueError(f"train: argument {name}={v!r} must be finite and > 0")


@functools.partial(jax.jit, static_argnames=("n_pairs", "batch_size", "epochs", "model"))
def _train(key, method, bandit, mu1_K, mu2_K, beta, ipo_tau, lr, scale, *, n_pairs, batch_size, epochs, model):
    k_data, k_shuffle = jax.random.split(key)
    a, b, wins = sample_labelled_pairs(k_data, mu1_K, mu2_K, bandit.rewards, n_pairs, model, scale=scale)
    k = bandit.num_arms
    # A tabular policy's minibatch loss depends on the pairs only through the counts of each distinct
    # (a, b, label) triple, so every step works on the 2K² categories weighted by their counts in the
    # minibatch: the same mean loss and gradient as looping over the 512 pairs, at a fraction of the cost.
    cat = (a * k + b) * 2 + wins.astype(jnp.int32)
    cat_ids = jnp.arange(2 * k * k)
    cat_a, cat_b, cat_win = cat_ids // (2 * k), (cat_ids // 2) % k, (cat_ids % 2).astype(jnp.float32)
    steps = math.ceil(n_pairs / batch_size)
    pad = steps * batch_size - n_pairs
    tx = optax.adam(lr)
    logits0 = tabular_init(bandit.ref_logps)
    grad_fn = jax.value_and_grad(batch_loss, argnums=1)

    def epoch(carry, ek):
        perm = shuffle(ek, n_pairs)
        idx = jnp.concatenate([perm, jnp.zeros((pad,), perm.dtype)])
        msk = jnp.concatenate([jnp.ones((n_pairs,)), jnp.zeros((pad,))])
        step_of = jnp.arange(steps * batch_size) // batch_size
        counts = jax.ops.segment_sum(msk, step_of * (2 * k * k) + cat[idx], num_segments=steps * 2 * k * k)
        counts = counts.reshape(steps, 2 * k * k)

        def step(c, w):
            params, opt = c
            loss, g = grad_fn(method, params, bandit, cat_a, cat_b, cat_win, w, beta, ipo_tau)
            upd, opt = tx.update(g, opt, params)
            return (optax.apply_updates(params, upd), opt), loss

        carry, batch_losses = jax.lax.scan(step, carry, counts)
        return carry, (tabular_logps(carry[0]), batch_losses.mean())

    (_, _), (logps_curve, loss_curve) = jax.lax.scan(
        epoch, (logits0, tx.init(logits0)), jax.random.split(k_shuffle, epochs)
    )
    logps_curve = jnp.concatenate([tabular_logps(logits0)[None], logps_curve], 0)
    return {"logps": logps_curve, "regret": bandit.regret(logps_curve, beta), "loss": loss_curve}


def train(key, method, bandit: Bandit, mu1_K, mu2_K, *, beta, ipo_tau=None, lr=1e-3, n_pairs=10_000,
          batch_size=512, epochs=100, model="bradley_terry", scale=1.0):
    """Train a tabular softmax policy (initialised at π_ref) offline with Adam; one seed, one method.

    Draws ``n_pairs`` pairs from μ1 × μ2 (and Bradley–Terry labels) once, then runs ``epochs`` epochs of
    ⌈n_pairs / batch_size⌉ steps over a fresh permutation each epoch (the last batch of an epoch is padded
    with zero-weight pairs, so every pair is used exactly once per epoch). Jitted end to end (``lax.scan``);
    vmap it over keys, method indices, β, τ, μ1, μ2 or bandits.

    Args:
      key: PRNG key (data, labels and shuffling).
      method: a name in :data:`METHODS` or its index (an int array under vmap).
      bandit: the :class:`~jalign.envs.Bandit`.
      mu1_K, mu2_K: the data distributions.
      beta: β > 0 of the objective J_β (and of CoPG and the PG rewards).
      ipo_tau: IPO's τ > 0 (default: β).
      lr: Adam learning rate.
      n_pairs, batch_size, epochs: data size and schedule (static).
      model, scale: preference model for the IPO labels.

    Returns:
      ``{"logps": [epochs+1, K], "regret": [epochs+1], "loss": [epochs]}``; index 0 is the initial policy.
    """
    for name, v in (("beta", beta), ("lr", lr), ("scale", scale)):
        _check_positive(name, v)
    if ipo_tau is None:
        ipo_tau = beta
    _check_positive("ipo_tau", ipo_tau)
    for name, v in (("n_pairs", n_pairs), ("batch_size", batch_size), ("epochs", epochs)):
        if int(v) < 1:
            raise ValueError(f"train: argument {name}={v!r} must be >= 1")
    if batch_size > n_pairs:
        raise ValueError(f"train: argument batch_size={batch_size} exceeds n_pairs={n_pairs}")
    if not isinstance(mu1_K, jax.core.Tracer):
        check_probs("train", "mu1_K", mu1_K, (bandit.num_arms,))
    if not isinstance(mu2_K, jax.core.Tracer):
        check_probs("train", "mu2_K", mu2_K, (bandit.num_arms,))
    return _train(key, method_index(method), bandit, mu1_K, mu2_K, beta, ipo_tau, lr, scale,
                  n_pairs=int(n_pairs), batch_size=int(batch_size), epochs=int(epochs), model=model)


@functools.partial(jax.jit, static_argnames=("steps", "record_every", "model"))
def _train_population(method, bandit, mu1_K, mu2_K, beta, ipo_tau, lr, scale, *, steps, record_every, model):
    tx = optax.adam(lr)
    logits0 = tabular_init(bandit.ref_logps)
    def step(c, _):
        params, opt = c
        g = _expected_grad(method, params, bandit, mu1_K, mu2_K, beta, ipo_tau, scale, model=model)
        upd, opt = tx.update(g, opt, params)
        return (optax.apply_updates(params, upd), opt), None

    def block(c, _):
        c, _ = jax.lax.scan(step, c, None, length=record_every)
        return c, tabular_logps(c[0])

    _, logps_curve = jax.lax.scan(block, (logits0, tx.init(logits0)), None, length=steps // record_every)
    logps_curve = jnp.concatenate([tabular_logps(logits0)[None], logps_curve], 0)
    return {"logps": logps_curve, "regret": bandit.regret(logps_curve, beta)}


def train_population(method, bandit: Bandit, mu1_K, mu2_K, *, beta, ipo_tau=None, lr=1e-3, steps=2000,
                     record_every=20, model="bradley_terry", scale=1.0):
    """Full-batch Adam on the exact :func:`expected_loss` (the infinite-data limit of :func:`train`).

    Returns ``{"logps": [steps//record_every + 1, K], "regret": [...]}`` recorded every ``record_every`` steps.
    """
    for name, v in (("beta", beta), ("lr", lr)):
        _check_positive(name, v)
    if ipo_tau is None:
        ipo_tau = beta
    _check_positive("ipo_tau", ipo_tau)
    if steps < 1 or record_every < 1 or steps % record_every:
        raise ValueError(f"train_population: steps={steps} must be a positive multiple of record_every={record_every}")
    return _train_population(method_index(method), bandit, mu1_K, mu2_K, beta, ipo_tau, lr, scale,
                             steps=int(steps), record_every=int(record_every), model=model)
