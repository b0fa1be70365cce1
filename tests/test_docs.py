"""The documentation site: strict mkdocs build (warnings are errors), nav completeness, the API-page hook."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install mkdocs-material mkdocstrings[python])")
yaml = pytest.importorskip("yaml")


def _hooks():
    spec = importlib.util.spec_from_file_location("jalign_docs_hooks", DOCS / "_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config() -> dict:
    # mkdocs.yml uses no custom YAML tags, so the safe loader reads it.
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))


def _nav_paths(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [p for item in node for p in _nav_paths(item)]
    if isinstance(node, dict):
        return [p for value in node.values() for p in _nav_paths(value)]
    raise TypeError(f"unexpected nav entry {node!r}")


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists():
    nav = _nav_paths(_config()["nav"])
    assert len(nav) == len(set(nav)), f"duplicate nav entries: {sorted(p for p in nav if nav.count(p) > 1)}"
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(set(pages) - set(nav)) == [], "docs pages missing from mkdocs.yml nav"
    assert sorted(set(nav) - set(pages)) == [], "nav entries without a file under docs/"


def test_api_hook_expands_existing_modules_and_notes_missing_ones():
    hooks = _hooks()
    page = "# x\n\n<!-- jalign-api: jalign.losses -->\n\ntext\n<!-- jalign-api: jalign.no_such_package_xyz -->\n"
    out = hooks.expand(page)
    lines = out.splitlines()
    assert lines[2:6] == ["::: jalign.losses", "    options:", "      show_root_heading: false",
                          "      show_submodules: false"]
    assert hooks.expand("<!-- jalign-api: jalign.losses submodules -->").splitlines()[-1] == (
        "      show_submodules: true")
    assert lines[7] == "text"
    assert lines[8] == '!!! note "Not available yet"'
    assert "`jalign.no_such_package_xyz` is not part of this checkout yet" in lines[9]
    assert "jalign-api" not in out
    # A marker must be alone on its line; prose mentioning it is left untouched.
    prose = "see <!-- jalign-api: jalign.losses --> inline"
    assert hooks.expand(prose) == prose
    assert hooks.module_exists("jalign.tokenizers") and not hooks.module_exists("jalign.no_such_package_xyz")
    # Found relative to the mkdocs.yml directory (mkdocstrings' search path), not only on sys.path.
    assert hooks.module_exists("jalign.losses.pairwise", root=ROOT)
    assert hooks.module_exists("paper_repro", root=ROOT)
    assert not hooks.module_exists("jalign.no_such_package_xyz", root=ROOT)


def test_docstring_compat_fences_doctests_and_unwraps_sphinx_roles():
    hooks = _hooks()
    src = [
        "Uses :class:`PairwiseLogps` and :func:`~jalign.losses.get` (:py:meth:`a.b`).",
        "",
        ">>> x = 1",
        "... + 1",
        ">>> x",
        "2",
        "",
        "after",
        "```python",
        ">>> inside a fence stays as is :class:`X`",
        "```",
        "> a quote",
    ]
    assert hooks.docstring_compat(src) == [
        "Uses `PairwiseLogps` and `get` (`a.b`).",
        "",
        "", "```pycon", ">>> x = 1", "... + 1", ">>> x", "2", "```", "",
        "",
        "after",
        "```python",
        ">>> inside a fence stays as is :class:`X`",
        "```",
        "> a quote",
    ]
    # A doctest running to the end of the docstring (no trailing blank line) is closed too.
    assert hooks.docstring_compat([">>> 1", "1"]) == ["", "```pycon", ">>> 1", "1", "```", ""]


def test_api_pages_use_direct_directives_only_for_modules_that_exist():
    """``::: mod`` fails the strict build for a missing module; placeholders use the hook marker instead."""
    hooks = _hooks()
    for page in sorted((DOCS / "api").glob("*.md")):
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.startswith(":::"):
                name = line.split()[1]
                assert hooks.module_exists(name), f"{page.name}: {name} does not exist; use <!-- jalign-api: {name} -->"


def test_strict_build_has_no_warnings_and_renders_the_api(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "WARNING" not in log and "ERROR" not in log, log
    # Every nav page was rendered (use_directory_urls: false maps a.md -> a.html).
    for page in _nav_paths(_config()["nav"]):
        assert (site / page).with_suffix(".html").is_file(), page
    # The API pages hold the documented objects (anchors are the objects' full paths).
    expected = {
        "api/losses.html": ["jalign.losses.get", "jalign.losses.PairwiseLogps", "jalign.losses.sequence_logps",
                            "jalign.losses.pairwise.sigmoid", "jalign.losses.listwise.pro"],
        "api/data.html": ["jalign.data.read", "jalign.data.pipeline.make_dataset", "jalign.data.builtin"],
        "api/tokenizers.html": ["jalign.tokenizers.ByteTokenizer", "jalign.tokenizers.ByteTokenizer.encode_pair"],
        "api/paper_repro.html": ["paper_repro.registry"],
        "api/reporting.html": ["jalign.reporting.write_report", "jalign.plotting.savefig"],
    }
    for page, anchors in expected.items():
        html = (site / page).read_text(encoding="utf-8")
        for anchor in anchors:
            assert f'id="{anchor}"' in html, f"{page}: no API entry for {anchor}"
    # Doctests are code blocks (not nested block quotes) and Sphinx roles are gone.
    for page in expected:
        html = (site / page).read_text(encoding="utf-8")
        assert "<blockquote>" not in html and ":class:" not in html and ":func:" not in html, page
    assert '<span class="gp">&gt;&gt;&gt; </span>' in (site / "api/losses.html").read_text(encoding="utf-8")
    # The generated loss catalogue is on the site with its formulas.
    losses_html = (site / "losses.html").read_text(encoding="utf-8")
    assert "-(1-ε)·log σ(β·h) - ε·log σ(-β·h)" in losses_html
    # Placeholder pages: filled in when the package exists, a note otherwise.
    hooks = _hooks()
    for name in ("divergences", "fdpg", "logic", "diagnostics", "envs", "models", "train"):
        html = (site / "api" / f"{name}.html").read_text(encoding="utf-8")
        if hooks.module_exists(f"jalign.{name}"):
            assert "Not available yet" not in html and f'id="jalign.{name}.' in html, name
        else:
            assert "Not available yet" in html, name
