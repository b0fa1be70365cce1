"""Shared helpers for the trainer tests: small configs and an independent numpy implementation."""

from __future__ import annotations

import numpy as np

from jalign.train.config import base_config


def small_cfg(**over):
    c = base_config()
    c.data.batch_size = 8
    c.data.seq_len = 24
    c.data.kwargs.num_examples = 64
    c.model.kwargs.d_model = 8
    c.model.kwargs.d_hidden = 16
    c.optim.name = "sgd"
    c.optim.lr = 0.5
    c.optim.schedule = "constant"
    c.optim.grad_clip = 0.0
    c.train.steps = 4
    c.train.progress = False
    c.mesh.data = 1
    return apply_overrides(c, over)


def apply_overrides(c, over):
    """Set nested config keys given as ``a__b__c=value`` keyword names; returns ``c``."""
    for k, v in over.items():
        node = c
        parts = k.split("__")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = v
    return c


def np_logsumexp(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True)))[..., 0]


def np_seq_logps(logits, ids, mask):
    """Independent numpy: Σ_t mask[t+1]·log softmax(logits[t])[ids[t+1]] (float64)."""
    logits = np.asarray(logits, np.float64)
    lp = logits - np_logsumexp(logits)[..., None]
    b, t, _ = logits.shape
    picked = np.array([[lp[i, s, ids[i, s + 1]] for s in range(t - 1)] for i in range(b)])
    return (picked * np.asarray(mask)[:, 1:]).sum(-1)


def np_log_sigmoid(x):
    return -np.logaddexp(0.0, -x)
