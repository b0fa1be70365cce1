import json

from jalign.cli import main


def test_losses_json_lists_registered_losses(capsys):
    assert main(["losses", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert by_name["sigmoid"]["aliases"] == ["dpo"]
    assert by_name["sigmoid"]["hparams"] == {"beta": 0.1, "label_smoothing": 0.0}


def test_reproduce_unknown_name_lists_valid(capsys):
    assert main(["reproduce", "no-such-thing", "--out", "unused"]) == 2
    assert "valid:" in capsys.readouterr().err


def test_reproduce_unwritable_out_fails_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    import pytest

    with pytest.raises(SystemExit, match="not writable"):
        main(["reproduce", "all", "--out", str(blocker / "sub")])


def test_report_renders_claims_table(tmp_path):
    from jalign.reporting import evidence, render_markdown, write_report

    summary = {
        "quick": True,
        "reproductions": {
            "toy": {"status": "ok", "claims": [
                {"paper": "P", "claim": "a | b", "measured": "0.1", "status": "holds",
                 "evidence": evidence("exact", rule="|x| < 1", estimate=0.1)},
                {"paper": "P", "claim": "c", "measured": "2", "status": "does not hold", "source": "reconstruction",
                 "evidence": evidence("seeds", seeds=3, estimate=2.0, interval=(1.5, 2.5), rule="below 1")},
            ]},
            "bad": {"status": "failed", "error": "boom"},
        },
        "missing": {"x": "later"},
    }
    md = render_markdown(summary, tmp_path)
    assert "| toy | P | a \\| b | paper | 0.1 | exact; 0.1; rule: \\|x\\| < 1 | ✅ holds |" in md
    assert ("| toy | P | c | reconstruction | 2 | seeds; 3 seeds; 2 [1.5, 2.5]; rule: below 1 | ❌ does not hold |"
            in md)
    assert "| bad |  | (reproduction failed) |  | boom | — | ⚪ not reproducible here |" in md
    assert "3 claims: 1 holds, 1 does not hold, 0 inconclusive, 0 by construction, 1 not reproducible here." in md
    assert "Not implemented yet: x." in md
    paths = write_report(summary, tmp_path)
    assert sorted(p.name for p in paths) == ["report.html", "report.md"]
    assert "<td>a | b</td>" in (tmp_path / "report.html").read_text()


def test_report_rejects_unknown_status_and_claims_without_evidence(tmp_path):
    import pytest

    from jalign.reporting import evidence, render_markdown

    bad = {"reproductions": {"t": {"status": "ok", "claims": [{"claim": "c", "status": "maybe"}]}}}
    with pytest.raises(ValueError, match="claim status 'maybe'"):
        render_markdown(bad, tmp_path)
    bare = {"paper": "P", "claim": "c", "measured": "m", "status": "holds"}
    with pytest.raises(ValueError, match=r"reproduction 't', claim 1: the claim has no evidence"):
        render_markdown({"reproductions": {"t": {"status": "ok", "claims": [
            {**bare, "evidence": evidence("exact", rule="r")}, bare]}}}, tmp_path)
    with pytest.raises(ValueError, match="≥ 3 seeds"):  # a malformed evidence object is refused too
        render_markdown({"reproductions": {"t": {"status": "ok", "claims": [
            {**bare, "evidence": evidence("seeds", seeds=1, estimate=0.5, rule="r")}]}}}, tmp_path)


def test_report_only_rebuilds_the_report_from_saved_results(tmp_path, capsys):
    import json

    (tmp_path / "fdpg").mkdir()
    claim = {"paper": "Go et al.", "claim": "JS balances | both", "measured": "x = 1", "status": "inconclusive",
             "evidence": {"kind": "seeds", "seeds": 1, "estimate": 1.0, "interval": None, "rule": "one seed"}}
    (tmp_path / "fdpg" / "results.json").write_text(json.dumps({"quick": True, "claims": [claim]}))
    assert main(["reproduce", "fdpg", "--out", str(tmp_path), "--report-only"]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "| fdpg | Go et al. | JS balances \\| both | paper | x = 1 | seeds; 1 seeds; 1; rule: one seed | ❔ inconclusive |" in md
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fdpg", "report.html", "report.md"]  # nothing run
    # a reproduction without saved results is reported as such, with a non-zero exit
    assert main(["reproduce", "copg-bandit", "--out", str(tmp_path), "--report-only"]) == 1
    assert "no results" in (tmp_path / "report.md").read_text()


def test_reproduce_names_a_list_and_skips_lm_halves_only_where_they_exist(tmp_path, monkeypatch, capsys):
    import types

    import paper_repro

    calls = []

    def make(name, with_lm):
        def run_lm(out, *, quick=True, lm=True):
            calls.append((name, quick, lm))
            (out / "results.json").write_text(json.dumps({"quick": quick, "claims": []}))
            return {"claims": []}

        def run_plain(out, *, quick=True):
            calls.append((name, quick, None))
            (out / "results.json").write_text(json.dumps({"quick": quick, "claims": []}))
            return {"claims": []}

        return types.SimpleNamespace(run=run_lm if with_lm else run_plain)

    monkeypatch.setattr(paper_repro, "registry", lambda: {"a": make("a", True), "b": make("b", False)})
    assert main(["reproduce", "a,nope", "--out", str(tmp_path)]) == 2
    assert "'nope'" in capsys.readouterr().err and not calls  # validated before anything runs
    assert main(["reproduce", "a, b", "--full", "--no-lm", "--jobs", "1", "--out", str(tmp_path)]) == 0
    assert calls == [("a", False, False), ("b", False, None)]
    assert (tmp_path / "report.md").is_file()  # several names: a summary and a report, as for 'all'
    assert json.loads((tmp_path / "summary.json").read_text())["quick"] is False
    calls.clear()
    assert main(["reproduce", "a", "--out", str(tmp_path / "one")]) == 0
    assert calls == [("a", True, True)] and not (tmp_path / "one" / "report.md").exists()


_FAKE_PART = '''
import json, os

NAME = {name!r}


def run(out, *, quick=True{lm_arg}):
    if {fail!r}:
        raise RuntimeError("planted failure")
    res = {{"quick": quick, "lm": {lm_value}, "pid": os.getpid(),
            "claims": [{{"paper": "P", "claim": NAME, "measured": "1", "status": "holds",
                         "evidence": {{"kind": "exact", "seeds": 0, "estimate": 1.0, "interval": None,
                                       "rule": "r"}}}}]}}
    (out / "results.json").write_text(json.dumps(res))
    return res
'''


def test_reproduce_jobs_runs_parts_in_worker_processes_with_the_sequential_results(tmp_path, monkeypatch, capfd):
    """--jobs 2: each reproduction runs in its own spawned process (the module imported by name there), with
    the arguments of a sequential run; a failing part is reported and leaves its earlier results in place; the
    summary keeps the order of the names; a bad --jobs stops before any work."""
    import importlib
    import os

    import paper_repro

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    specs = {"a": (True, False), "b": (False, False), "c": (False, True)}  # name: (has an lm half, fails)
    for name, (has_lm, fail) in specs.items():
        (pkg / f"fake_repro_{name}.py").write_text(_FAKE_PART.format(
            name=name, fail=fail, lm_arg=", lm=True" if has_lm else "", lm_value="lm" if has_lm else "None"))
    monkeypatch.syspath_prepend(str(pkg))
    reg = {n: importlib.import_module(f"fake_repro_{n}") for n in specs}
    monkeypatch.setattr(paper_repro, "registry", lambda: reg)

    out = tmp_path / "out"
    (out / "c").mkdir(parents=True)
    (out / "c" / "results.json").write_text('{"earlier": true}')
    assert main(["reproduce", "a,b,c", "--jobs", "0", "--out", str(out)]) == 2
    assert "--jobs 0" in capfd.readouterr().err and not (out / "a").exists()

    assert main(["reproduce", "a,b,c", "--jobs", "2", "--no-lm", "--out", str(out)]) == 1  # c fails
    assert "!! c failed: RuntimeError: planted failure" in capfd.readouterr().err
    res = {n: json.loads((out / n / "results.json").read_text()) for n in ("a", "b")}
    assert (res["a"]["quick"], res["a"]["lm"]) == (True, False) and res["b"]["lm"] is None
    assert {res["a"]["pid"], res["b"]["pid"]}.isdisjoint({os.getpid()})  # worker processes
    assert json.loads((out / "c" / "results.json").read_text()) == {"earlier": True}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary directories left
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["reproductions"]) == ["a", "b", "c"] and summary["jobs"] == 2
    assert [summary["reproductions"][n]["status"] for n in "abc"] == ["ok", "ok", "failed"]
    assert summary["reproductions"]["a"]["claims"][0]["claim"] == "a"
    assert "| a | P | a | paper | 1 |" in (out / "report.md").read_text()

    # the same command with --jobs 1 gives the same summary (wall times aside)
    seq = tmp_path / "seq"
    assert main(["reproduce", "a,b,c", "--no-lm", "--jobs", "1", "--out", str(seq)]) == 1
    again = json.loads((seq / "summary.json").read_text())
    strip = lambda s: {n: {k: v for k, v in r.items() if k != "seconds"} for n, r in s["reproductions"].items()}
    assert strip(again) == strip(summary)
    assert json.loads((seq / "a" / "results.json").read_text())["pid"] == os.getpid()


def test_reproduce_jobs_schedules_the_longest_previous_run_first(tmp_path):
    from jalign.cli.reproduce import _previous_seconds

    for name, seconds in (("x", 12.5), ("y", {"paper_run": 1.0, "total": 40.0}), ("z", "n/a")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"seconds": seconds}))
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "results.json").write_text("not json")
    assert [_previous_seconds(tmp_path, n) for n in ("x", "y", "z", "w", "missing")] == [12.5, 40.0, 0.0, 0.0, 0.0]


