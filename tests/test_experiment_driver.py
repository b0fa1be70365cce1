"""The shared command line of the small-LM experiment drivers (experiments/_driver.py)."""

import json

import pytest

from experiments._driver import main


def _fake(calls):
    def run(wd, s):
        calls.append((wd.name, s))
        return {"settings": s, "x": 1.5}

    def plot(res, out):
        calls.append(("plot", res["x"], out.name))
        return []

    return run, plot


def test_settings_become_flags_and_results_are_saved_then_plotted(tmp_path):
    calls = []
    run, plot = _fake(calls)
    out = tmp_path / "r.json"
    main(["--workdir", str(tmp_path / "wd"), "--out", str(out), "--seeds", "3", "4", "--lr", "0.5"], doc="d\nmore",
         name="n", settings={"seeds": (0, 1), "lr": 1.0, "tag": "a"}, run=run, plot_from_results=plot)
    assert calls == [("wd", {"seeds": (3, 4), "lr": 0.5, "tag": "a"}), ("plot", 1.5, "r.json")]
    assert json.loads(out.read_text())["settings"]["seeds"] == [3, 4]
    calls.clear()
    main(["--out", str(out), "--plot-only"], doc="d", name="n", settings={"seeds": (0,)}, run=run,
         plot_from_results=plot)
    assert calls == [("plot", 1.5, "r.json")]  # nothing run


def test_bad_settings_and_an_existing_workdir_stop_before_any_work(tmp_path):
    calls = []
    run, plot = _fake(calls)
    (tmp_path / "wd").mkdir()
    (tmp_path / "wd" / "keep").write_text("x")
    kw = dict(doc="d", name="n", settings={"k": 1}, run=run, plot_from_results=plot)
    with pytest.raises(SystemExit, match="--k 2: bad"):
        main(["--workdir", str(tmp_path / "new"), "--k", "2"], check=lambda s: "--k 2: bad" if s["k"] == 2 else None,
             **kw)
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        main(["--workdir", str(tmp_path / "wd"), "--out", str(tmp_path / "o.json")], **kw)
    assert not calls and (tmp_path / "wd" / "keep").read_text() == "x" and not (tmp_path / "new").exists()
