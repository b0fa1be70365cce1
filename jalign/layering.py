"""The layering of the ``jalign`` package, as data, and an AST scan that checks it.

Each module belongs to a layer; a module may import modules of its own layer or of lower layers, never of a
higher one — also not inside a function — and there are no import cycles between jalign modules.
``docs/architecture.md`` draws the same table; ``tests/test_architecture.py`` runs :func:`check`.

Run ``python -m jalign.layering`` to print the violations (exit 1 when there are any).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent

# Lowest layer first. A module's layer is that of the longest prefix listed here.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("jalign", "jalign.layering", "jalign.numerics", "jalign.runtime", "jalign.divergences", "jalign.tokenizers",
              "jalign.data", "jalign.rewards", "jalign.reporting", "jalign.plotting")),
    ("math and models", ("jalign.losses", "jalign.models")),
    ("theory", ("jalign.logic", "jalign.fdpg", "jalign.diagnostics", "jalign.envs")),
    ("trainer core", ("jalign.train.batch", "jalign.train.checkpoint", "jalign.train.config",
                      "jalign.train.distributed", "jalign.train.metrics",
                      "jalign.train.objectives", "jalign.train.online", "jalign.train.pairwise", "jalign.train.reference",
                      "jalign.train.rl",
                      "jalign.train.sharding", "jalign.train.step", "jalign.train.tensorboard",
                      "jalign.train.export")),
    ("trainer plug-ins and probes", ("jalign.train.plugins", "jalign.train.probes")),
    ("trainer", ("jalign.train", "jalign.train.loop", "jalign.train.evaluate")),
    ("studies", ("jalign.studies",)),
    ("command line", ("jalign.cli",)),
)


@dataclass(frozen=True)
class Violation:
    kind: str  # "upward" | "cycle" | "unassigned"
    module: str
    line: int
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.module}:{self.line}: {self.detail}"


def module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def layer_of(name: str) -> int | None:
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    return best


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that ``name`` is or lies in."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """``(imported jalign module, line)`` for every import statement in the file, functions included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "jalign" or a.name.startswith("jalign."):
                    m = _resolve(a.name, known)
                    if m:
                        out.append((m, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not (target == "jalign" or target.startswith("jalign.")):
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                m = sub if sub in known else _resolve(target, known)
                if m:
                    out.append((m, node.lineno))
    return out


def graph(root: Path = PACKAGE_ROOT) -> dict[str, list[tuple[str, int]]]:
    mods = modules(root)
    known = set(mods)
    return {m: sorted({(t, ln) for t, ln in imports(m, p, known) if t != m}) for m, p in mods.items()}


def _cycles(g: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on, stack, out = set(), [], []
    counter = 0
    for start in g:
        if start in index:
            continue
        work = [(start, iter([t for t, _ in g[start]]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in g:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter([t for t, _ in g[nxt]])))
                elif nxt in on:
                    low[v] = min(low[v], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def check(root: Path = PACKAGE_ROOT) -> list[Violation]:
    """Every upward import, every module outside the layer table, and every import cycle."""
    g = graph(root)
    bad: list[Violation] = []
    for m, edges in g.items():
        lm = layer_of(m)
        if lm is None:
            bad.append(Violation("unassigned", m, 1, "module is in no layer of jalign.layering.LAYERS"))
            continue
        for t, ln in edges:
            lt = layer_of(t)
            if lt is not None and lt > lm:
                bad.append(Violation("upward", m, ln, f"imports {t} (layer {LAYERS[lt][0]!r}) from layer "
                                                      f"{LAYERS[lm][0]!r}"))
    for comp in _cycles(g):
        bad.append(Violation("cycle", comp[0], 1, "import cycle among " + ", ".join(comp)))
    return bad


def main(argv: Iterable[str] = ()) -> int:
    bad = check()
    for v in bad:
        print(v)
    print(f"{len(bad)} layering violation(s)" if bad else "layering: ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
