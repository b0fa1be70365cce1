"""``jalign reproduce NAME|all --out DIR``: regenerate paper figures and check claims."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="regenerate a paper's figures and check its claims")
    p.add_argument("name", help="reproduction name, a comma-separated list of names, or 'all'")
    p.add_argument("--out", default="figures", help="output directory (default: figures/)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="quick", action="store_true", default=True, help="CPU defaults (default)")
    g.add_argument("--full", dest="quick", action="store_false", help="paper-sized settings (GPU/TPU)")
    g.add_argument("--medium", action="store_true",
                   help="settings between quick and full (about an hour on 2 CPU cores), for the reproductions "
                   "that define them")
    p.add_argument("--no-lm", dest="lm", action="store_false",
                   help="skip the small-LM half of the reproductions that have one (their exact/bandit part only)")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild DIR/report.{md,html} from the saved DIR/NAME/results.json; run nothing")
    p.add_argument("--jobs", type=_jobs_arg, default="auto", metavar="N|auto",
                   help="run up to N reproductions at once, each in its own process; 1: one after the other in "
                   "this process; the results are the same (default auto: the usable CPU cores, at most 4, on "
                   "CPU; 1 where JAX has a GPU/TPU plugin)")
    p.add_argument("--cache", default=None, metavar="DIR|none",
                   help="where the command keeps what its reproductions share: compiled XLA programs and the "
                   "SFT reference (default: a temporary directory, removed at the end; DIR keeps them for later "
                   "runs; none: share nothing)")
    p.set_defaults(func=run)


MAX_AUTO_JOBS = 4


def _jobs_arg(text: str):
    """``--jobs``: ``auto`` or an integer (checked in :func:`run`, which reports a bad one)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        return text


def _accelerator_plugin() -> bool:
    """Whether JAX may use a GPU or TPU here: a CUDA/ROCm plugin or libtpu is installed and ``JAX_PLATFORMS``
    does not pin the CPU (found without starting a backend, which would take an accelerator's memory)."""
    import importlib.util

    if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        return False
    names = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")
    return any(importlib.util.find_spec(n) is not None for n in names)


def auto_jobs(count: int) -> int:
    """``--jobs auto``: on CPU the usable cores (the process's CPU affinity), at most :data:`MAX_AUTO_JOBS` and
    ``count``; 1 where JAX has a GPU/TPU (processes would compete for one accelerator's memory)."""
    if _accelerator_plugin():
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_AUTO_JOBS, count))


