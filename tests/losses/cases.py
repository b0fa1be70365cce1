"""Shared test data: hyperparameter grids and random batches (float64 numpy; converted by the tests)."""

from __future__ import annotations

import jax
import numpy as np

# Several β and ε per loss (the first entry is the registered default).
HPARAMS: dict[str, list[dict]] = {
    "dpo": [{}, {"beta": 0.5}, {"beta": 2.0, "label_smoothing": 0.2}],
    "sigmoid": [{}, {"beta": 0.05, "label_smoothing": 0.1}, {"beta": 1.0, "label_smoothing": 0.3}],
    "cdpo": [{}, {"beta": 0.5, "label_smoothing": 0.0}, {"beta": 1.0, "label_smoothing": 0.4}],
    "hinge": [{}, {"beta": 0.5}, {"beta": 3.0}],
    "ipo": [{}, {"beta": 0.5}, {"beta": 0.1, "ipo_average": False}, {"beta": 2.0, "ipo_average": False}],
    "exo_pair": [{}, {"beta": 0.5, "label_smoothing": 0.1}, {"beta": 2.0, "label_smoothing": 0.3}],
    "nca_pair": [{}, {"beta": 0.5}, {"beta": 2.0}],
    "robust": [{}, {"beta": 0.5, "label_smoothing": 0.1}, {"beta": 2.0, "label_smoothing": 0.3}],
    "bco_pair": [{}, {"beta": 0.5, "reward_shift": 0.3}, {"beta": 2.0, "reward_shift": None}],
    "sppo_hard": [{}, {"beta": 0.5}, {"beta": 2.0}],
    "aot": [{}, {"beta": 0.5, "label_smoothing": 0.1}, {"beta": 2.0, "label_smoothing": 0.3}],
    "aot_unpaired": [{}, {"beta": 0.5, "label_smoothing": 0.1}, {"beta": 2.0, "label_smoothing": 0.3}],
    "apo_zero": [{}, {"beta": 0.5}, {"beta": 2.0}],
    "apo_down": [{}, {"beta": 0.5}, {"beta": 2.0}],
    "discopop": [{}, {"beta": 0.5, "discopop_tau": 0.2}, {"beta": 2.0, "discopop_tau": 0.5}],
    "sigmoid_norm": [{}, {"beta": 0.5}, {"beta": 5.0}],
    "rdpo": [{}, {"beta": 0.5, "alpha": 0.05}, {"beta": 2.0, "alpha": -0.02}],
    "dpop": [{}, {"beta": 0.5, "lambda_": 5.0}, {"beta": 2.0, "lambda_": 0.0}],
    "rpo": [{}, {"beta": 0.5, "rpo_alpha": 0.5}, {"beta": 2.0, "rpo_alpha": 0.0}],
    "sft": [{}],
    "cpo": [{}, {"beta": 0.5, "label_smoothing": 0.1, "cpo_alpha": 0.5}, {"beta": 2.0, "cpo_alpha": 0.0}],
    "simpo": [{}, {"beta": 0.5, "gamma": 0.3}, {"beta": 10.0, "gamma": 1.6, "label_smoothing": 0.2}],
    "orpo": [{}, {"beta": 0.5}, {"beta": 2.0}],
    "slic": [{}, {"delta": 0.5, "lambda_": 0.0}, {"delta": 5.0, "lambda_": 1.0}],
    "rrhf": [{}, {"sft_weight": 0.0}, {"sft_weight": 0.5}],
}
REFERENCE_FREE = ("sft", "cpo", "simpo", "orpo", "slic", "rrhf")


def pairwise_data(rng: np.random.Generator, b: int = 12) -> dict[str, np.ndarray]:
    """Log-probs with moderate margins (|βh| up to ~20 at β = 2) and lengths in [3, 40]."""
    nw = rng.integers(3, 41, b).astype(np.float64)
    nl = rng.integers(3, 41, b).astype(np.float64)
    lw = -nw * rng.uniform(0.05, 2.0, b)
    ll = -nl * rng.uniform(0.05, 2.0, b)
    rw = lw + rng.normal(0.0, 4.0, b)
    rl = ll + rng.normal(0.0, 4.0, b)
    return {"lw": lw, "ll": ll, "rw": rw, "rl": rl, "nw": nw, "nl": nl}


def to_pairwise(d, dtype=np.float64, reference=True):
    from jalign.losses import PairwiseLogps

    c = lambda x: np.asarray(x, dtype)  # noqa: E731
    return PairwiseLogps(
        chosen_logps=c(d["lw"]),
        rejected_logps=c(d["ll"]),
        ref_chosen_logps=c(d["rw"]) if reference else None,
        ref_rejected_logps=c(d["rl"]) if reference else None,
        chosen_lengths=c(d["nw"]),
        rejected_lengths=c(d["nl"]),
    )


def unpaired_data(rng, b: int = 12):
    logps = -rng.uniform(1.0, 40.0, b)
    return {
        "logps": logps,
        "ref_logps": logps + rng.normal(0, 4.0, b),
        "desirable": np.arange(b) % 3 != 0,
        "kl_logps": -rng.uniform(1.0, 40.0, b),
        "ref_kl_logps": -rng.uniform(1.0, 40.0, b),
        "lengths": rng.integers(1, 30, b).astype(np.float64),
    }


def to_unpaired(u, dtype=np.float64):
    from jalign.losses import UnpairedLogps

    c = lambda x: np.asarray(x, dtype)  # noqa: E731
    return UnpairedLogps(
        logps=c(u["logps"]),
        ref_logps=c(u["ref_logps"]),
        desirable=np.asarray(u["desirable"]),
        lengths=c(u["lengths"]),
        kl_logps=c(u["kl_logps"]),
        ref_kl_logps=c(u["ref_kl_logps"]),
    )


def listwise_data(rng, b: int = 8, k: int = 5, ties: bool = False, ragged: bool = False):
    n = rng.integers(2, 30, (b, k)).astype(np.float64)
    logps = -n * rng.uniform(0.1, 2.0, (b, k))
    scores = rng.integers(0, 4, (b, k)).astype(np.float64) if ties else rng.normal(0, 1.5, (b, k))
    mask = None
    if ragged:
        sizes = rng.integers(1, k + 1, b)
        mask = np.arange(k)[None, :] < sizes[:, None]
    return {
        "logps": logps,
        "ref_logps": logps + rng.normal(0, 3.0, (b, k)),
        "lengths": n,
        "scores": scores,
        "mask": mask,
    }


def to_listwise(l, dtype=np.float64):
    from jalign.losses import ListwiseLogps

    c = lambda x: np.asarray(x, dtype)  # noqa: E731
    return ListwiseLogps(
        logps=c(l["logps"]),
        scores=c(l["scores"]),
        ref_logps=c(l["ref_logps"]),
        lengths=c(l["lengths"]),
        mask=None if l["mask"] is None else np.asarray(l["mask"]),
    )


_JIT_CACHE: dict = {}


def jit_loss(name: str, **hp):
    """A jitted ``losses.get(name)(batch, **hp)`` (cached): hyperparameters and shapes are validated at trace
    time; value checks are skipped under jit (they are tested separately). Jitting keeps the suite fast:
    eager execution compiles every primitive separately."""
    key = (name, tuple(sorted(hp.items(), key=lambda kv: kv[0])))
    if key not in _JIT_CACHE:
        from jalign import losses

        fn = losses.get(name)
        _JIT_CACHE[key] = jax.jit(lambda b: fn(b, **hp))
    return _JIT_CACHE[key]
