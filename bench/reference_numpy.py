"""Independent float64 numpy implementations of every loss, written from the formulas (not from jalign).

``PAIRWISE[name](d, **hp) -> (loss, dL/d lp_w, dL/d lp_l)`` for per-example losses, where ``d`` holds float64
arrays ``lw, ll, rw, rl, nw, nl`` (policy/reference log-probs of chosen/rejected, lengths). The derivatives
are derived by hand (None where not derived: the batch-coupled AOT losses). Two users: ``bench/losses.py``
(the plain-numpy baseline it times) and the loss tests (``tests/losses``: the independent reference the JAX
losses are checked against). It imports nothing from jalign.
"""

from __future__ import annotations

import numpy as np


def logsig(x):
    """log σ(x) = −log(1 + e^{−x}), stable."""
    return -np.logaddexp(0.0, -x)


def sig(x):
    return np.exp(logsig(x))


def dsig(x):
    s = sig(x)
    return s * (1.0 - s)


def _smoothed(u, eps):
    """−(1−ε) log σ(u) − ε log σ(−u) and its derivative in u."""
    return -(1 - eps) * logsig(u) - eps * logsig(-u), -(1 - eps) * sig(-u) + eps * sig(u)


def _h(d):
    return (d["lw"] - d["rw"]) - (d["ll"] - d["rl"])


def sigmoid(d, beta=0.1, label_smoothing=0.0):
    loss, g = _smoothed(beta * _h(d), label_smoothing)
    return loss, beta * g, -beta * g


def cdpo(d, beta=0.1, label_smoothing=0.1):
    return sigmoid(d, beta, label_smoothing)


def hinge(d, beta=0.1):
    z = beta * _h(d)
    g = np.where(z < 1, -1.0, 0.0) * beta
    return np.maximum(0.0, 1 - z), g, -g


def ipo(d, beta=0.1, ipo_average=True):
    c = 1 / (2 * beta)
    if ipo_average:
        hb = (d["lw"] - d["rw"]) / d["nw"] - (d["ll"] - d["rl"]) / d["nl"]
        return (hb - c) ** 2, 2 * (hb - c) / d["nw"], -2 * (hb - c) / d["nl"]
    h = _h(d)
    return (h - c) ** 2, 2 * (h - c), -2 * (h - c)


def exo_pair(d, beta=0.1, label_smoothing=1e-3):
    z, eps = beta * _h(d), label_smoothing
    q = sig(z)
    loss = q * (logsig(z) - np.log(1 - eps)) + (1 - q) * (logsig(-z) - np.log(eps))
    g = beta * q * (1 - q) * (z - np.log((1 - eps) / eps))
    return loss, g, -g


def nca_pair(d, beta=0.1):
    a, b = beta * (d["lw"] - d["rw"]), beta * (d["ll"] - d["rl"])
    loss = -logsig(a) - 0.5 * logsig(-a) - 0.5 * logsig(-b)
    return loss, beta * (-sig(-a) + 0.5 * sig(a)), beta * 0.5 * sig(b)


def robust(d, beta=0.1, label_smoothing=0.0):
    z, eps = beta * _h(d), label_smoothing
    loss = (-(1 - eps) * logsig(z) + eps * logsig(-z)) / (1 - 2 * eps)
    g = beta * (-(1 - eps) * sig(-z) - eps * sig(z)) / (1 - 2 * eps)
    return loss, g, -g


def bco_pair(d, beta=0.1, reward_shift=0.0):
    rw, rl = beta * (d["lw"] - d["rw"]), beta * (d["ll"] - d["rl"])
    delta = 0.5 * (rw.mean() + rl.mean()) if reward_shift is None else reward_shift
    a, b = rw - delta, rl - delta
    loss = -logsig(a) - logsig(-b)
    if reward_shift is None:
        return loss, None, None
    return loss, -beta * sig(-a), beta * sig(b)


def sppo_hard(d, beta=0.1):
    c = 0.5 / beta
    rw, rl = d["lw"] - d["rw"], d["ll"] - d["rl"]
    return (rw - c) ** 2 + (rl + c) ** 2, 2 * (rw - c), 2 * (rl + c)


