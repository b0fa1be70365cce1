"""The per-paper notebooks: well-formed, generated, and executed headless (nbclient) where the reproduction exists.

The kernel is the running interpreter (a kernel spec written to a temporary ``JUPYTER_PATH``), so the
notebooks see exactly this environment and this checkout.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

import paper_repro  # noqa: E402
from jalign import runtime  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
KERNEL = "jalign-test-python"


def _generator():
    spec = importlib.util.spec_from_file_location("jalign_make_notebooks", NB_DIR / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


GEN = _generator()
PAPERS = {p.stem: p for p in GEN.PAPERS}


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernel spec for ``sys.executable`` in a temporary JUPYTER_PATH, and a clean IPython profile dir."""
    with kernel_environment(tmp_path_factory.mktemp("jupyter")) as mp:
        yield mp


@contextlib.contextmanager
def kernel_environment(base: Path):
    spec_dir = base / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "jalign tests", "language": "python",
    }))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(base))
        mp.setenv("IPYTHONDIR", str(base / "ipython"))
        mp.setenv("JUPYTER_PLATFORM_DIRS", "1")
        # the reproductions run with XLA's default optimisation level (tests/conftest.py lowers it for unit tests)
        # and with the reduction order the jalign command line pins (jalign.runtime.pin_reduction_order)
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if f != "--xla_backend_optimization_level=0"]
        if runtime._xla_knows_flag(runtime.REDUCTION_FLAG) and runtime.REDUCTION_FLAG not in flags:
            flags.append(runtime.REDUCTION_FLAG)
        mp.setenv("XLA_FLAGS", " ".join(flags))
        mp.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        yield mp


def _execute(nb, cwd: Path, timeout: int):
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=timeout,
                                     resources={"metadata": {"path": str(cwd)}})
    return client.execute()


def _outputs(nb, output_type=None):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if output_type is None or o.output_type == output_type]


def _stdout(nb) -> str:
    return "".join(o.text for o in _outputs(nb, "stream") if o.name == "stdout")


def _markdown_outputs(nb) -> list[str]:
    return [o.data["text/markdown"] for o in _outputs(nb, "display_data") if "text/markdown" in o.data]


def _png_count(nb) -> int:
    return sum("image/png" in o.data for o in _outputs(nb, "display_data"))


# ---------------------------------------------------------------------------------------------------------
# Static checks (fast): one notebook per reproduction, generated, well-formed, committed without outputs.


def test_one_notebook_per_reproduction():
    names = {p.name for p in GEN.PAPERS}
    reproductions = set(paper_repro.registry())
    assert names >= reproductions, f"reproductions without a notebook: {sorted(reproductions - names)}"
    unknown = names - reproductions
    assert not unknown, f"notebooks for unknown reproductions: {sorted(unknown)}"
    assert sorted(p.name for p in NB_DIR.glob("*.ipynb")) == sorted(f"{s}.ipynb" for s in PAPERS)


@pytest.mark.parametrize("stem", sorted(PAPERS))
def test_notebook_is_well_formed_generated_and_without_outputs(stem):
    path = NB_DIR / f"{stem}.ipynb"
    assert path.is_file(), f"{path} is missing (run python notebooks/make_notebooks.py)"
    text = path.read_text(encoding="utf-8")
    assert text == GEN.render(PAPERS[stem]), f"{path.name} differs from notebooks/make_notebooks.py; regenerate it"
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    ids = [c.id for c in nb.cells]
    assert len(set(ids)) == len(ids)
    source = "\n".join(c.source for c in code)
    assert f'NAME = "{PAPERS[stem].name}"' in source
    compile(source.replace("get_ipython()", "None"), path.name, "exec")  # valid Python throughout
    # The Colab install cell is guarded: pip runs only when jalign is not importable, never with the placeholder.
    setup = code[0].source
    assert 'if importlib.util.find_spec("jalign") is None:' in setup
    assert setup.index("find_spec") < setup.index("run_line_magic(\"pip\"")
    assert f'JALIGN_REPO_URL = "{GEN.REPO_URL_PLACEHOLDER}"' in setup and "EDIT ME" in setup


