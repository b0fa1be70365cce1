"""KV-cache decoding and sampling: cache == full forward, greedy == argmax, log-probs == recomputed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jalign.models import ModelConfig, create_model, filter_logits, forward, init_cache, sample

CFG = ModelConfig(arch="llama", vocab_size=23, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48,
                  init_std=0.25)
# Row 0 left-padded (2 pads), row 1 unpadded, row 2 right-padded (3 pads).
PROMPT = np.array([[0, 0, 5, 6, 7, 8], [3, 4, 5, 6, 7, 9], [1, 2, 11, 0, 0, 0]], np.int32)
PMASK = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], np.int32)
N = 5


@pytest.fixture(scope="module")
def model():
    return create_model(CFG, seed=7)


def _full(model, out):
    """Per row: prompt length, unpadded prompt + response, and its logits from one full forward pass (no cache;
    the rows are right-padded into one batch, which test_transformer shows leaves real-token logits unchanged)."""
    seqs = []
    for b in range(len(PROMPT)):
        p = PROMPT[b][PMASK[b] == 1]
        r = np.asarray(out.tokens[b])[np.asarray(out.response_mask[b]) == 1]
        seqs.append((len(p), np.concatenate([p, r]).astype(np.int32)))
    T = PROMPT.shape[1] + N
    ids = np.zeros((len(seqs), T), np.int32)
    mask = np.zeros((len(seqs), T), np.int32)
    for b, (_, s) in enumerate(seqs):
        ids[b, : len(s)], mask[b, : len(s)] = s, 1
    logits = np.asarray(forward(model, jnp.asarray(ids), jnp.asarray(mask)).logits, np.float64)
    return [(P, s, logits[b, : len(s)]) for b, (P, s) in enumerate(seqs)]


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_cached_decoding_equals_full_forward(model, arch, rng):
    """Prefill a padded prompt, then feed tokens one by one: logits equal those of one full forward pass."""
    if arch == "gpt2":
        cfg = ModelConfig(arch="gpt2", vocab_size=23, d_model=32, n_layers=2, n_heads=4, max_seq_len=16,
                          init_std=0.25)
        model = create_model(cfg, seed=8)
    cont = jnp.asarray(rng.integers(0, 23, size=(3, 4)), jnp.int32)
    call = nnx.jit(lambda m, ids, mask, cache: m(ids, mask, cache=cache))
    out = call(model, jnp.asarray(PROMPT), jnp.asarray(PMASK), init_cache(model.cfg, 3, 10))
    step_logits = []
    cache = out.cache
    for t in range(4):
        o = call(model, cont[:, t : t + 1], jnp.ones((3, 1), jnp.int32), cache)
        cache = o.cache
        step_logits.append(np.asarray(o.logits[:, 0]))
    assert int(cache.index) == 10 and np.asarray(cache.valid).sum() == PMASK.sum() + 12
    # Full forward of each unpadded prompt + continuation, right-padded into one batch.
    ids = np.zeros((3, 10), np.int32)
    for b in range(3):
        P = int(PMASK[b].sum())
        ids[b, : P + 4] = np.concatenate([PROMPT[b][PMASK[b] == 1], np.asarray(cont[b])])
    fmask = (np.arange(10)[None] < (PMASK.sum(1) + 4)[:, None]).astype(np.int32)
    fulls = np.asarray(forward(model, jnp.asarray(ids), jnp.asarray(fmask)).logits)
    for b in range(3):
        full = fulls[b]
        P = int(PMASK[b].sum())
        np.testing.assert_allclose(np.asarray(out.logits[b])[PMASK[b] == 1], full[:P], atol=1e-5)
        for t in range(4):
            np.testing.assert_allclose(step_logits[t][b], full[P + t], atol=1e-5)


def test_greedy_is_argmax_of_full_forward(model, key):
    out = sample(model, PROMPT, PMASK, key=key, max_new_tokens=N, greedy=True)
    assert out.tokens.shape == (3, N) and (np.asarray(out.response_mask) == 1).all()
    np.testing.assert_array_equal(out.logprobs, 0.0)  # point mass
    for b, (P, seq, logits) in enumerate(_full(model, out)):
        np.testing.assert_array_equal(seq[P:], logits[P - 1 : -1].argmax(-1))
        lp = _log_softmax(logits[P - 1 : -1])[np.arange(N), seq[P:]]
        np.testing.assert_allclose(out.model_logprobs[b], lp, atol=1e-5)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (1.3, 0, 0.6), (0.7, 5, 1.0), (0.9, 5, 0.8)])
def test_sampled_logprobs_equal_recomputed(model, temperature, top_k, top_p):
    out = sample(model, PROMPT, PMASK, key=jax.random.key(3), max_new_tokens=N, temperature=temperature,
                 top_k=top_k, top_p=top_p)
    for b, (P, seq, logits) in enumerate(_full(model, out)):
        ctx = logits[P - 1 : -1]
        y = seq[P:]
        np.testing.assert_allclose(out.model_logprobs[b], _log_softmax(ctx)[np.arange(N), y], atol=1e-5)
        # Independent numpy filter: temperature, then top-k, then nucleus.
        x = ctx / temperature
        if top_k:
            x = np.where(x < np.sort(x, -1)[:, -top_k][:, None], -np.inf, x)
        q = _log_softmax(x)
        keep = np.zeros_like(x, bool)
        for t in range(N):
            order = np.argsort(-x[t])
            mass = 0.0
            for j in order:
                if mass >= top_p:
                    break
                keep[t, j] = True
                mass += np.exp(q[t, j])
        q = _log_softmax(np.where(keep, x, -np.inf))
        assert np.isfinite(q[np.arange(N), y]).all()  # sampled tokens lie in the allowed set
        np.testing.assert_allclose(out.logprobs[b], q[np.arange(N), y], atol=1e-4)


def test_eos_stops_each_sequence(model, key):
    free = sample(model, PROMPT, PMASK, key=key, max_new_tokens=N, greedy=True)
    eos = int(free.tokens[0, 1])  # row 0 emits it at step 1
    out = sample(model, PROMPT, PMASK, key=key, max_new_tokens=N, greedy=True, eos_id=eos, pad_id=22)
    toks, m = np.asarray(out.tokens), np.asarray(out.response_mask)
    ftoks = np.asarray(free.tokens)
    for b in range(3):
        hits = np.flatnonzero(ftoks[b] == eos)
        stop = hits[0] + 1 if len(hits) else N
        np.testing.assert_array_equal(m[b], np.arange(N) < stop)
        np.testing.assert_array_equal(toks[b, :stop], ftoks[b, :stop])
        assert (toks[b, stop:] == 22).all() and out.lengths[b] == stop
    assert m[0].sum() == 2  # stopped right after EOS, EOS included
    assert (np.asarray(out.model_logprobs)[m == 0] == 0).all()


def test_filter_logits_closed_form():
    logits = jnp.log(jnp.array([[0.5, 0.2, 0.2, 0.1]]))
    np.testing.assert_array_equal(np.isfinite(filter_logits(logits, 1.0, top_k=1)), [[1, 0, 0, 0]])
    np.testing.assert_array_equal(np.isfinite(filter_logits(logits, 1.0, top_k=2)), [[1, 1, 1, 0]])  # tie kept
    np.testing.assert_array_equal(np.isfinite(filter_logits(logits, 1.0, top_p=0.5)), [[1, 0, 0, 0]])
    np.testing.assert_array_equal(np.isfinite(filter_logits(logits, 1.0, top_p=0.55)), [[1, 1, 1, 0]])
    np.testing.assert_allclose(filter_logits(logits, 2.0), logits / 2.0)


def test_bad_sampling_arguments(model, key):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample(model, PROMPT, key=key, max_new_tokens=2, temperature=0.0)
    with pytest.raises(ValueError, match="top_p must be in"):
        sample(model, PROMPT, key=key, max_new_tokens=2, top_p=0.0)
    with pytest.raises(ValueError, match="prompt rows \\[1\\] have no real token"):
        sample(model, PROMPT, np.array([[1] * 6, [0] * 6, [1] * 6]), key=key, max_new_tokens=2)
    with pytest.raises(ValueError, match="token id 25 at index \\(0, 2\\)"):
        sample(model, PROMPT + 20, key=key, max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample(model, PROMPT, key=key, max_new_tokens=0)
