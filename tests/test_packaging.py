"""The wheel: every package listed, the configs and assets the CLI needs inside it, and an installed wheel that
works from a directory outside the checkout."""

import os
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _tree_packages() -> set[str]:
    found = set()
    for top in ("jalign", "paper_repro"):
        for init in (ROOT / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(ROOT).parts))
    found |= {"jalign.experiments"} if (ROOT / "experiments" / "__init__.py").is_file() else set()
    return found


def test_every_package_is_listed():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert listed == _tree_packages()
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"jalign.experiments": "experiments"}


def test_no_module_reaches_outside_the_package():
    """No module reads checkout files (docs/, experiments/, figures/) through paths relative to its own file."""
    import re

    offenders = []
    for p in (ROOT / "jalign").rglob("*.py"):
        depth = len(p.relative_to(ROOT / "jalign").parts)  # parents[depth] of the file is the checkout root
        for i, line in enumerate(p.read_text().splitlines(), 1):
            for m in re.finditer(r"__file__\)?(?:\.resolve\(\))?\.parents\[(\d+)\]", line):
                if int(m.group(1)) >= depth:
                    offenders.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, offenders


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    (whl,) = out.glob("jalign-*.whl")
    return whl


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("jalign/experiments/dpo_tiny.py", "jalign/experiments/pretrain_small.py",
              "jalign/assets/small_lm/model.safetensors", "jalign/assets/small_lm/config.json",
              "jalign/train/plugins/registry.py", "jalign/train/probes/runner.py", "jalign/studies/fdpg_lm.py",
              "paper_repro/copg_bandit.py"):
        assert f in names, f
    assert not any(n.startswith(("tests/", "figures/", "docs/", "bench/")) for n in names)


@pytest.mark.slow
def test_installed_wheel_runs_outside_the_checkout(wheel, tmp_path):
    """A fresh virtual environment with only the wheel installed (its dependencies are this environment's,
    made visible through a .pth file: no download), run from a directory outside the checkout."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    deps = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    (Path(site) / "jalign_test_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True,
                   capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
    jalign = [str(py), "-m", "jalign.cli"]

    def run(*args, timeout=600):
        r = subprocess.run([*jalign, *args], cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, f"jalign {' '.join(args)}:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
        return r.stdout

    where = subprocess.run([str(py), "-c", "import jalign; print(jalign.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert str(env_dir) in where and str(ROOT) not in where
    assert "dpo" in run("losses")
    run("reproduce", "copg-bandit", "--quick", "--out", str(work / "figs"))
    assert (work / "figs" / "copg-bandit" / "results.json").is_file()
    out = run("train", "--config", "dpo_tiny", "train.steps=2", "train.progress=False")
    assert '"final_step": 2' in out
    assert "--out" in run("pretrain", "--help")