def test_check_mode_detects_a_stale_notebook(tmp_path, monkeypatch):
    monkeypatch.setattr(GEN, "HERE", tmp_path)
    assert GEN.main([]) == 0 and GEN.main(["--check"]) == 0
    (tmp_path / "fdpg.ipynb").write_text("{}")
    assert GEN.main(["--check"]) == 1


# ---------------------------------------------------------------------------------------------------------
# Execution with a stub reproduction (fast): the notebook's plumbing, independent of which reproductions exist.

_STUB = '''
import json, types
from pathlib import Path
import paper_repro

def _stub_run(out, *, quick=True):
    import matplotlib.pyplot as plt
    from jalign.plotting import savefig, style
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ev = lambda kind: {"kind": kind, "seeds": 1, "estimate": None, "interval": None, "rule": "r"}
    res = {"quick": quick, "curve": [0.0, 1.0, 4.0], "claims": [
        {"paper": "P", "claim": "claim a|b", "measured": "x = 1", "status": "holds", "evidence": ev("exact")},
        {"paper": "P", "claim": "claim c", "measured": "y = 2\\nz = 3", "status": "does not hold",
         "evidence": ev("exact")},
        {"paper": "P", "claim": "claim d", "measured": "n/a", "status": "not reproducible here",
         "evidence": ev("none")}]}
    (out / "results.json").write_text(json.dumps(res))
    data = json.loads((out / "results.json").read_text())
    with style():
        for sub, name in (("", "curve"), ("extra", "curve_sq")):
            fig, ax = plt.subplots()
            ax.plot([v * v for v in data["curve"]] if sub else data["curve"])
            savefig(fig, out / sub, name)
    return res

_stub = types.ModuleType("stub_repro")
_stub.NAME, _stub.DESCRIPTION, _stub.run = "{name}", "stub reproduction", _stub_run
paper_repro.registry = lambda: {{_stub.NAME: _stub}} if {present} else {{}}
'''


def _with_stub(stem: str, present: bool = True):
    nb = nbformat.reads(GEN.render(PAPERS[stem]), as_version=4)
    stub = _STUB.replace("{name}", PAPERS[stem].name).replace("{present}", str(present))
    stub = stub.replace("{{", "{").replace("}}", "}")
    nb.cells.insert(1, nbformat.v4.new_code_cell(stub))
    return nb


@pytest.mark.parametrize("quick_env", [None, "0"])
def test_notebook_runs_a_reproduction_and_shows_its_figures_and_claims(kernel_env, tmp_path, quick_env):
    if quick_env is None:  # defaults: quick settings, output under runs/notebooks of the working directory
        out_root = tmp_path / "runs" / "notebooks"
        kernel_env.delenv("JALIGN_NOTEBOOK_OUT", raising=False)
    else:
        out_root = tmp_path / "out"
        kernel_env.setenv("JALIGN_NOTEBOOK_OUT", str(out_root))
    if quick_env is None:
        kernel_env.delenv("JALIGN_NOTEBOOK_QUICK", raising=False)
    else:
        kernel_env.setenv("JALIGN_NOTEBOOK_QUICK", quick_env)
    stale = out_root / "fdpg" / "stale.png"  # an earlier run's figure must not be shown
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"not a png")
    nb = _execute(_with_stub("fdpg"), tmp_path, timeout=120)

    run_dir = out_root / "fdpg"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["quick"] is (quick_env is None)  # JALIGN_NOTEBOOK_QUICK=0 selects the full settings
    assert not stale.exists()
    assert sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*.p*")) == [
        "curve.pdf", "curve.png", "extra/curve_sq.pdf", "extra/curve_sq.png"]
    assert _png_count(nb) == 2
    md = _markdown_outputs(nb)
    assert md[:2] == ["**curve.png** (PDF beside it)", "**extra/curve_sq.png** (PDF beside it)"]
    assert md[2].splitlines() == [
        "| paper | claim | measured | status |",
        "|---|---|---|---|",
        "| P | claim a\\|b | x = 1 | ✅ holds |",
        "| P | claim c | y = 2 z = 3 | ❌ does not hold |",
        "| P | claim d | n/a | ⚪ not reproducible here |",
    ]
    out = _stdout(nb)
    assert "2 figure(s)" in out
    assert "{'holds': 1, 'does not hold': 1, 'not reproducible here': 1}" in out
    assert f"{'quick' if quick_env is None else 'full'} settings" in out
    assert not _outputs(nb, "error")


