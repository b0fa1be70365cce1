"""Test configuration: 8 simulated CPU devices (for sharding tests), strict dtypes, shared fixtures."""

import os

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
# The unit tests are dominated by XLA:CPU compilation of small programs: LLVM at -O0 compiles them in about
# 40% less CPU time. Tests compare runs made under the same flags (or with tolerances), so values are unchanged
# where it matters; the notebook tests strip this flag for their kernels (tests/test_notebooks.py), so the
# reproductions compared with the committed figures/ data run with XLA's default optimisation.
FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"
if "--xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " " + FAST_COMPILE_FLAG
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def mesh8():
    """A 1-D mesh over the 8 simulated CPU devices, axis 'data' (Explicit axes, jax's default)."""
    assert jax.device_count() == 8, "conftest must set the simulated device count before jax is imported"
    return jax.make_mesh((8,), ("data",))


# ---------------------------------------------------------------------------------------------------------
# Scheduling for `pytest -n 2 --dist loadfile` (the CI command): longest files first.
#
# pytest-xdist's default --loadscope-reorder hands out files by descending number of tests, which puts
# few-test files of long tests (the installed-wheel run, minutes of CPU) last, where one worker runs them
# while the other idles. Instead the files below (the longest, measured with --durations=0, longest first)
# are scheduled first and every other file keeps its collection order behind them, so the tail of the run
# is made of short files and the two workers finish together. Ordering only; which tests run is unchanged.
LONG_FILES = [
    "tests/test_packaging.py",
    "tests/reliability/test_soak.py",
    "tests/train/test_train_multiprocess.py",
    "tests/train/test_train_entanglement.py",
    "tests/train/test_train_step.py",
    "tests/train/test_train_integration.py",
    "tests/diagnostics/test_entanglement.py",
    "tests/models/test_attention_vjp.py",
    "tests/envs/test_offline_lab.py",
    "tests/test_figures.py",
    "tests/train/test_fdpg_lm.py",
    "tests/train/test_train_checkpoint.py",
]


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist present: keep the order set below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    rank = {f: i for i, f in enumerate(LONG_FILES)}
    # stable sort: files stay contiguous, tests within a file keep their order
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
