"""Helpers shared by the test modules (fixtures live in conftest.py)."""

import json
import os
import subprocess
import sys

import jax
import ml_collections

from lejepa_jax import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir: str, total_steps: int = 6) -> ml_collections.ConfigDict:
  """tests/tiny_config.py (a seconds-long ViT run) on the `data_dir` fixture's images."""
  config = config_lib.load_config_file(os.path.join(ROOT, "tests", "tiny_config.py"), data_dir)
  config.total_steps = total_steps
  return config


def xla_flags(devices: int | None = None) -> str:
  """XLA_FLAGS for a process a test starts: the tests' flags (conftest.py) with `devices`
  simulated CPU devices, or, for None, with no device count (launch/local.sh adds its own)."""
  flags = [f for f in os.environ["XLA_FLAGS"].split() if "host_platform_device_count" not in f]
  if devices is not None:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  return " ".join(flags)


def start_training(data_dir: str, workdir: str, *flags: str, devices: int = 8, wait: bool = True):
  """`python -m lejepa_jax.main` on tests/tiny_config.py in a fresh process of `devices` simulated
  CPU devices; with `wait`, run to the end (the test fails unless it exits 0). Returns the process."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(devices))
  config = f"--config=tests/tiny_config.py:{data_dir}"
  command = [sys.executable, "-m", "lejepa_jax.main", config, f"--workdir={workdir}", *flags]
  process = subprocess.Popen(
    command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  if wait:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
  return process


def read_metrics(workdir: str) -> dict[int, dict]:
  """A run's metrics.jsonl as {step: row}."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {row["step"]: row for row in map(json.loads, f)}


class TraceCounter:
  """Counts the jaxprs JAX traces while active (jax.monitoring's trace-duration events): all of
  them, or those of the Python function named `fun_name`."""

  EVENT = "/jax/core/compile/jaxpr_trace_duration"

  def __init__(self, fun_name: str | None = None):
    self.count = 0
    self.fun_name = fun_name

  def __call__(self, event, duration, **kwargs):
    self.count += event == self.EVENT and self.fun_name in (None, kwargs.get("fun_name"))

  def __enter__(self):
    jax.monitoring.register_event_duration_secs_listener(self)
    return self

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_duration_listener(self)