def test_notebook_names_a_missing_reproduction(kernel_env, tmp_path):
    kernel_env.setenv("JALIGN_NOTEBOOK_OUT", str(tmp_path / "out"))
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="reproduction 'ches' is not in this version"):
        _execute(_with_stub("ches", present=False), tmp_path, timeout=120)
    assert not (tmp_path / "out" / "ches").exists()


# ---------------------------------------------------------------------------------------------------------
# The real reproductions (slow): only those in paper_repro.registry(); quick settings.


# One test file per notebook (tests/notebooks/test_nb_<stem>.py) so that pytest-xdist's loadfile
# distribution spreads these long runs over the workers.


def test_every_notebook_has_an_execution_test():
    files = sorted(p.name for p in (ROOT / "tests" / "notebooks").glob("test_nb_*.py"))
    assert files == sorted(f"test_nb_{s}.py" for s in PAPERS)


PIPELINES = os.environ.get("JALIGN_TEST_PIPELINES") == "1"

_REPLAY = '''
import json, shutil
from pathlib import Path
import paper_repro

_module = paper_repro.registry()["{name}"]

def _replay(out, *, quick=True):
    """The committed figures/ data instead of a fresh run: the notebook's cells draw and report from it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(r"{committed}", out / "results.json")
    _module.plot_from_results(out)
    return json.loads((out / "results.json").read_text())

_module.run = _replay
'''


def check_notebook_executes(stem: str, kernel_env, tmp_path):
    """Execute the notebook headless; its results equal the committed figures/ data.

    By default the reproduction's ``run`` is replaced by a replay of the committed ``figures/NAME/results.json``
    (its figures redrawn by the reproduction's own ``plot_from_results``), so every cell of the notebook runs
    on real data in seconds. With ``JALIGN_TEST_PIPELINES=1`` the notebook runs the whole quick reproduction
    and its fresh results are compared with the committed ones (minutes per notebook; the main job
    ``jalign reproduce all`` regenerates the same data).
    """
    name = PAPERS[stem].name
    if name not in paper_repro.registry():
        pytest.skip(f"reproduction {name!r} is not in paper_repro.registry() yet (notebook checked statically)")
    kernel_env.setenv("JALIGN_NOTEBOOK_OUT", str(tmp_path))
    kernel_env.delenv("JALIGN_NOTEBOOK_QUICK", raising=False)
    committed = ROOT / "figures" / name / "results.json"
    assert committed.is_file(), f"figures/{name}/results.json is not committed"
    nb = nbformat.read(NB_DIR / f"{stem}.ipynb", as_version=4)
    if not PIPELINES:
        nb.cells.insert(1, nbformat.v4.new_code_cell(_REPLAY.replace("{name}", name).replace(
            "{committed}", str(committed))))
    nb = _execute(nb, ROOT, timeout=900)

    run_dir = tmp_path / name
    results = json.loads((run_dir / "results.json").read_text())
    from tests.test_figures import assert_results_match

    assert_results_match(results, json.loads(committed.read_text()))
    pngs = sorted(run_dir.rglob("*.png"))
    assert pngs, "the reproduction wrote no figures"
    assert all(p.with_suffix(".pdf").is_file() for p in pngs), "every figure comes as PNG and PDF"
    assert {p.relative_to(run_dir).as_posix() for p in pngs} == {
        p.relative_to(committed.parent).as_posix() for p in committed.parent.rglob("*.png")}
    assert _png_count(nb) == len(pngs)
    claims = results["claims"]
    assert claims
    table = _markdown_outputs(nb)[-1].splitlines()
    assert len(table) == 2 + len(claims)
    for row, claim in zip(table[2:], claims, strict=True):
        assert claim["status"] in row and str(claim["paper"]).replace("|", "\\|").replace("\n", " ") in row
    assert not _outputs(nb, "error")
