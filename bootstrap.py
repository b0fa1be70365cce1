#!/usr/bin/env python3
"""One-file set-up for a fresh machine with only Python 3.11+.

    python3 bootstrap.py reproduce   # main job: every paper reproduction on CPU defaults
    python3 bootstrap.py test        # the test suite

Creates ``.venv`` beside this file (once; again when ``constraints.txt`` or ``pyproject.toml`` change),
installs jalign with the pinned versions of ``constraints.txt``, then runs the command. Extra arguments
are passed on (``python3 bootstrap.py reproduce --quick``, ``python3 bootstrap.py test -k losses``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("JALIGN_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"


def _stamp() -> str:
    h = hashlib.sha256()
    for name in ("constraints.txt", "pyproject.toml"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def ensure_env() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"jalign needs Python >= 3.11, this is {sys.version.split()[0]}")
    marker = VENV / ".jalign-stamp"
    if marker.exists() and marker.read_text() == _stamp() and PY.exists():
        return
    if not PY.exists():
        print(f"[bootstrap] creating virtual environment {VENV}", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.check_call([*pip, "--upgrade", "pip"])
    print("[bootstrap] installing jalign and its pinned dependencies", flush=True)
    subprocess.check_call([*pip, "-c", str(ROOT / "constraints.txt"), "-e", f"{ROOT}[dev]"])
    marker.write_text(_stamp())


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("reproduce", "test"):
        print(__doc__)
        return 2
    ensure_env()
    cmd, rest = argv[0], argv[1:]
    if cmd == "reproduce":
        args = [str(BIN / "jalign"), "reproduce", "all", *rest]
    else:
        args = [str(PY), "-m", "pytest", "-n", "2", "--dist", "loadfile", *rest]
    print("[bootstrap] " + " ".join(args), flush=True)
    return subprocess.call(args, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
