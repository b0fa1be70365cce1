"""bench.grpo: its FLOP count against an independent one, the committed result's derived columns against its raw
times, and bench/README.md's rendering of it."""

import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from bench import grpo, harness, table
from jalign.models import ModelConfig

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "grpo.json"


@pytest.mark.parametrize("d,layers,ff,vocab,seq", [(128, 4, 512, 259, 64), (256, 4, 1024, 8192, 64)])
def test_flops_independent_count(d, layers, ff, vocab, seq):
    cfg = ModelConfig(arch="gpt2", vocab_size=vocab, d_model=d, n_layers=layers, n_heads=d // 64, d_ff=ff,
                      max_seq_len=seq)
    # per token forward: 2 FLOPs per matmul weight (q, k, v, o: 4 d², MLP: 2 d ff, unembedding V d) + attention
    # scores and weighted sum over T keys (2 · 2 T d per layer)
    n_mat = layers * (4 * d * d + 2 * d * ff) + vocab * d
    fwd = 16 * seq * (2 * n_mat + 4 * layers * seq * d)
    f = grpo.flops(cfg, 16, seq, num_iterations=2)
    assert f["forward"] == pytest.approx(fwd, rel=1e-12)
    assert f["step"] == pytest.approx(2 * fwd + 2 * 3 * fwd, rel=1e-12)  # 2 no-grad passes + 2 × (fwd + bwd)