def aot(d, beta=0.1, label_smoothing=0.0):
    delta = np.sort(d["lw"] - d["ll"]) - np.sort(d["rw"] - d["rl"])
    return _smoothed(beta * delta, label_smoothing)[0], None, None


def aot_unpaired(d, beta=0.1, label_smoothing=0.0):
    delta = np.sort(d["lw"] - d["rw"]) - np.sort(d["ll"] - d["rl"])
    return _smoothed(beta * delta, label_smoothing)[0], None, None


def apo_zero(d, beta=0.1):
    a, b = beta * (d["lw"] - d["rw"]), beta * (d["ll"] - d["rl"])
    return 1 - sig(a) + sig(b), -beta * dsig(a), beta * dsig(b)


def apo_down(d, beta=0.1):
    a, z = beta * (d["lw"] - d["rw"]), beta * _h(d)
    return sig(a) + 1 - sig(z), beta * dsig(a) - beta * dsig(z), beta * dsig(z)


def discopop(d, beta=0.1, discopop_tau=0.05):
    z, tau = beta * _h(d), discopop_tau
    m = sig(z / tau)
    dm = m * (1 - m) / tau
    loss = -logsig(z) * (1 - m) + np.exp(-z) * m
    g = -sig(-z) * (1 - m) + logsig(z) * dm - np.exp(-z) * m + np.exp(-z) * dm
    return loss, beta * g, -beta * g


def sigmoid_norm(d, beta=0.1):
    hb = (d["lw"] - d["rw"]) / d["nw"] - (d["ll"] - d["rl"]) / d["nl"]
    g = -beta * sig(-beta * hb)
    return -logsig(beta * hb), g / d["nw"], -g / d["nl"]


def rdpo(d, beta=0.1, alpha=0.01):
    u = beta * _h(d) - alpha * (d["nw"] - d["nl"])
    g = -beta * sig(-u)
    return -logsig(u), g, -g


def dpop(d, beta=0.1, lambda_=50.0):
    rw = d["lw"] - d["rw"]
    u = beta * (_h(d) - lambda_ * np.maximum(0.0, -rw))
    return -logsig(u), -sig(-u) * beta * (1 + lambda_ * (rw < 0)), sig(-u) * beta


def rpo(d, beta=0.1, rpo_alpha=1.0):
    z = beta * _h(d)
    return -logsig(z) - rpo_alpha * d["lw"] / d["nw"], -beta * sig(-z) - rpo_alpha / d["nw"], beta * sig(-z)


def sft(d):
    return -d["lw"] / d["nw"], -1 / d["nw"], np.zeros_like(d["ll"])


def cpo(d, beta=0.1, label_smoothing=0.0, cpo_alpha=1.0):
    loss, g = _smoothed(beta * (d["lw"] - d["ll"]), label_smoothing)
    return loss - cpo_alpha * d["lw"] / d["nw"], beta * g - cpo_alpha / d["nw"], -beta * g


def simpo(d, beta=2.0, gamma=1.0, label_smoothing=0.0):
    u = beta * (d["lw"] / d["nw"] - d["ll"] / d["nl"]) - gamma
    loss, g = _smoothed(u, label_smoothing)
    return loss, g * beta / d["nw"], -g * beta / d["nl"]


def orpo(d, beta=0.1):
    aw, al = d["lw"] / d["nw"], d["ll"] / d["nl"]

    def lo(a):
        return a - np.log(1 - np.exp(a))

    def dlo(a):
        return 1 / (1 - np.exp(a))

    v = lo(aw) - lo(al)
    loss = -aw - beta * logsig(v)
    gaw = -1 - beta * sig(-v) * dlo(aw)
    gal = beta * sig(-v) * dlo(al)
    return loss, gaw / d["nw"], gal / d["nl"]


def slic(d, delta=1.0, lambda_=0.1):
    m = delta - d["lw"] + d["ll"]
    act = (m > 0).astype(float)
    return np.maximum(0.0, m) - lambda_ * d["lw"], -act - lambda_, act


