"""Benchmark every registered loss: jitted JAX forward + backward vs the same formulas in plain numpy.

``python -m bench.losses [--batch 4096] [--repeats 7] [--out PATH]``

JAX: ``jax.jit(jax.value_and_grad(Σ loss))`` w.r.t. the policy log-probs (all batch fields for simplicity),
B = 4096 (listwise: B = 4096 lists of K = 4). numpy (float64): the same per-example formulas, vectorised;
for the pairwise losses with a hand-derived gradient (all but the batch-coupled ``aot``/``aot_unpaired``)
the analytic backward is included (``numpy_backward = "analytic"``), otherwise forward only
(``"none"``). ``ratio = numpy_s / jax_s`` (> 1: JAX is faster). Both measured in the same run, medians of
``repeats`` after a warm-up (JAX compilation excluded). Losses of kinds without a numpy baseline here
(policy-gradient ``scored``, f-DPG ``sampled``) are listed with ``jax_s`` only.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from bench import reference_numpy as ref
from bench.harness import timeit, write_result
from jalign import losses


def _np_logsig(x):
    return -np.logaddexp(0.0, -x)


def np_kto(u, beta=0.1, desirable_weight=1.0, undesirable_weight=1.0, z0=None):
    r = u["logps"] - u["ref_logps"]
    if z0 is None:
        z0 = max(0.0, float(np.mean(u["kl_logps"] - u["ref_kl_logps"])))
    d = desirable_weight * (1 - np.exp(_np_logsig(beta * (r - z0))))
    n = undesirable_weight * (1 - np.exp(_np_logsig(beta * (z0 - r))))
    return np.where(u["desirable"], d, n)


def np_bco(u, beta=0.1, reward_shift=None):
    rew = beta * (u["logps"] - u["ref_logps"])
    delta = rew.mean() if reward_shift is None else reward_shift
    return -_np_logsig(np.where(u["desirable"], 1.0, -1.0) * (rew - delta))


def np_pro(l, beta=1.0, length_normalize=True):
    s = beta * (l["logps"] / l["lengths"] if length_normalize else l["logps"])
    risk = l["scores"][:, None, :] <= l["scores"][:, :, None]
    x = np.where(risk, s[:, None, :], -np.inf)
    m = x.max(-1, keepdims=True)
    denom = (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))[..., 0]
    return (denom - s).sum(-1)


def np_lipo(l, beta=0.1):
    s = beta * (l["logps"] - l["ref_logps"])
    psi = l["scores"]
    k = s.shape[-1]
    idx = np.arange(k)
    si, sj, pi, pj = s[:, :, None], s[:, None, :], psi[:, :, None], psi[:, None, :]
    before = (sj > si) | ((sj == si) & (pj < pi)) | ((sj == si) & (pj == pi) & (idx[None, :] < idx[:, None]))
    tau = 1.0 + before.sum(-1)
    inv_d = 1.0 / np.log2(1.0 + tau)
    g = 2.0**psi - 1.0
    w = np.abs(g[:, :, None] - g[:, None, :]) * np.abs(inv_d[:, :, None] - inv_d[:, None, :])
    nll = -_np_logsig(si - sj)
    return np.where(pi > pj, w * nll, 0.0).sum((-1, -2))


NUMPY_OTHER = {"kto": np_kto, "bco": np_bco, "pro": np_pro, "lipo": np_lipo}


def make_data(b: int, k: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    nw, nl = rng.integers(3, 200, b).astype(np.float64), rng.integers(3, 200, b).astype(np.float64)
    lw, ll = -nw * rng.uniform(0.05, 2.0, b), -nl * rng.uniform(0.05, 2.0, b)
    pw = {"lw": lw, "ll": ll, "rw": lw + rng.normal(0, 4, b), "rl": ll + rng.normal(0, 4, b), "nw": nw, "nl": nl}
    logps = -rng.uniform(1, 100, b)
    up = {"logps": logps, "ref_logps": logps + rng.normal(0, 4, b), "desirable": rng.random(b) < 0.5,
          "kl_logps": -rng.uniform(1, 100, b), "ref_kl_logps": -rng.uniform(1, 100, b)}
    n = rng.integers(3, 200, (b, k)).astype(np.float64)
    lp = -n * rng.uniform(0.05, 2.0, (b, k))
    lw_ = {"logps": lp, "ref_logps": lp + rng.normal(0, 4, (b, k)), "lengths": n,
           "scores": rng.integers(0, 4, (b, k)).astype(np.float64)}
    return pw, up, lw_


def jax_batches(pw, up, lw):
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return {
        "pairwise": losses.PairwiseLogps(
            chosen_logps=f(pw["lw"]), rejected_logps=f(pw["ll"]), ref_chosen_logps=f(pw["rw"]),
            ref_rejected_logps=f(pw["rl"]), chosen_lengths=f(pw["nw"]), rejected_lengths=f(pw["nl"])),
        "unpaired": losses.UnpairedLogps(
            logps=f(up["logps"]), ref_logps=f(up["ref_logps"]), desirable=jnp.asarray(up["desirable"]),
            kl_logps=f(up["kl_logps"]), ref_kl_logps=f(up["ref_kl_logps"])),
        "listwise": losses.ListwiseLogps(
            logps=f(lw["logps"]), scores=f(lw["scores"]), ref_logps=f(lw["ref_logps"]), lengths=f(lw["lengths"])),
    }


def run(batch: int = 4096, repeats: int = 15) -> list[dict]:
    pw, up, lw = make_data(batch)
    batches = jax_batches(pw, up, lw)
    rows = []
    seen = set()
    for name in losses.names():
        s = losses.spec(name)
        if s.name in seen:
            continue
        seen.add(s.name)
        row: dict = {"loss": s.name, "kind": s.kind}
        if s.kind not in batches:
            row.update({"jax_s": float("nan"), "numpy_s": float("nan"), "ratio": float("nan"),
                        "numpy_backward": "n/a (no batch here)"})
            rows.append(row)
            continue
        fn = losses.get(s.name)
        step = jax.jit(jax.value_and_grad(lambda b, fn=fn: fn(b, validate=False).sum(), allow_int=True))
        b = batches[s.kind]
        jax.block_until_ready(step(b))
        jt = timeit(lambda step=step, b=b: jax.block_until_ready(step(b)), repeats=repeats)["median_s"]
        if s.kind == "pairwise":
            f = ref.PAIRWISE[s.name]
            _, gw, _ = f(pw)
            backward = "analytic" if gw is not None else "none"
            nt = timeit(lambda f=f: f(pw), repeats=repeats)["median_s"]
        else:
            f = NUMPY_OTHER[s.name]
            data = up if s.kind == "unpaired" else lw
            got = np.asarray(fn(b))
            np.testing.assert_allclose(got, f(data), rtol=2e-3, atol=2e-3)  # same formula, float32 vs float64
            backward = "none"
            nt = timeit(lambda f=f, data=data: f(data), repeats=repeats)["median_s"]
        row.update({"jax_s": jt, "numpy_s": nt, "ratio": nt / jt, "numpy_backward": backward})
        rows.append(row)
        print(f"{s.name:14s} jax {jt * 1e3:8.3f} ms   numpy {nt * 1e3:8.3f} ms   ratio {nt / jt:6.2f}  ({backward})")
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    rows = run(args.batch, args.repeats)
    path = write_result(
        "losses",
        {
            "description": (
                f"Every registered loss, B={args.batch} (listwise K=4), float32. jax_s: jitted forward+backward "
                "(value_and_grad of the summed loss); numpy_s: the same formulas in float64 numpy, forward plus "
                "the analytic backward where numpy_backward='analytic', forward only where 'none'. "
                "ratio = numpy_s / jax_s (>1: JAX faster). Medians, same run, same machine "
                f"({jax.devices()[0].platform})."
            ),
            "rows": rows,
        },
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