def test_even_token_reward():
    ids = np.array([[2, 3, 4, 6], [1, 1, 2, 9]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    np.testing.assert_allclose(grpo.even_token_reward(None, ids, mask), [2 / 3, 0.0])
    np.testing.assert_allclose(grpo.even_token_reward(None, ids, np.zeros_like(mask)), [0.0, 0.0])


def test_committed_result_columns_follow_from_its_times():
    data = json.loads(RESULT.read_text())
    s = data["settings"]
    rows_n, seq = s["prompts"] * s["group_size"], s["prompt_len"] + s["new_tokens"]
    assert {r["model"].split()[0] for r in data["rows"]} == {"small_lm", "gpt2-shaped"}
    assert data["cpu"]["cpu_model"] and data["cpu"]["isa"]["avx2"] is not None and data["load_average"]
    for r in data["rows"]:
        t = {k: statistics.median(v) for k, v in data["times"][r["model"]].items()}
        assert all(len(v) == s["rounds"] for v in data["times"][r["model"]].values())
        assert r["sample_s"] == t["sample"] and r["step_s"] == t["step"] and r["forward_s"] == t["forward"]
        assert r["update_s"] == pytest.approx(t["step"] - 2 * t["logps"], rel=1e-12)
        assert r["iteration_s"] == pytest.approx(t["sample"] + t["host"] + t["step"], rel=1e-12)
        assert r["sample_share"] + r["step_share"] + t["host"] / r["iteration_s"] == pytest.approx(1.0)
        # same model FLOPs credited to both: the rate ratio is the time ratio
        assert r["fwd_over_sample_rate"] == pytest.approx(t["sample"] / t["forward"], rel=1e-9)
        assert r["forward_gflops_per_s"] / r["sample_gflops_per_s"] == pytest.approx(r["fwd_over_sample_rate"])
        assert r["sampled_tokens_per_s"] == pytest.approx(rows_n * s["new_tokens"] / t["sample"])
        assert r["update_tokens_per_s"] == pytest.approx(s["num_iterations"] * rows_n * seq / t["step"])
        assert r["filter_share_of_sample"] == pytest.approx(t["filter"] / t["sample"])
        assert r["sample_over_greedy"] == pytest.approx(t["sample"] / t["greedy"])
        trl = {k: statistics.median(v) for k, v in data["trl_times"][r["model"]].items()}
        assert all(len(v) == s["rounds"] for v in data["trl_times"][r["model"]].values())
        assert r["trl_sample_s"] == trl["sample_s"] and r["trl_round_s"] == trl["round_s"]
        assert r["trl_sample_over_jalign"] == pytest.approx(trl["sample_s"] / t["sample"], rel=1e-12)
        assert r["trl_round_over_jalign"] == pytest.approx(trl["round_s"] / r["iteration_s"], rel=1e-12)
        for i in range(s["rounds"]):  # a TRL round is its sampling + scoring + updates
            parts = sum(data["trl_times"][r["model"]][k][i] for k in ("sample_s", "score_s", "update_s"))
            assert parts == pytest.approx(data["trl_times"][r["model"]]["round_s"][i], rel=1e-9)
    assert data["versions"]["trl"] and data["peer"]["versions"]["torch"]


def test_bench_readme_renders_the_grpo_result():
    data = json.loads(RESULT.read_text())
    text = table.render()
    sec = text[text.index("## grpo\n"):]
    sec = sec[:sec.index("\n## ")] if "\n## " in sec else sec
    assert data["description"] in sec
    cols = list(data["rows"][0])
    assert "| " + " | ".join(cols) + " |" in sec
    for r in data["rows"]:
        line = next(ln for ln in sec.splitlines() if ln.startswith(f"| {r['model']} |"))
        for c in ("sample_s", "step_s", "fwd_over_sample_rate", "sample_share", "filter_share_of_sample"):
            assert f" {r[c]:.4g} " in line, c
    assert f"; ISA: {harness.isa_summary(data['cpu']['isa'])}." in sec
    assert sec.count("\nRun ") == 1


def test_performance_doc_quotes_the_result():
    """The hand-written table and headline of docs/performance.md are the committed result's numbers."""
    data = json.loads(RESULT.read_text())
    text = (ROOT / "docs" / "performance.md").read_text()
    sec = text[text.index("## One GRPO iteration (`bench.grpo`)"):text.index("## Limits and open work")]
    lines = {"small_lm": "| small LM (", "gpt2-shaped": "| GPT-2-shaped ("}
    for r in data["rows"]:
        line = next(ln for ln in sec.splitlines() if ln.startswith(lines[r["model"].split()[0]]))
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        assert cells == [
            f"{r['sample_s']:.3f}", f"{r['step_s']:.3f} ({2 * r['logps_pass_s']:.3f} + {r['update_s']:.3f})",
            f"{100 * r['sample_share']:.0f}%", f"{r['sampled_tokens_per_s']:.0f}", f"{r['forward_gflops_per_s']:.1f}",
            f"{r['sample_gflops_per_s']:.2f}", f"{r['fwd_over_sample_rate']:.2f}",
            f"{r['greedy_sample_s']:.3f} ({r['sample_over_greedy']:.2f}×)",
            f"{r['filter_logits_s']:.3f} ({100 * r['filter_share_of_sample']:.0f}%)"]
        trl_line = next(ln for ln in sec.splitlines() if ln.startswith(lines[r["model"].split()[0]].replace(" (", " |")))
        assert [c.strip() for c in trl_line.strip("|").split("|")][1:] == [
            f"{r['trl_sample_s']:.3f}", f"{r['trl_score_s']:.3f}", f"{r['trl_update_s']:.3f}", f"{r['trl_round_s']:.3f}",
            f"{r['trl_sample_over_jalign']:.2f}", f"{r['trl_round_over_jalign']:.2f}"]
        assert f"{r['fwd_over_sample_rate']:.1f}×" in sec
        assert f"{r['greedy_sample_s'] / r['forward_s']:.1f}×" in sec  # greedy sampler vs the forward pass
    assert harness.isa_summary(data["cpu"]["isa"]).startswith("AVX, AVX2, FMA, AVX-VNNI, AVX-512F")
    assert "no AMX" in sec and not data["cpu"]["isa"]["amx_tile"]
    assert f"{data['wall_s']:.0f} s in all" in sec
