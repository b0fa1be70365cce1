"""MkDocs hook: API pages for packages that may not exist yet.

A page line ``<!-- jalign-api: jalign.divergences -->`` becomes the mkdocstrings directive
``::: jalign.divergences`` when that module can be found, and a short note otherwise. So a placeholder page
fills itself in as soon as the package lands, and the strict build never fails on a module that is still
missing. Pages for modules that always exist use ``::: jalign.xxx`` directly.
"""

from __future__ import annotations

import importlib.util
import re

_MARKER = re.compile(r"^<!--[ \t]*jalign-api:[ \t]*([\w.]+)[ \t]*-->[ \t]*$", re.MULTILINE)


def module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def expand(markdown: str) -> str:
    """Replace every ``jalign-api`` marker by a mkdocstrings directive or a "not available yet" note."""

    def repl(m: re.Match) -> str:
        name = m.group(1)
        if module_exists(name):
            return f"::: {name}"
        return (
            f'!!! note "Not available yet"\n    `{name}` is not part of this checkout yet; this page fills '
            f"itself in from the docstrings once the package exists."
        )

    return _MARKER.sub(repl, markdown)


def on_page_markdown(markdown, page, config, files):  # noqa: ARG001 - MkDocs hook signature
    return expand(markdown)
