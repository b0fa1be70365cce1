"""MkDocs hooks: API pages for packages that may not exist yet, and docstring conventions MkDocs lacks.

1. A page line ``<!-- jalign-api: jalign.divergences -->`` becomes the mkdocstrings directive
``::: jalign.divergences`` when that module can be found, and a short note otherwise. So a placeholder page
fills itself in as soon as the package lands, and the strict build never fails on a module that is still
missing. ``<!-- jalign-api: jalign.fdpg submodules -->`` documents the submodules too (for packages whose
``__init__`` exports little). Pages for modules that always exist use ``::: jalign.xxx`` directly.

2. A Markdown preprocessor (added to every Markdown instance, the docstrings' included) that renders two
reStructuredText habits of the docstrings, so the sources need not change: doctest blocks (``>>>`` lines,
their continuations and output, up to a blank line) become ``pycon`` code blocks instead of nested block
quotes, and Sphinx roles (``:class:`X```, ``:func:`~a.b.f```) become inline code (``X``, ``f``).
Fenced code blocks are left untouched.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from markdown import Extension
from markdown.preprocessors import Preprocessor
from mkdocs.plugins import event_priority

_MARKER = re.compile(r"^<!--[ \t]*jalign-api:[ \t]*([\w.]+)([ \t]+submodules)?[ \t]*-->[ \t]*$", re.MULTILINE)


_ROOT: Path | None = None  # the directory of mkdocs.yml (mkdocstrings collects modules from there)


def module_exists(name: str, root: Path | None = None) -> bool:
    """Whether ``name`` is a module or package under ``root`` (default: the mkdocs.yml directory), or importable."""
    root = root if root is not None else _ROOT
    if root is not None:
        base = Path(root, *name.split("."))
        if (base / "__init__.py").is_file() or base.with_suffix(".py").is_file():
            return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def expand(markdown: str) -> str:
    """Replace every ``jalign-api`` marker by a mkdocstrings directive or a "not available yet" note."""

    def repl(m: re.Match) -> str:
        name = m.group(1)
        if module_exists(name):
            submodules = "true" if m.group(2) else "false"
            return f"::: {name}\n    options:\n      show_root_heading: false\n      show_submodules: {submodules}"
        return (
            f'!!! note "Not available yet"\n    `{name}` is not part of this checkout yet; this page fills '
            f"itself in from the docstrings once the package exists."
        )

    return _MARKER.sub(repl, markdown)


def on_page_markdown(markdown, page, config, files):  # noqa: ARG001 - MkDocs hook signature
    return expand(markdown)


_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|obj|data|exc|const):`~?([^`]+)`")


def _role_text(m: re.Match) -> str:
    target = m.group(1)
    if m.group(0).split("`", 1)[1].startswith("~"):
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def docstring_compat(lines: list[str]) -> list[str]:
    """Doctest blocks to ``pycon`` fences and Sphinx roles to inline code, outside fenced code blocks."""
    out: list[str] = []
    fence = None  # the marker of the fenced block we are in, if any
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _FENCE.match(line)
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            out.append(line)
            i += 1
            continue
        if m:
            fence = m.group(1)
            out.append(line)
            i += 1
            continue
        if line.startswith(">>>"):
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i])
                i += 1
            out += ["", "```pycon", *block, "```", ""]
            continue
        out.append(_ROLE.sub(_role_text, line))
        i += 1
    return out


class _DocstringCompat(Preprocessor):
    def run(self, lines):
        return docstring_compat(lines)


class DocstringCompatExtension(Extension):
    def extendMarkdown(self, md):  # noqa: N802 - Python-Markdown API
        # Before the fenced-code preprocessors (priority 25-30), so the new fences are processed.
        md.preprocessors.register(_DocstringCompat(md), "jalign_docstring_compat", 40)


@event_priority(100)  # before mkdocstrings copies the extension list for the docstrings' Markdown
def on_config(config):
    global _ROOT
    _ROOT = Path(config.config_file_path).resolve().parent
    config.markdown_extensions.append(DocstringCompatExtension())
    return config
