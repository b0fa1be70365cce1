"""The ``jalign`` command line.

Subcommands live one per module in this package; a module defines ``register(subparsers)`` which adds its
parser and sets ``func`` (``func(args) -> int``). Modules are discovered automatically, so a new subcommand
is one new file.

One error path: a :class:`jalign.errors.UserError` (a bad config key or value, a missing or invalid data file,
a busy workdir, an unknown registry name, a mesh that does not fit the devices, ...) escaping a subcommand is
printed as one line ``jalign COMMAND: error: MESSAGE`` and the exit status is 2. Any other exception is an
internal error: it keeps its traceback, with a note saying so.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import jalign
from jalign.errors import UserError
from jalign.runtime import pin_reduction_order, tune_host_allocator


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jalign", description="JAX research framework for the theory of language-model alignment"
    )
    parser.add_argument("--version", action="version", version=f"jalign {jalign.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        tune_host_allocator()  # before any JAX computation starts the CPU client's threads (jalign.runtime)
        pin_reduction_order()  # results independent of the core count (jalign.runtime); before JAX starts
    except ValueError as e:  # a bad JALIGN_HOST_ALLOCATOR or JALIGN_REDUCTIONS value
        print(f"jalign: {e}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserError as e:
        print(f"jalign {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        e.add_note(f"jalign {args.command}: internal error (not a problem with the input); please report it "
                   "with this traceback")
        raise


if __name__ == "__main__":
    sys.exit(main())