def test_reproduce_medium_runs_only_reproductions_with_medium_settings(tmp_path, monkeypatch, capsys):
    import types

    import paper_repro

    calls = []

    def with_medium(out, *, quick=True, medium=False):
        calls.append(("m", quick, medium))
        (out / "results.json").write_text(json.dumps({"quick": quick and not medium, "size": "medium",
                                                      "claims": []}))
        return {"claims": []}

    def plain(out, *, quick=True):
        calls.append(("p", quick, None))
        return {"claims": []}

    monkeypatch.setattr(paper_repro, "registry", lambda: {"m": types.SimpleNamespace(run=with_medium),
                                                          "m2": types.SimpleNamespace(run=with_medium),
                                                          "p": types.SimpleNamespace(run=plain)})
    assert main(["reproduce", "m,p", "--medium", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no medium settings for 'p'; reproductions with them: m, m2" in err and not calls
    assert main(["reproduce", "m, m", "--medium", "--out", str(tmp_path)]) == 0  # a repeated name runs once
    assert calls == [("m", True, True)] and not (tmp_path / "report.md").exists()  # one reproduction: no report
    assert main(["reproduce", "m,m2", "--medium", "--jobs", "1", "--out", str(tmp_path)]) == 0
    assert "Settings: medium (between the CPU defaults" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "summary.json").read_text())["quick"] is False
    # the report rebuilt from the saved results says medium too
    assert main(["reproduce", "m", "--report-only", "--out", str(tmp_path)]) == 0
    assert "Settings: medium (between the CPU defaults" in (tmp_path / "report.md").read_text()
