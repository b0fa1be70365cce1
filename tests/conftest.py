"""Test configuration: 8 simulated CPU devices (for sharding tests), strict dtypes, shared fixtures."""

import os

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
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
