"""bench/README.md and the generated tables of docs/performance.md are what ``python -m bench.table`` makes of
bench/results; every result records its CPU (bench.harness.cpu_info), parsed exactly from /proc/cpuinfo."""

import json
from pathlib import Path

import pytest

from bench import harness, table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

# Two logical CPUs of an x86 host. The flags hold near-misses of the recorded names (avx512fp16 is not
# avx512f, amx_bf16x is not amx_bf16, avx2 alone is not avx) and differ between the CPUs: a flag counts only
# if every CPU has it (amx_tile is on CPU 0 only).
X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2 avx2 fma avx512fp16 avx512bw avx512_bf16 amx_bf16x amx_tile avx_vnni
bugs\t\t: spectre_v1

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2 avx2 fma avx512fp16 avx512bw avx512_bf16 amx_bf16x avx_vnni
bugs\t\t: spectre_v1
"""

# AArch64 Linux: no model name, ISA in "Features", a trailing global block.
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes sve sve2 bf16 i8mm
CPU implementer\t: 0x41
CPU part\t: 0xd4f

processor\t: 1
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes sve sve2 bf16 i8mm
CPU implementer\t: 0x41
CPU part\t: 0xd4f
"""


def test_parse_cpuinfo_reads_flags_exactly():
    info = harness.parse_cpuinfo(X86)
    assert info["cpu_model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert info["cores"] == 2
    present = {"sse4_2", "avx2", "fma", "avx512bw", "avx512_bf16", "avx_vnni"}
    assert info["isa"] == {f: f in present for f in harness.ISA_FLAGS}
    assert set(info["isa"]) == set(harness.ISA_FLAGS)
    assert harness.isa_summary(info["isa"]) == "AVX2, FMA, AVX-VNNI, AVX-512BW, AVX512-BF16"


def test_parse_cpuinfo_aarch64_and_empty_text():
    info = harness.parse_cpuinfo(ARM)
    assert info["cpu_model"] == "0x41/0xd4f" and info["cores"] == 2
    present = {"asimd", "sve", "sve2", "bf16", "i8mm"}
    assert info["isa"] == {f: f in present for f in harness.ISA_FLAGS}
    assert harness.isa_summary(info["isa"]) == "ASIMD, SVE, SVE2, BF16, I8MM"  # no x86 bf16 remark
    empty = harness.parse_cpuinfo("")
    assert empty == {"cpu_model": None, "isa": dict.fromkeys(harness.ISA_FLAGS, False), "cores": 0}


def test_isa_summary_names_missing_bf16_and_unknown():
    avx2_only = {f: f in ("sse4_2", "avx", "avx2", "fma") for f in harness.ISA_FLAGS}
    assert harness.isa_summary(avx2_only) == "AVX, AVX2, FMA, no bf16 instructions"
    amx = {**avx2_only, "avx512f": True, "amx_tile": True, "amx_bf16": True}
    assert harness.isa_summary(amx) == "AVX, AVX2, FMA, AVX-512F, AMX-TILE, AMX-BF16"
    assert harness.isa_summary(dict.fromkeys(harness.ISA_FLAGS)) == "not recorded"
    assert harness.isa_summary({}) == "not recorded"


def test_cpu_info_reads_the_file_and_falls_back(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(X86)
    info = harness.cpu_info(path)
    assert info["source"] == "/proc/cpuinfo" and info["cores"] == 2 and info["isa"]["avx512_bf16"] is True
    assert isinstance(info["usable_cores"], int) and info["usable_cores"] >= 1
    missing = harness.cpu_info(tmp_path / "absent")
    assert missing["source"] == "platform"
    assert missing["isa"] == dict.fromkeys(harness.ISA_FLAGS)  # unknown, not False
    (tmp_path / "blank").write_text("\n")
    assert harness.cpu_info(tmp_path / "blank")["source"] == "platform"


def test_write_result_records_the_cpu(tmp_path):
    path = harness.write_result("demo", {"rows": [{"a": 1.0}]}, tmp_path / "demo.json")
    data = json.loads(path.read_text())
    assert data["cpu"]["isa"].keys() == set(harness.ISA_FLAGS)
    assert data["cpu"] == {**harness.cpu_info(), "usable_cores": data["cpu"]["usable_cores"]}
    assert table.cpu_line(data).startswith(f"CPU: {data['cpu']['cpu_model']}, ")


def test_every_benchmark_records_the_cpu():
    """A module that writes its own JSON (not through write_result) adds cpu_info() to every payload."""
    own = {}
    for path in sorted((ROOT / "bench").glob("*.py")):
        src = path.read_text()
        if path.stem not in ("harness", "table") and "write_text(json.dumps" in src:
            own[path.stem] = src.count('"cpu": cpu_info()')
    # peer_trl writes two payloads (the comparison and --ablate); the others one.
    assert own == {"gemm_bound": 1, "host_allocator": 1, "peer_trl": 2}


def test_cpu_line_old_and_new_results():
    assert table.cpu_line({"time": "x"}) == "CPU: not recorded (result written before CPU model and ISA were recorded)"
    rec = {"cpu_model": "AMD EPYC", "cores": 8, "usable_cores": 2,
           "isa": {f: f in ("avx", "avx2") for f in harness.ISA_FLAGS}}
    assert table.cpu_line({"cpu": rec}) == "CPU: AMD EPYC, 8 cores (2 usable); ISA: AVX, AVX2, no bf16 instructions"
    assert table.run_line({"time": "T", "cpu": {**rec, "usable_cores": 8}}) == (
        "Run T. CPU: AMD EPYC, 8 cores; ISA: AVX, AVX2, no bf16 instructions.")


def test_bench_readme_is_current():
    text = (ROOT / "bench" / "README.md").read_text()
    assert text == table.render(), "run python -m bench.table"
    sections = text.count("\n## ")
    assert sections == len(list(RESULTS.glob("*.json")))
    assert text.count("\nRun ") == sections and text.count(". CPU: ") == sections  # one CPU line per result
    assert "Machine: ," not in text


def test_performance_doc_tables_are_generated_from_the_json():
    text = (ROOT / "docs" / "performance.md").read_text()
    for name in table.DOC_TABLES:
        data = json.loads((RESULTS / f"{name}.json").read_text())
        assert table.doc_table(text, data, name) == text, "run python -m bench.table"
    for name in ("peer_trl", "peer_trl_trl019"):
        data = json.loads((RESULTS / f"{name}.json").read_text())
        start, end = table.markers(name)
        block = text[text.index(start):text.index(end)]
        assert all(f"| {c['ratio']:.2f} |" in block for c in data["configs"]) and len(data["configs"]) == 6


def test_doc_table_needs_its_markers():
    with pytest.raises(ValueError, match="markers"):
        table.doc_table("no markers here", {"configs": [], "matmul_peak_gflops": {}})


def test_readme_headline_matches_the_json():
    """The README keeps no generated table, only the headline ranges, which must be the JSON's."""
    readme = (ROOT / "README.md").read_text()
    assert "<!--" not in readme.split("## Tests and benchmarks")[1]
    assert "(docs/performance.md)" in readme and "(bench/README.md)" in readme
    ratios = {name: {(c["n_embd"], c["dtype"]): c["ratio"] for c in json.loads((RESULTS / f"{name}.json").read_text())
                     ["configs"]} for name in ("peer_trl", "peer_trl_trl019")}
    flat = " ".join(readme.split())
    for name, dtype in (("peer_trl_trl019", "bfloat16"), ("peer_trl", "bfloat16"), ("peer_trl", "float32")):
        r = [v for (_, dt), v in ratios[name].items() if dt == dtype]
        assert f"{min(r):.2f}–{max(r):.2f}×" in flat, (name, dtype)
    slower = sorted(v for (_, dt), v in ratios["peer_trl_trl019"].items() if dt == "float32" and v < 1)
    assert f"(ratio {slower[1]:.2f} and {slower[0]:.2f})" in flat
