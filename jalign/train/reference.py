"""Precomputed reference log-probabilities (``loss.reference = "cached"``).

Instead of keeping a frozen copy of the model in every step, the reference sequence log-probs are computed
once per example and carried by the batch as ``ref_chosen_logps`` / ``ref_rejected_logps`` (pairwise) or
``ref_logps`` (unpaired / listwise). The step uses batch fields when present, so a data pipeline may also
store them on disk. Computed values equal the in-step frozen computation (tested).
"""

from __future__ import annotations

import jax
import numpy as np

from jalign.train.batch import SEQ
from jalign.train.step import make_logps_fn

_FIELDS = {
    "pairwise": {"ref_chosen_logps": "chosen_", "ref_rejected_logps": "rejected_"},
    "unpaired": {"ref_logps": ""},
    "listwise": {"ref_logps": ""},
}


def make_reference_fn(graphdef, params, model_state, kind: str, *, chunk: int = 64):
    """``fn(arrays) -> {ref field: [N] or [N, K]}`` for a dict of stacked examples (numpy)."""
    if kind not in _FIELDS:
        raise ValueError(f"cached reference log-probs are defined for {sorted(_FIELDS)}, not {kind!r}")
    logps = jax.jit(lambda p, i, m, a: make_logps_fn(graphdef, p, model_state)(i, m, a)[0])

    def fn(arrays: dict) -> dict[str, np.ndarray]:
        out = {}
        fields = dict(_FIELDS[kind])
        if kind == "unpaired" and "kl_ids" in arrays:
            fields["ref_kl_logps"] = "kl_"
        for field, prefix in fields.items():
            ids = np.asarray(arrays[f"{prefix}ids"])
            lead, t = ids.shape[:-1], ids.shape[-1]
            flat = {f: np.asarray(arrays[f"{prefix}{f}"]).reshape(-1, t) for f in SEQ}
            n = flat["ids"].shape[0]
            parts = []
            for s in range(0, n, chunk):
                sl = slice(s, min(s + chunk, n))
                parts.append(np.asarray(logps(params, flat["ids"][sl], flat["mask"][sl], flat["attention_mask"][sl])))
            out[field] = np.concatenate(parts).reshape(lead).astype(np.float32)
        return out

    return fn
