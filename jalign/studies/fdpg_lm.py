"""f-DPG on a causal LM: byte strings sampled from BOS, a word constraint, and a one-compile trainer.

Sample space (:class:`LMSpace`): the continuations x = (x_1..x_T) of a lone BOS token, exactly T tokens each
(no early stop), so a(x) = Π_t a(x_t | BOS, x_<t) is a distribution over V^T whose log-probability is one
forward pass. The feature is φ(x) = b(x) = 1 iff x contains a given word (:func:`word_indicator`).

Targets (GDC, Khalifa et al. 2021, as in f-DPG): both constraints are exponential tilts of the base model a
by φ, log P(x) = log a(x) + λ·φ(x) (:func:`jalign.fdpg.targets.exponential_target_logps`):

* pointwise, p ∝ a·b_ε with b_ε = max(b, ε): log b_ε = λ_ε·(b − 1) with λ_ε = −log ε, i.e. the tilt λ = λ_ε
  up to a constant absorbed in Z. ε > 0 keeps KL(π‖p) finite (reverse KL has f'(∞) = ∞, so a hard zero of
  p makes it infinite for every π that writes one string without the word); with ε = e^{−10} the smoothed p
  differs from a·b/Z by TV = (1−r)ε / (r + (1−r)ε) for base rate r (≈ 2e-3 at r = 2%).
* distributional, p ∝ a·exp(λ·φ) with λ fitted so that E_p[φ] = μ̄
  (:func:`jalign.fdpg.targets.fit_lambda_is` on samples of a).

So one compiled program serves both targets and every divergence (:class:`FDPGLMTrainer`): λ, the divergence
(index into a tuple, ``lax.switch`` over the f-DPG surrogates) and the proposal mode are traced arguments.

Estimates (samples of the proposal q, self-normalised IS weights w ∝ π/q; on-policy w = 1), per step:
E_π[φ], H(π) = E_π[−log π], KL(π‖a), KL(π‖p) (with a reference log Z), and the gradient estimator's
relative variance from the two half-batch gradients g₁, g₂ of n = B/2 samples each:
E[g₁·g₂] = ‖∇D‖², E‖g₁ − g₂‖² = 2 tr Cov / n ⇒ tr Cov/‖∇D‖² ≈ (n/2)·Σ‖g₁ − g₂‖² / Σ g₁·g₂ (sums over
steps). KL(p‖π) is estimated at chunk boundaries from a fixed set of samples of a (weights P/a = e^{λφ},
bounded), where log Z(λ) = log E_a[e^{λφ}] is also estimated (:func:`base_estimates`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jalign import divergences as _div
from jalign.fdpg import metrics as _metrics
from jalign.fdpg import proposals as _proposals
from jalign.fdpg import targets as _targets
from jalign.losses.fdpg import baseline_estimate, fdpg, logz_estimate, logz_init, logz_update
from jalign.models import sample as _kv_sample
from jalign.models import token_logprobs

_WORD_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _is_word_byte(t):
    """Elementwise: token t is an ASCII letter, digit or underscore (regex ``\\w`` on bytes)."""
    lower = (t | 0x20)  # ASCII case fold; only trusted on letters, checked below
    letter = (t < 128) & (lower >= ord("a")) & (lower <= ord("z"))
    digit = (t >= ord("0")) & (t <= ord("9"))
    return letter | digit | (t == ord("_"))


def word_indicator(tokens_NxT, word: str | bytes, *, whole_word: bool = True):
    """b(x) = 1 iff the byte tokens x contain ``word`` (as a whole word: ``re.search(rb"\\bword\\b", x)``).

    Tokens ≥ 256 (special tokens) never match and count as non-word characters. Jit-able (the word is
    static).

    Args:
      tokens_NxT: integer byte tokens ``[N, T]`` (or ``[T]``).
      word: the word; with ``whole_word`` it must consist of ASCII letters, digits or ``_``.
      whole_word: require a non-word character (or the string's start/end) on both sides.

    Returns:
      float32 ``[N]`` in {0, 1}.
    """
    w = word.encode("utf-8") if isinstance(word, str) else bytes(word)
    if not w:
        raise ValueError("word_indicator: word must be non-empty")
    if whole_word and not set(w) <= _WORD_BYTES:
        raise ValueError(f"word_indicator: word={word!r} must be ASCII letters/digits/_ with whole_word=True")
    x = jnp.asarray(tokens_NxT)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(f"word_indicator: tokens must be integers, got dtype {x.dtype}")
    x = x.astype(jnp.int32)
    T, L = x.shape[-1], len(w)
    if T < L:
        return jnp.zeros(x.shape[:-1], jnp.float32)
    wv = jnp.asarray(list(w), jnp.int32)
    is_word = _is_word_byte(x)
    hits = []
    for s in range(T - L + 1):
        m = jnp.all(x[..., s : s + L] == wv, axis=-1)
        if whole_word:
            if s > 0:
                m = m & ~is_word[..., s - 1]
            if s + L < T:
                m = m & ~is_word[..., s + L]
        hits.append(m)
    return jnp.any(jnp.stack(hits, -1), axis=-1).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class LMSpace:
    """Unconditional T-token samples of a causal LM after a lone BOS, and their exact log-probabilities.

    Attributes:
      graphdef: ``nnx.split(model, nnx.Param)[0]`` of a :class:`jalign.models.CausalLM` (no other state).
      new_tokens: T, the sample length.
      bos_id: the prompt token.
    """

    graphdef: Any
    new_tokens: int
    bos_id: int

    def sample(self, params, key, n: int):
        """``n`` samples x ~ π_params at temperature 1 (KV-cache sampler, no EOS stop).

        Returns:
          ``(tokens [n, T] int32, logps [n])`` with logps = log π_params(x) accumulated while sampling
          (equal to :meth:`log_probs` up to float round-off).
        """
        model = nnx.merge(self.graphdef, params)
        out = _kv_sample(model, np.full((n, 1), self.bos_id, np.int32), key=key, max_new_tokens=self.new_tokens)
        return out.tokens, out.model_logprobs.sum(-1)

    def log_probs(self, params, tokens_NxT):
        """log π_params(x) = Σ_t log π(x_t | BOS, x_<t), ``[N]`` float32 (differentiable in params)."""
        model = nnx.merge(self.graphdef, params)
        x = jnp.asarray(tokens_NxT, jnp.int32)
        ids = jnp.concatenate([jnp.full((x.shape[0], 1), self.bos_id, jnp.int32), x], axis=1)
        return token_logprobs(model(ids).logits, ids)[:, 1:].sum(-1)


def split_lm(model) -> tuple[Any, Any]:
    """``(graphdef, params)`` of a causal LM whose only state is ``nnx.Param`` (raises otherwise)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise ValueError("split_lm: the model has non-parameter state; LMSpace expects parameters only")
    return graphdef, params


def base_estimates(base_logps, features, lam) -> dict:
    """Target quantities from N samples of a (IS with q = a; weights P/a = e^{λφ} are bounded by e^{|λ|}).

    Returns ``log_z`` = log (1/N)Σ e^{λφ} (log Z of P = a·e^{λφ}), ``expected_phi`` = E_p[φ], ``entropy`` =
    H(p) = E_p[−log p], ``kl_p_a`` = KL(p‖a) = λ·E_p[φ] − log Z and ``ess`` = (Σw)²/Σw² (effective sample
    size).
    """
    la = jnp.asarray(base_logps, jnp.float32)
    phi = jnp.asarray(features, jnp.float32)
    lw = lam * phi
    log_z = jax.nn.logsumexp(lw) - jnp.log(lw.shape[0])
    w = jax.nn.softmax(lw)
    log_p = la + lw - log_z
    return {"log_z": log_z, "expected_phi": w @ phi, "entropy": -(w @ log_p), "kl_p_a": lam * (w @ phi) - log_z,
            "ess": 1.0 / jnp.sum(w * w)}


def kl_p_pi_from_base(policy_logps, base_logps, features, lam, log_z):
    """KL(p‖π) ≈ Σ_i w_i (log p(x_i) − log π(x_i)), x_i ~ a, w ∝ e^{λφ(x_i)} (self-normalised)."""
    lw = lam * jnp.asarray(features, jnp.float32)
    log_p = jnp.asarray(base_logps, jnp.float32) + lw - log_z
    return jax.nn.softmax(lw) @ (log_p - jnp.asarray(policy_logps, jnp.float32))


def _distinct_words(samples: list[bytes], n: int) -> float:
    vocab: dict[bytes, int] = {}
    seqs = [[vocab.setdefault(t, len(vocab)) for t in s.split()] for s in samples]
    return _metrics.distinct_n(seqs, n)


def diversity(tokens_NxT) -> dict:
    """Distinct-n of a set of byte strings: byte 4-grams and whitespace-separated words (n = 1, 2)."""
    toks = np.asarray(tokens_NxT)
    samples = [bytes(int(t) for t in row if t < 256) for row in toks]
    return {"distinct_4b": _metrics.distinct_n(toks, 4), "distinct_1w": _distinct_words(samples, 1),
            "distinct_2w": _distinct_words(samples, 2)}


class FDPGLMTrainer:
    """f-DPG of a causal LM towards p ∝ a·e^{λφ}, every divergence, target and proposal mode in one program.

    Per step: draw ``batch_size`` samples from q (π_θ on-policy; off-policy the frozen proposal, replaced by
    π_θ every ``replace_every`` steps when the IS estimate of KL(p‖π_θ) is below KL(p‖q), as in
    :func:`jalign.fdpg.loop.train`), update the running IS estimate of log Z (used by the loss), take an Adam
    step on the mean surrogate :func:`jalign.losses.fdpg` with the self-normalised baseline. ``eval_every``
    steps run inside one ``lax.scan``; non-finite losses or parameters raise ``FloatingPointError``.

    Args:
      space: the :class:`LMSpace`.
      base_params: a's parameters (the policy usually starts from them).
      word: the constraint word (:func:`word_indicator`, whole word).
      divergences: names (or :class:`~jalign.divergences.Divergence`) the trainer can run.
      batch_size: samples per step (even: two halves for the variance estimate).
      learning_rate: Adam learning rate.
      eval_every: steps per compiled chunk (metrics are reported per chunk).
      replace_every: off-policy: steps between proposal-replacement checks.
      base_tokens: a fixed set of samples of a, ``[M, T]`` (KL(p‖π) and the reference log Z).
    """

    def __init__(self, space: LMSpace, base_params, *, word: str, divergences, batch_size: int,
                 learning_rate: float, eval_every: int, replace_every: int = 5, base_tokens):
        if int(batch_size) < 2 or int(batch_size) % 2:
            raise ValueError(f"FDPGLMTrainer: batch_size={batch_size!r} must be even and >= 2")
        if not learning_rate > 0:
            raise ValueError(f"FDPGLMTrainer: learning_rate={learning_rate!r} must be > 0")
        for name, v in (("eval_every", eval_every), ("replace_every", replace_every)):
            if int(v) < 1:
                raise ValueError(f"FDPGLMTrainer: {name}={v!r} must be >= 1")
        self.space, self.base_params, self.word = space, base_params, word
        self.divs = tuple(_div.get(d) for d in divergences)
        self.names = [d.name if d.name != "alpha" else f"alpha{dict(d.params)['alpha']:g}" for d in self.divs]
        self.batch_size, self.eval_every, self.replace_every = int(batch_size), int(eval_every), int(replace_every)
        self.opt = optax.adam(learning_rate)
        self.base_tokens = jnp.asarray(base_tokens, jnp.int32)
        self.base_phi = self.feature(self.base_tokens)
        self._policy_logps = jax.jit(space.log_probs)
        self.base_logps = self._policy_logps(base_params, self.base_tokens)
        self._chunk = jax.jit(self._chunk_fn)
        self._chunk_seeds = jax.jit(self._chunk_seeds_fn)

    def feature(self, tokens):
        return word_indicator(tokens, self.word)

    def target_logps(self, tokens, lam):
        """log P(x) = log a(x) + λ·φ(x)."""
        la = self.space.log_probs(self.base_params, tokens)
        return _targets.exponential_target_logps(la, self.feature(tokens)[:, None], jnp.reshape(lam, (1,))), la

    # -- one step ------------------------------------------------------------------------------------------
    def _step(self, carry, key, div_idx, lam, off, log_z_ref):
        params, opt_state, logz, prop, i = carry
        space, n = self.space, self.batch_size
        q_params = jax.tree.map(lambda a, b: jnp.where(off, a, b), prop.params, params)
        x, lq = jax.lax.stop_gradient(space.sample(q_params, key, n))
        phi = self.feature(x)
        lP, la = self.target_logps(x, lam)
        lpi = jax.lax.cond(off, lambda: jax.lax.stop_gradient(space.log_probs(params, x)), lambda: lq)
        logz = logz_update(logz, lP, lq)
        log_z = logz_estimate(logz)[0]

        def coef_fn(d):  # per-sample gradient coefficient c_i of log π(x_i) in the mean surrogate (detached)
            def f(lpi):
                B = baseline_estimate(lpi, lP, lq, divergence=d, log_z=log_z)
                return jax.grad(lambda l: fdpg(l, lP, lq, divergence=d, baseline=B, log_z=log_z,
                                               validate=False).sum())(lpi), B
            return f

        coef, _ = jax.lax.switch(div_idx, [coef_fn(d) for d in self.divs], lpi)
        half = n // 2

        def half_grad(xh, ch):
            return jax.grad(lambda p: jnp.sum(ch * space.log_probs(p, xh)) / half)(params)

        g2 = jax.vmap(half_grad)(x.reshape(2, half, -1), coef.reshape(2, half))
        grads = jax.tree.map(lambda g: g.mean(0), g2)
        signal = sum(jnp.sum(g[0] * g[1]) for g in jax.tree.leaves(g2))
        noise = sum(jnp.sum((g[0] - g[1]) ** 2) for g in jax.tree.leaves(g2)) * (half / 2.0)
        norms = [sum(jnp.sum(g[h] ** 2) for g in jax.tree.leaves(g2)) for h in (0, 1)]
        cosine = signal / jnp.sqrt(norms[0] * norms[1] + 1e-30)
        updates, opt_state = self.opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)

        def replace(prop):
            lp_new = space.log_probs(params, x)
            kl_pi = _metrics.is_divergence("forward_kl", lp_new, lP, lq, log_z=log_z)
            kl_q = _metrics.is_divergence("forward_kl", lq, lP, lq, log_z=log_z)
            return _proposals.maybe_replace(prop, params, kl_pi, kl_q)[0]

        prop = jax.lax.cond(off & ((i + 1) % self.replace_every == 0), replace, lambda p: p, prop)
        out = {
            "loss": jnp.mean(coef * lpi),  # value of the mean surrogate (no meaning; finiteness check)
            "log_z": log_z,
            "expected_phi": _metrics.is_expectation(phi, lpi, lq),
            "entropy": _metrics.is_entropy(lpi, lq),
            "kl_pi_a": _metrics.is_kl_policy_base(lpi, la, lq),
            "kl_pi_p": _metrics.is_expectation(lpi - (lP - log_z_ref), lpi, lq),
            "grad_signal": signal,
            "grad_noise": noise,
            "grad_cosine": cosine,
            "tokens": x,
        }
        return (params, opt_state, logz, prop, i + 1), out

    def _chunk_fn(self, carry, key, div_idx, lam, off, log_z_ref):
        step = lambda c, k: self._step(c, k, div_idx, lam, off, log_z_ref)  # noqa: E731
        return jax.lax.scan(step, carry, jax.random.split(key, self.eval_every))

    def _chunk_seeds_fn(self, carry, keys, div_idx, lam, off, log_z_ref):
        """:meth:`_chunk_fn` for S seeds at once: every leaf of ``carry`` but the step counter has a leading seed
        axis, ``keys`` is ``[S]``. One ``lax.scan`` over steps whose body is the per-seed step under ``jax.vmap``;
        the step counter stays unbatched, so the off-policy replacement check remains a real ``lax.cond``."""
        params, opt_state, logz, prop, i = carry

        def one(c, k, i):
            return self._step((*c, i), k, div_idx, lam, off, log_z_ref)

        def step(c, k_S):
            inner, i = c
            (p, o, z, q, _), out = jax.vmap(one, in_axes=(0, 0, None))(inner, k_S, i)
            return ((p, o, z, q), i + 1), out

        ks = jax.vmap(lambda k: jax.random.split(k, self.eval_every))(keys)  # [S, E]: the keys run() would use
        (inner, i), outs = jax.lax.scan(step, ((params, opt_state, logz, prop), i), jnp.swapaxes(ks, 0, 1))
        return (*inner, i), jax.tree.map(lambda v: jnp.swapaxes(v, 0, 1), outs)  # outputs [S, E, ...]

    def kl_p_pi(self, params, lam, log_z_ref) -> float:
        """KL(p‖π_params) estimated on the fixed samples of a (:func:`kl_p_pi_from_base`)."""
        lp = self._policy_logps(params, self.base_tokens)
        return float(kl_p_pi_from_base(lp, self.base_logps, self.base_phi, lam, log_z_ref))

    # -- a run ---------------------------------------------------------------------------------------------
    def _setup(self, where: str, divergence, lam, steps, proposal):
        """Validate a run's arguments; ``(name, div_idx, lam, off, ref, log_z_ref)``."""
        name = _div.get(divergence)
        if name not in self.divs:
            raise ValueError(f"FDPGLMTrainer.{where}: divergence {divergence!r} not in {self.names}")
        if proposal not in ("on_policy", "off_policy"):
            raise ValueError(f"FDPGLMTrainer.{where}: proposal={proposal!r} must be 'on_policy' or 'off_policy'")
        if not np.isfinite(float(lam)):
            raise ValueError(f"FDPGLMTrainer.{where}: lam={lam!r} must be finite")
        if int(steps) < 1 or int(steps) % self.eval_every:
            raise ValueError(f"FDPGLMTrainer.{where}: steps={steps!r} must be a positive multiple of "
                             f"{self.eval_every}")
        lam = jnp.float32(lam)
        ref = {k: float(v) for k, v in base_estimates(self.base_logps, self.base_phi, lam).items()}
        return (name, jnp.int32(self.divs.index(name)), lam, jnp.asarray(proposal == "off_policy"), ref,
                jnp.float32(ref["log_z"]))

    def _init_carry(self, params):
        return params, self.opt.init(params), logz_init(1), _proposals.proposal_init(params), jnp.asarray(0)

    def _record(self, hist: dict, o: dict, params, replacements, s: int, name) -> None:
        """Append one chunk's metrics (``o``: the chunk's step outputs, numpy, leading axis = steps) to ``hist``;
        raise ``FloatingPointError`` on a non-finite loss or parameters."""
        T = self.space.new_tokens
        finite = all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(params))
        if not (np.isfinite(o["loss"]).all() and finite):
            raise FloatingPointError(f"f-DPG LM ({name!r}): non-finite loss or parameters by step {s}; stopping")
        hist["step"].append(s)
        for k in ("expected_phi", "entropy", "kl_pi_a", "kl_pi_p"):
            hist.setdefault(k, []).append(float(o[k].mean()))
        hist.setdefault("entropy_per_token", []).append(float(o["entropy"].mean()) / T)
        hist.setdefault("log_z", []).append(float(o["log_z"][-1]))
        for k, v in diversity(o["tokens"].reshape(-1, T)).items():
            hist.setdefault(k, []).append(v)
        hist.setdefault("grad_cosine", []).append(float(o["grad_cosine"].mean()))
        hist.setdefault("grad_signal", []).append(float(o["grad_signal"].sum()))
        hist.setdefault("grad_noise", []).append(float(o["grad_noise"].sum()))
        hist.setdefault("rel_var", []).append(float(o["grad_noise"].sum() / o["grad_signal"].sum()))
        hist.setdefault("replacements", []).append(int(replacements))

    def run(self, params, *, divergence, lam: float, steps: int, key, proposal: str = "on_policy") -> tuple:
        """Train from ``params`` for ``steps`` (a multiple of ``eval_every``).

        Returns:
          ``(params, history)``; history lists, one entry per chunk (averages over the chunk's samples, ``step``
          = the chunk's last step): ``step``, ``expected_phi``, ``entropy``
          (sequence, nats), ``entropy_per_token``, ``kl_pi_a``, ``kl_pi_p``, ``log_z`` (running
          IS estimate at the chunk end), ``distinct_4b``/``distinct_1w``/``distinct_2w`` (the chunk's
          samples), ``grad_cosine`` (mean over steps of cos(g₁, g₂)), ``rel_var`` (tr Cov/‖∇D‖² per
          sample, ratio of chunk sums), ``replacements``; plus ``ref`` (target estimates from a's samples) and
          ``kl_p_pi_init`` / ``kl_p_pi_final`` (KL(p‖π) of the initial and final policy on a's samples).
        """
        name, idx, lam, off, ref, log_z_ref = self._setup("run", divergence, lam, steps, proposal)
        hist: dict[str, list] = {"step": []}
        carry = self._init_carry(params)
        for c in range(int(steps) // self.eval_every):
            key, sub = jax.random.split(key)
            carry, outs = self._chunk(carry, sub, idx, lam, off, log_z_ref)
            o = {k: np.asarray(v) for k, v in outs.items()}
            self._record(hist, o, carry[0], carry[3].replacements, (c + 1) * self.eval_every, name)
        hist["ref"] = ref
        hist["kl_p_pi_init"] = self.kl_p_pi(params, lam, log_z_ref)
        hist["kl_p_pi_final"] = self.kl_p_pi(carry[0], lam, log_z_ref)
        return carry[0], hist

    def run_seeds(self, params, *, divergence, lam: float, steps: int, keys, proposal: str = "on_policy") -> tuple:
        """:meth:`run` for several seeds at once, batched: one compiled chunk vmaps the step over seeds.

        Seed s is exactly ``run(params, key=keys[s], ...)`` (same sampling keys, same updates), computed for all
        seeds in one program: the carry (parameters, Adam state, log Z estimate, proposal) is stacked on a
        leading seed axis and the step is ``jax.vmap``-ed over it (:meth:`_chunk_seeds_fn`). Results equal the
        per-seed runs up to float round-off (batched matrix products may sum in another order).

        Args:
          params: the initial parameters (shared by every seed).
          keys: ``S`` PRNG keys (a sequence of keys or a key array ``[S]``), one per seed.
          divergence, lam, steps, proposal: as in :meth:`run`.

        Returns:
          ``(params_S, histories)``: the final parameters stacked on a leading seed axis and one history per
          seed, each as :meth:`run` returns it.
        """
        name, idx, lam, off, ref, log_z_ref = self._setup("run_seeds", divergence, lam, steps, proposal)
        keys = jnp.stack(list(keys)) if not isinstance(keys, jax.Array) else keys
        S = int(keys.shape[0])
        if keys.ndim != 1 or S < 1:
            raise ValueError(f"FDPGLMTrainer.run_seeds: keys must be a non-empty sequence of PRNG keys, got shape "
                             f"{tuple(keys.shape)}")
        inner = jax.vmap(lambda _: self._init_carry(params)[:4])(jnp.arange(S))
        carry = (*inner, jnp.asarray(0))
        hists: list[dict[str, list]] = [{"step": []} for _ in range(S)]
        for c in range(int(steps) // self.eval_every):
            split = jax.vmap(jax.random.split)(keys)
            keys, subs = split[:, 0], split[:, 1]
            carry, outs = self._chunk_seeds(carry, subs, idx, lam, off, log_z_ref)
            outs = {k: np.asarray(v) for k, v in outs.items()}
            for s in range(S):
                p_s = jax.tree.map(lambda v, s=s: v[s], carry[0])
                self._record(hists[s], {k: v[s] for k, v in outs.items()}, p_s, carry[3].replacements[s],
                             (c + 1) * self.eval_every, f"{name}, seed {s}")
        init = self.kl_p_pi(params, lam, log_z_ref)
        for s, h in enumerate(hists):
            h["ref"] = dict(ref)
            h["kl_p_pi_init"] = init
            h["kl_p_pi_final"] = self.kl_p_pi(jax.tree.map(lambda v, s=s: v[s], carry[0]), lam, log_z_ref)
        return carry[0], hists


__all__ = ["FDPGLMTrainer", "LMSpace", "base_estimates", "diversity", "kl_p_pi_from_base", "split_lm",
           "word_indicator"]
