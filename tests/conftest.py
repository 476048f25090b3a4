"""Test set-up: 8 simulated CPU devices, configured before JAX starts."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One on-disk compilation cache for the run's pytest workers and the processes tests start: many
# tests compile the same tiny programs (the cold cache took tests/test_train.py from 113 to 83 s).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"lejepa_jax_tests_{os.getuid()}"))

import jax  # noqa: E402  (must come after XLA_FLAGS)
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def devices():
  devs = jax.devices()
  assert len(devs) == 8, "tests/conftest.py must run before anything imports jax"
  return devs