class _SharedCache:
    """The command's shared directory (``--cache``): the JAX persistent compilation cache under ``DIR/xla``
    (a program compiled by one reproduction is loaded, not compiled again, by the next one or by another
    worker) and :func:`paper_repro._common.shared` values under ``DIR/values``. Set through the environment,
    which the spawned workers inherit and JAX reads at import, and in this process's JAX config; restored on
    exit, and a temporary directory is removed."""

    MIN_COMPILE_SECONDS = 0.5  # programs compiling faster than this are not worth a file

    def __init__(self, spec: str | None):
        self.spec = spec
        self.dir: Path | None = None
        self._temporary = False
        self._saved: dict[str, str | None] = {}

    def __enter__(self):
        from paper_repro._common import CACHE_ENV

        if self.spec is not None and self.spec.strip().lower() == "none":
            return self
        if self.spec is None:
            self.dir, self._temporary = Path(tempfile.mkdtemp(prefix="jalign-reproduce-cache-")), True
        else:
            self.dir = Path(self.spec)
            try:
                (self.dir / "xla").mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=self.dir, prefix=".write-test-"):
                    pass
            except OSError as e:
                raise SystemExit(f"jalign reproduce: --cache {self.spec!r} is not writable: {e}") from None
        env = {CACHE_ENV: str(self.dir), "JAX_COMPILATION_CACHE_DIR": str(self.dir / "xla"),
               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": str(self.MIN_COMPILE_SECONDS)}
        for k, v in env.items():
            self._saved[k] = os.environ.get(k)
            os.environ[k] = v
        self._configure(str(self.dir / "xla"), self.MIN_COMPILE_SECONDS)
        return self

    @staticmethod
    def _configure(path: str | None, min_seconds: float) -> None:
        """Point this process's JAX at ``path`` (None: no persistent cache) from now on."""
        import jax

        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_seconds)
        from jax.experimental.compilation_cache import compilation_cache

        compilation_cache.reset_cache()  # the cache object is made once per process; make it read the setting

    def __exit__(self, *exc):
        if self.dir is None:
            return False
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._configure(self._saved.get("JAX_COMPILATION_CACHE_DIR"),
                        float(self._saved.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS") or 1.0))
        if self._temporary:
            shutil.rmtree(self.dir, ignore_errors=True)
        return False


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise SystemExit(f"jalign reproduce: --out {str(out)!r} is not writable: {e}") from None


def _accepts(module, param: str) -> bool:
    import inspect

    return param in inspect.signature(module.run).parameters


def _part_kwargs(module, lm: bool, medium: bool = False) -> dict:
    """The keyword arguments of a reproduction's ``run`` beyond ``quick``: ``lm=False`` for one whose small-LM
    half is skipped (where it has one), ``medium=True`` for its medium settings."""
    kwargs = {}
    if not lm and _accepts(module, "lm"):
        kwargs["lm"] = False
    if medium:
        kwargs["medium"] = True
    return kwargs


def run(args) -> int:
    import paper_repro

    reg = paper_repro.registry()
    if args.name == "all":
        todo = sorted(reg)
    else:
        todo = list(dict.fromkeys(n.strip() for n in args.name.split(",") if n.strip()))  # once each, in order
        bad = [n for n in todo if n not in reg]
        if bad or not todo:
            print(f"unknown reproduction {', '.join(map(repr, bad)) or repr(args.name)}; valid: "
                  f"{', '.join(sorted(reg))}, a comma-separated list of them, or 'all'", file=sys.stderr)
            return 2
    jobs = getattr(args, "jobs", 1)
    if jobs == "auto":
        jobs = auto_jobs(len(todo))
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        print(f"jalign reproduce: --jobs {jobs!r} must be an integer >= 1 or 'auto'", file=sys.stderr)
        return 2
    medium = getattr(args, "medium", False)
    if medium and not getattr(args, "report_only", False):
        without = [n for n in todo if not _accepts(reg[n], "medium")]
        if without:
            have = sorted(n for n in reg if _accepts(reg[n], "medium"))
            print(f"jalign reproduce: --medium: no medium settings for {', '.join(map(repr, without))}; "
                  f"reproductions with them: {', '.join(have) or 'none'}", file=sys.stderr)
            return 2
    several = args.name == "all" or len(todo) > 1
    out = Path(args.out)
    _check_writable(out)
    if getattr(args, "report_only", False):
        from jalign.reporting import summary_from_results, write_report

        summary = summary_from_results(out, todo)
        for path in write_report(summary, out):
            print(f"wrote {path}")
        return int(any(r["status"] != "ok" for r in summary["reproductions"].values()))
    t0 = time.time()
    summary = {"quick": args.quick and not medium, "reproductions": {}}
    size = "medium" if medium else "quick" if args.quick else "full"
    if medium:
        from jalign.reporting import MEDIUM_LABEL

        summary["settings_label"] = MEDIUM_LABEL
    if not getattr(args, "lm", True):
        summary["settings_label"] = f"{size}, small-LM halves skipped (--no-lm)"
    lm = getattr(args, "lm", True)
    with _SharedCache(getattr(args, "cache", None)):
        if jobs > 1 and len(todo) > 1:
            summary["reproductions"] = _run_parallel(reg, todo, out, args.quick, lm, jobs, medium)
        else:
            from tqdm.auto import tqdm

            bar = tqdm(todo, desc="reproduce", unit="repro", disable=len(todo) < 2, file=sys.stderr)
            for name in bar:
                bar.set_postfix_str(name)
                summary["reproductions"][name] = _run_part(name, reg[name], out, args.quick, lm, medium)
    status = int(any(r["status"] != "ok" for r in summary["reproductions"].values()))
    summary["jobs"] = jobs
    summary["seconds"] = round(time.time() - t0, 1)  # wall time of the whole command
    if several:
        from jalign.reporting import write_report

        tmp = out / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(out / "summary.json")
        for path in write_report(summary, out):
            print(f"wrote {path}")
    return status


def _run_part(name: str, module, out: Path, quick: bool, lm: bool, medium: bool = False) -> dict:
    """Run one reproduction into ``out/name`` and return its summary entry.

    It writes into a temporary sibling directory that replaces ``out/name`` only once the run is complete: a
    failed run leaves no half-written results and the previous ones in place.
    """
    t0 = time.time()
    print(f"== reproduce {name} -> {out / name}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out))
    try:
        result = module.run(tmp, quick=quick, **_part_kwargs(module, lm, medium))
    except Exception as e:  # noqa: BLE001 - report and continue with the other reproductions
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"!! {name} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    final = out / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return {"status": "ok", "seconds": round(time.time() - t0, 1), "claims": (result or {}).get("claims", [])}


def _run_part_in_worker(name: str, module_name: str, out: Path, quick: bool, lm: bool, medium: bool) -> dict:
    """:func:`_run_part` in a worker process, which imports the reproduction's module by name."""
    import importlib

    return _run_part(name, importlib.import_module(module_name), out, quick, lm, medium)


def _previous_seconds(out: Path, name: str) -> float:
    """The wall time of the previous run saved in ``out/name/results.json`` (0 when there is none)."""
    try:
        seconds = json.loads((out / name / "results.json").read_text()).get("seconds", 0.0)
    except (OSError, ValueError, AttributeError):
        return 0.0
    if isinstance(seconds, dict):
        seconds = seconds.get("total", 0.0)
    return float(seconds) if isinstance(seconds, (int, float)) else 0.0


def _run_parallel(reg: dict, todo: list[str], out: Path, quick: bool, lm: bool, jobs: int,
                  medium: bool = False) -> dict:
    """Run the reproductions ``todo`` in up to ``jobs`` worker processes (started with ``spawn``: JAX does not
    survive ``fork``), the longest first by the previous run's wall time in ``out`` or, where ``out`` has none,
    in the committed ``figures/`` of a source checkout (a good schedule for few workers). Each reproduction runs
    in a fresh process exactly as it would alone; the entries come back in the order of ``todo``. The workers'
    progress bars are off; one bar counts finished reproductions."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    import paper_repro

    committed = Path(paper_repro.__file__).resolve().parents[1] / "figures"  # a source checkout's committed runs
    order = sorted(todo, key=lambda n: -(_previous_seconds(out, n) or _previous_seconds(committed, n)))
    entries = {}
    saved = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # read by tqdm when the workers import it
    try:
        with ProcessPoolExecutor(max_workers=min(jobs, len(todo)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_run_part_in_worker, n, reg[n].__name__, out, quick, lm, medium): n for n in order}
            with tqdm(total=len(todo), desc="reproduce", unit="repro", file=sys.stderr) as bar:
                for fut in as_completed(futures):
                    name = futures[fut]
                    try:
                        entries[name] = fut.result()
                    except Exception as e:  # noqa: BLE001 - a worker that died (e.g. out of memory)
                        print(f"!! {name} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                        entries[name] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
                    bar.set_postfix_str(name)
                    bar.update()
    finally:
        if saved is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = saved
    return {name: entries[name] for name in todo}
