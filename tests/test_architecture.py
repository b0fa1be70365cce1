"""The layering of jalign (docs/architecture.md): no upward imports, no cycles, every module in a layer."""

import textwrap

from jalign import layering


def test_no_upward_imports_and_no_cycles():
    bad = layering.check()
    assert not bad, "\n".join(map(str, bad))


def _write(tmp_path, files: dict[str, str]):
    root = tmp_path / "jalign"
    for rel, src in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(src))
    return root


def test_scan_finds_upward_imports_inside_functions_and_cycles(tmp_path):
    root = _write(tmp_path, {
        "__init__.py": "",
        "losses/__init__.py": "def f():\n    from jalign.train import loop\n",  # upward, inside a function
        "train/__init__.py": "",
        "train/loop.py": "from jalign.train.step import x\n",
        "train/step.py": "from . import loop\nx = 1\n",  # relative import closing a cycle
        "cli/__init__.py": "import jalign.losses\n",  # downward: fine
    })
    bad = layering.check(root)
    kinds = sorted((v.kind, v.module) for v in bad)
    assert ("upward", "jalign.losses") in kinds
    assert any(v.kind == "cycle" and "jalign.train.loop" in v.detail and "jalign.train.step" in v.detail
               for v in bad)
    up = next(v for v in bad if v.kind == "upward")
    assert up.line == 2 and "jalign.train.loop" in up.detail
    assert not any(v.module == "jalign.cli" for v in bad)


def test_scan_resolves_from_imports_of_submodules(tmp_path):
    root = _write(tmp_path, {"__init__.py": "", "train/__init__.py": "", "train/plugins/__init__.py": "",
                             "train/plugins/data.py": "from jalign.train import loop\n", "train/loop.py": ""})
    mods = layering.modules(root)
    edges = layering.imports("jalign.train.plugins.data", mods["jalign.train.plugins.data"], set(mods))
    assert edges == [("jalign.train.loop", 1)]
    bad = layering.check(root)
    assert [(v.kind, v.module) for v in bad] == [("upward", "jalign.train.plugins.data")]


def test_layer_table_matches_the_docs():
    doc = (layering.PACKAGE_ROOT.parent / "docs" / "architecture.md").read_text()
    for name, prefixes in layering.LAYERS:
        assert name in doc, name
        for p in prefixes:
            if p != "jalign":
                assert f"`{p}`" in doc or f"`{p.replace('.', '/')}" in doc, p
