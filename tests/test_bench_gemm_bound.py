"""bench.gemm_bound: its product list is exactly the step's model FLOPs, and its jitted products are right."""

import numpy as np
import pytest

from bench import gemm_bound as gb
from bench.peer_trl import jalign_cfg, jalign_flops_per_step


@pytest.mark.parametrize("d,l,s", [(128, 2, 128), (256, 4, 256), (512, 6, 256)])
def test_products_are_the_steps_model_flops(d, l, s):
    # independent count: ModelConfig.flops_per_token (6 N + 12 L T d per token, policy fwd+bwd) + reference fwd
    assert gb.flops(gb.step_products(d, l, s)) == jalign_flops_per_step(jalign_cfg(d, l, s, "float32"), s)


def test_product_counts():
    prods = gb.step_products(64, 1, 8)
    dense = [p for p in prods if gb.kind(p) == "dense"]
    attn = [p for p in prods if gb.kind(p) == "attention"]
    # per layer: 4 projections x (2 forwards + 2 backward products); unembedding 2 forwards + 2 backward
    assert len(dense) == 4 * 4 + 4
    # per layer: q kᵀ and p v in 2 forwards, 4 backward products
    assert len(attn) == 2 * 2 + 4
    assert all(p[0] == 2 * gb.PAIRS for p in attn)  # batch = rows x heads (one head at d = 64)


@pytest.mark.parametrize("rowmajor", [False, True])
def test_jax_products_match_numpy(rowmajor):
    prods = gb.step_products(64, 1, 8)
    ops = gb.operands(prods, np.float32, seed=3)
    outs = gb.jax_fn(prods, rowmajor)(ops)
    assert len(outs) == len(prods)
    for (b, m, k, n, tl, tr), (a, w), y in zip(prods, ops, outs, strict=True):
        a64, w64 = a.astype(np.float64), w.astype(np.float64)
        a64 = np.swapaxes(a64, -1, -2) if tl else a64
        w64 = np.swapaxes(w64, -1, -2) if tr else w64
        assert a64.shape[-2:] == (m, k) and w64.shape[-2:] == (k, n)
        assert y.shape == ((m, n) if b == 1 else (b, m, n))
        np.testing.assert_allclose(np.asarray(y), a64 @ w64, rtol=1e-4, atol=1e-3 * np.sqrt(k))


def test_per_product_summary_weights_by_count():
    rows = [{"kind": "dense", "count": 3, "gflop": 2.0, "jax_canonical_s": 0.1, "jax_rowmajor_s": 0.2, "torch_s": 0.05},
            {"kind": "attention", "count": 2, "gflop": 1.0, "jax_canonical_s": 0.5, "jax_rowmajor_s": 0.6,
             "torch_s": 0.1}]
    s = gb.per_product_summary(rows)
    assert s["dense"] == pytest.approx({"gflop": 6.0, "jax_canonical_s": 0.3, "jax_rowmajor_s": 0.6, "torch_s": 0.15})
    assert s["attention"] == pytest.approx({"gflop": 2.0, "jax_canonical_s": 1.0, "jax_rowmajor_s": 1.2,
                                            "torch_s": 0.2})
    assert s["all"]["jax_rowmajor_s"] == pytest.approx(1.8)


def test_markdown_table_shows_the_numbers():
    row = {"n_embd": 512, "n_layer": 6, "seq": 256, "dtype": "float32", "gflop": 807.45, "torch_s": 3.7208,
           "jax_rowmajor_s": 4.6109, "trl_step_s": 4.6684, "jalign_step_s": 6.7946, "trl_step_over_torch_bound": 1.2547,
           "jalign_step_over_jax_rowmajor_bound": 1.4736}
    t = gb.markdown_table({"configs": [row], "versions": {"jax": "x"}})
    for cell in ("| 807 |", "| 3.721 |", "| 4.611 |", "| 4.668 |", "| 6.795 |", "| 1.25 |", "| 1.47 |", "| — | — |"):
        assert cell in t
    row["per_product_summary"] = {"all": {"jax_canonical_s": 3.6659, "torch_s": 2.9846},
                                  "attention": {"jax_canonical_s": 0.6723, "torch_s": 0.287}}
    assert "| 3.666 / 2.985 | 0.672 / 0.287 |" in gb.markdown_table({"configs": [row]})


def test_parse_configs():
    assert gb.parse_configs("256/4/256,512/6/256", pytest.fail) == [(256, 4, 256), (512, 6, 256)]

    def error(msg):
        raise SystemExit(msg)

    for bad, field in (("256/4", "n_embd/layers/seq"), ("a/4/256", "n_embd/layers/seq"), ("100/4/256", "multiple of 64"),
                       ("256/0/256", "layers > 0")):
        with pytest.raises(SystemExit, match=field):
            gb.parse_configs(bad, error)


def test_cli_rejects_bad_dtypes_before_any_work(tmp_path, capsys):
    out = tmp_path / "r.json"
    for args, flag in ((["--dtypes", "float16"], "--dtypes"), (["--steps", "0"], "--steps"),
                       (["--rounds", "-1"], "--rounds")):
        with pytest.raises(SystemExit):
            gb.main(["--out", str(out), *args])
        assert flag in capsys.readouterr().err and not out.exists()
