"""A minimal causal-LM pretraining loop (optax AdamW) for the small byte-level model shipped with jalign.

Data: CPython's ``pydoc_data.topics`` (the text of ``help()`` topics, ~0.46 MB of English prose and code,
available offline in every CPython install), optionally followed by template-generated sentences. Each
document is encoded with :class:`jalign.tokenizers.ByteTokenizer` as ``[BOS] bytes [EOS]`` and the documents
are concatenated; training windows are random slices of ``seq_len + 1`` tokens. The last ``val_fraction`` of
every document is held out for the validation loss.

Loss: mean next-token cross-entropy in nats per token (= per byte). Training stops with
``FloatingPointError`` on a non-finite loss or gradient norm.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jalign.models.checkpoints import save_pretrained
from jalign.models.config import ModelConfig
from jalign.models.transformer import create_model
from jalign.tokenizers import ByteTokenizer

_SUBJECTS = ["the model", "a reward", "the policy", "the reference", "a sample", "the loss", "the gradient"]
_VERBS = ["increases", "decreases", "matches", "bounds", "ignores", "follows"]
_OBJECTS = ["the margin", "the divergence", "the likelihood", "the temperature", "the baseline", "the prior"]


def template_text(n_sentences: int, seed: int = 0) -> list[str]:
    """Simple generated sentences ("When the loss decreases, the policy follows the prior.")."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_sentences):
        s, v, o = rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)
        s2, v2 = rng.choice(_SUBJECTS), rng.choice(_VERBS)
        out.append(f"When {s} {v} {o}, {s2} {v2} {rng.choice(_OBJECTS)}.")
    return out


def corpus_documents(sources: tuple[str, ...] = ("pydoc_topics",), n_template: int = 0, seed: int = 0) -> list[str]:
    docs: list[str] = []
    for src in sources:
        if src == "pydoc_topics":
            from pydoc_data.topics import topics

            docs += [topics[k] for k in sorted(topics)]
        else:
            raise ValueError(f"corpus source {src!r} unknown; known: ('pydoc_topics',)")
    if n_template:
        docs.append(" ".join(template_text(n_template, seed)))
    return docs


