"""Timing and machine-description helpers shared by the benchmarks."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import jax


def machine_description() -> str:
  """One line naming the processor, core count and JAX backend the numbers came from."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  devices = jax.devices()
  return (
    f"{cpu}, {os.cpu_count()} cores; jax {jax.__version__} on {len(devices)} "
    f"{devices[0].platform} device(s)"
  )


def wall_times(run: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
  """Wall times of `repeats` calls of `run()` (which must block until its result is ready)."""
  for _ in range(warmup):
    run()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return times


def median_seconds(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
  """Median wall time of `run()`."""
  return statistics.median(wall_times(run, repeats, warmup))


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)