def rrhf(d, sft_weight=1.0):
    m = d["ll"] / d["nl"] - d["lw"] / d["nw"]
    act = (m > 0).astype(float)
    return np.maximum(0.0, m) - sft_weight * d["lw"], -act / d["nw"] - sft_weight, act / d["nl"]


PAIRWISE = {
    f.__name__: f
    for f in (
        sigmoid, cdpo, hinge, ipo, exo_pair, nca_pair, robust, bco_pair, sppo_hard, aot, aot_unpaired,
        apo_zero, apo_down, discopop, sigmoid_norm, rdpo, dpop, rpo, sft, cpo, simpo, orpo, slic, rrhf,
    )
}
PAIRWISE["dpo"] = sigmoid


# ----------------------------------------------------------------------------------------------- unpaired


def kto(u, beta=0.1, desirable_weight=1.0, undesirable_weight=1.0, z0=None):
    """Per-example loop over the batch (u: logps, ref_logps, desirable, kl_logps, ref_kl_logps)."""
    if z0 is None:
        z0 = max(0.0, float(np.mean(u["kl_logps"] - u["ref_kl_logps"])))
    out = []
    for lp, rp, des in zip(u["logps"], u["ref_logps"], u["desirable"], strict=True):
        r = lp - rp
        if des:
            out.append(desirable_weight * (1 - sig(beta * (r - z0))))
        else:
            out.append(undesirable_weight * (1 - sig(beta * (z0 - r))))
    return np.array(out)


def bco(u, beta=0.1, reward_shift=None):
    rew = beta * (u["logps"] - u["ref_logps"])
    delta = rew.mean() if reward_shift is None else reward_shift
    return np.array([-logsig(x - delta) if des else -logsig(-(x - delta)) for x, des in zip(rew, u["desirable"], strict=True)])


UNPAIRED = {"kto": kto, "bco": bco}


# ----------------------------------------------------------------------------------------------- listwise


def pro(l, beta=1.0, length_normalize=True):
    """Plackett–Luce NLL per list by explicit loops; ties: risk set = items with score <= own score."""
    out = []
    for b in range(l["logps"].shape[0]):
        valid = [k for k in range(l["logps"].shape[1]) if l["mask"] is None or l["mask"][b, k]]
        s = {k: beta * (l["logps"][b, k] / l["lengths"][b, k] if length_normalize else l["logps"][b, k]) for k in valid}
        total = 0.0
        for k in valid:
            risk = [j for j in valid if l["scores"][b, j] <= l["scores"][b, k]]
            total += np.logaddexp.reduce([s[j] for j in risk]) - s[k]
        out.append(total)
    return np.array(out)


def pro_permutation(logps_k, order):
    """Textbook PL NLL of the permutation ``order`` (best first): Σ_k −log(e^{s_k} / Σ_{j≥k} e^{s_j})."""
    s = [logps_k[i] for i in order]
    return sum(-(s[k] - np.logaddexp.reduce(s[k:])) for k in range(len(s)))


def lipo(l, beta=0.1):
    out = []
    for b in range(l["logps"].shape[0]):
        valid = [k for k in range(l["logps"].shape[1]) if l["mask"] is None or l["mask"][b, k]]
        s = {k: beta * (l["logps"][b, k] - l["ref_logps"][b, k]) for k in valid}
        psi = {k: l["scores"][b, k] for k in valid}
        # rank by s descending, ties against the labels (lower psi first), then index
        order = sorted(valid, key=lambda k: (-s[k], psi[k], k))
        tau = {k: i + 1 for i, k in enumerate(order)}
        total = 0.0
        for i in valid:
            for j in valid:
                if psi[i] > psi[j]:
                    gi, gj = 2.0 ** psi[i] - 1, 2.0 ** psi[j] - 1
                    w = abs(gi - gj) * abs(1 / np.log2(1 + tau[i]) - 1 / np.log2(1 + tau[j]))
                    total += -w * logsig(s[i] - s[j])
        out.append(total)
    return np.array(out)


LISTWISE = {"pro": pro, "lipo": lipo}