def encode_corpus(docs: list[str], val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation token streams: each document ``[BOS] bytes [EOS]``, its tail held out."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    tok = ByteTokenizer()
    train, val = [], []
    for d in docs:
        ids = tok.encode(d, add_bos=True, add_eos=True)
        cut = len(ids) - int(len(ids) * val_fraction)
        train.append(ids[:cut])
        val.append(ids[cut:])
    return np.concatenate(train).astype(np.int32), np.concatenate(val).astype(np.int32)


def sample_windows(stream: np.ndarray, batch: int, length: int, rng: np.random.Generator) -> np.ndarray:
    if len(stream) <= length:
        raise ValueError(f"token stream of {len(stream)} tokens is too short for windows of {length}")
    starts = rng.integers(0, len(stream) - length, size=batch)
    return stream[starts[:, None] + np.arange(length)[None]]


def lm_loss(model, tokens_BxT1: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy (nats/token) of ``tokens[:, 1:]`` given ``tokens[:, :-1]``."""
    logits = model(tokens_BxT1[:, :-1]).logits
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, tokens_BxT1[:, 1:, None], axis=-1))


def make_train_step(graphdef, tx):
    """``step(params, opt_state, tokens) -> (params, opt_state, loss, grad_norm)``, jitted, buffers donated."""

    def loss_fn(params, tokens):
        return lm_loss(nnx.merge(graphdef, params), tokens)

    @jax.jit
    def step(params, opt_state, tokens):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, optax.tree.norm(grads)

    return jax.jit(step.__wrapped__, donate_argnums=(0, 1))


def train(cfg: Any, out: str | Path | None = None, *, log=print) -> tuple[Any, dict]:
    """Pretrain per ``cfg`` (an ml_collections config: ``model``, ``data``, ``train``); write outputs to ``out``.

    Writes ``out/loss_curve.json``, ``out/hf/{config.json, model.safetensors}`` and ``out/orbax/`` (the
    parameter state). Returns ``(model, history)``.
    """
    mcfg = ModelConfig(**dict(cfg.model))
    t = cfg.train
    for k in ("steps", "batch_size", "seq_len"):
        if int(t[k]) <= 0:
            raise ValueError(f"train.{k} must be > 0, got {t[k]}")
    if not t.lr > 0:
        raise ValueError(f"train.lr must be > 0, got {t.lr}")
    if not 0 <= int(t.warmup) < int(t.steps):
        raise ValueError(f"train.warmup={t.warmup} must be in [0, train.steps={t.steps})")
    if t.seq_len > mcfg.max_seq_len:
        raise ValueError(f"train.seq_len={t.seq_len} exceeds model.max_seq_len={mcfg.max_seq_len}")
    docs = corpus_documents(tuple(cfg.data.sources), int(cfg.data.n_template), int(t.seed))
    train_ids, val_ids = encode_corpus(docs, float(cfg.data.val_fraction))
    rng = np.random.default_rng(int(t.seed))
    val_batches = [sample_windows(val_ids, t.batch_size, t.seq_len + 1, np.random.default_rng(1000 + i))
                   for i in range(int(t.eval_batches))]

    model = create_model(mcfg, seed=int(t.seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    schedule = optax.warmup_cosine_decay_schedule(0.0, t.lr, int(t.warmup), int(t.steps), t.lr * t.final_lr_frac)
    decay_mask = jax.tree.map(lambda x: x.ndim >= 2, params)
    tx = optax.chain(optax.clip_by_global_norm(t.clip), optax.adamw(schedule, b1=0.9, b2=0.95,
                                                                      weight_decay=t.weight_decay, mask=decay_mask))
    opt_state = tx.init(params)
    step_fn = make_train_step(graphdef, tx)
    eval_fn = jax.jit(lambda p, b: lm_loss(nnx.merge(graphdef, p, rest), b))

    def evaluate(p):
        return float(np.mean([eval_fn(p, jnp.asarray(b)) for b in val_batches]))

    history: dict[str, Any] = {
        "train": [], "val": [], "tokens_per_step": int(t.batch_size * t.seq_len),
        "n_params": mcfg.num_params(), "train_tokens": int(len(train_ids)), "val_tokens": int(len(val_ids)),
    }
    t0 = time.perf_counter()
    for step in range(1, int(t.steps) + 1):
        batch = jnp.asarray(sample_windows(train_ids, t.batch_size, t.seq_len + 1, rng))
        params, opt_state, loss, gnorm = step_fn(params, opt_state, batch)
        loss, gnorm = float(loss), float(gnorm)
        if not (np.isfinite(loss) and np.isfinite(gnorm)):
            raise FloatingPointError(f"non-finite training loss {loss} / grad norm {gnorm} at step {step}; stopping")
        history["train"].append([step, loss])
        if step % int(t.eval_every) == 0 or step == int(t.steps):
            v = evaluate(params)
            history["val"].append([step, v])
            log(f"step {step:5d}  train {loss:.4f}  val {v:.4f}  ({time.perf_counter() - t0:.0f}s)")
    history["wall_s"] = time.perf_counter() - t0
    history["final_train_loss_avg_last50"] = float(np.mean([x[1] for x in history["train"][-50:]]))
    history["final_val_loss"] = history["val"][-1][1]
    model = nnx.merge(graphdef, params, rest)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        save_pretrained(model, out / "hf")
        save_orbax(params, out / "orbax")
        (out / "loss_curve.json").write_text(json.dumps({"config": cfg.to_dict(), **history}, indent=1))
    return model, history


def save_orbax(params, path: str | Path) -> None:
    """Save the parameter state with orbax (``StandardCheckpointer``; replaces an existing directory)."""
    import orbax.checkpoint as ocp

    path = Path(path).resolve()
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path, nnx.to_pure_dict(params), force=True)
    ckptr.wait_until_finished()


def restore_orbax(model_cfg: ModelConfig, path: str | Path):
    """A model with parameters restored from :func:`save_orbax`."""
    import orbax.checkpoint as ocp

    model = nnx.eval_shape(lambda: create_model(model_cfg))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(params))
    restored = ocp.StandardCheckpointer().restore(Path(path).resolve(), target)
    nnx.replace_by_pure_dict(params, restored)
    return nnx.merge(graphdef, params, rest)


def plot_loss_curve(curve_json: str | Path, out_png: str | Path) -> Path:
    """Draw train (per step, and a 25-step running mean) and validation loss from ``loss_curve.json``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = json.loads(Path(curve_json).read_text())
    tr, va = np.asarray(d["train"]), np.asarray(d["val"])
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    ax.plot(tr[:, 0], tr[:, 1], color="0.8", lw=0.6, label="train (batch)")
    k = min(25, len(tr))
    ax.plot(tr[k - 1 :, 0], np.convolve(tr[:, 1], np.ones(k) / k, mode="valid"), lw=1.2, label=f"train ({k}-step mean)")
    ax.plot(va[:, 0], va[:, 1], "o-", ms=3, lw=1.2, label="validation")
    ax.axhline(np.log(259), ls=":", color="k", lw=0.8, label="uniform (log 259)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/byte)")
    ax.set_title(f"small LM, {d['n_params'] / 1e6:.2f}M params")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
