"""Batched ablation against sequential runs, end to end: the commands a user runs, timed by the clock.

`python -m lejepa_jax.bench ablate --end_to_end` runs N members of a lambda sweep of
configs/fashion_mnist.py two ways on the prepared Fashion-MNIST data, each as its own process:
N times `python -m lejepa_jax.main` (one run per lambda) and once `python -m lejepa_jax.ablate`
(one vmapped program). Everything a user waits for is in the wall clock: interpreter start and
imports, opening the data, compilation, the data pipeline (one per run, one per ablation), the
steps, checkpoints, and the ablation's report. Each run really trains `--run_steps` steps; the
steady step time from the runs' metrics (`train_seconds`) extends the measurement to the config's
whole schedule: estimate(T) = wall - S * step + T * step, per side.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from lejepa_jax import reports
from lejepa_jax.bench import common

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "fashion_mnist.py")


def _overrides(steps: int, data_dir: str, extra: dict[str, object]) -> list[str]:
  settings = {
    "total_steps": steps,
    "checkpoint_every": steps,
    "keep_checkpoints": 1,
    "log_every": max(1, min(20, steps // 4)),  # at least two lines for the steady step time
    "data.data_dir": data_dir,
    **extra,
  }
  return [f"--config.{k}={v}" for k, v in settings.items()]


def _timed(command: list[str], log_path: str) -> float:
  """Wall seconds of `command` (a fresh process); its output goes to `log_path`."""
  start = time.perf_counter()
  with open(log_path, "w") as log:
    done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
  if done.returncode:
    raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}); its output: {log_path}")
  return time.perf_counter() - start


def steady_step_seconds(workdir: str) -> float:
  """Seconds per step after the first logged step, from a run's `train_seconds` (training.loop)."""
  rows = [r for r in reports.read_metrics(workdir) if "train_seconds" in r]
  if len(rows) < 2:
    raise RuntimeError(f"{workdir}: fewer than two metrics lines; give more --run_steps.")
  first, last = rows[0], rows[-1]
  return (last["train_seconds"] - first["train_seconds"]) / (last["step"] - first["step"])


def time_sequential_runs(
  recipe: str, lambdas: Sequence[str], steps: int, data_dir: str, extra: dict, scratch: str
) -> dict[str, float]:
  """Wall seconds of one `lejepa_jax.main` process per lambda, summed, and their steady step sum."""
  wall = step = 0.0
  for value in lambdas:
    workdir = os.path.join(scratch, f"run_lambda={value}")
    command = [
      sys.executable,
      "-m",
      "lejepa_jax.main",
      f"--config={CONFIG}:recipe={recipe}",
      f"--workdir={workdir}",
      *_overrides(steps, data_dir, {**extra, "loss.sigreg_weight": value}),
    ]
    wall += _timed(command, workdir + ".log")
    step += steady_step_seconds(workdir)
    print(f"  sequential: lambda {value} done", flush=True)
  return {"wall": wall, "step": step}


def time_ablation(
  recipe: str, lambdas: Sequence[str], steps: int, data_dir: str, extra: dict, scratch: str
) -> dict[str, float]:
  """Wall seconds of one `lejepa_jax.ablate` process training every lambda, and its steady step."""
  workdir = os.path.join(scratch, "ablation")
  command = [
    sys.executable,
    "-m",
    "lejepa_jax.ablate",
    f"--config={CONFIG}:recipe={recipe}",
    f"--workdir={workdir}",
    f"--sweep=loss.sigreg_weight={','.join(lambdas)}",
    *_overrides(steps, data_dir, extra),
  ]
  wall = _timed(command, workdir + ".log")
  first_member = sorted(os.listdir(os.path.join(workdir, "members")))[0]
  return {"wall": wall, "step": steady_step_seconds(os.path.join(workdir, "members", first_member))}


def end_to_end_table(sequential: dict, ablation: dict, members: int, steps: int, schedule: int) -> str:
  """Markdown rows: measured wall clock of `steps`, steady s/step, and the `schedule` estimate."""
  estimate = lambda r: r["wall"] + (schedule - steps) * r["step"]
  rows = []
  for name, r in (
    (f"{members} x python -m lejepa_jax.main", sequential),
    ("python -m lejepa_jax.ablate", ablation),
  ):
    rows.append(
      [
        name,
        f"{r['wall']:.0f}",
        f"{r['wall'] - steps * r['step']:.0f}",
        f"{r['step']:.3f}",
        f"{estimate(r):.0f}",
      ]
    )
  rows.append(
    [
      "speed-up",
      f"{sequential['wall'] / ablation['wall']:.2f}x",
      "",
      f"{sequential['step'] / ablation['step']:.2f}x",
      f"**{estimate(sequential) / estimate(ablation):.2f}x**",
    ]
  )
  return common.markdown_table(
    [
      "",
      f"wall s, {steps} steps (measured)",
      "outside the steps s",
      "s/step, all members",
      f"wall s, {schedule} steps (estimate)",
    ],
    rows,
  )


def run(
  recipe: str,
  lambdas: Sequence[str],
  steps: int,
  schedule: int,
  data_dir: str,
  extra: dict[str, object],
) -> str:
  """Both sides in a scratch directory (removed after); returns the table."""
  if not os.path.isdir(os.path.join(os.path.abspath(data_dir), "fashion_mnist")):
    raise SystemExit(
      f"bench ablate --end_to_end trains on Fashion-MNIST and found none in {data_dir}; prepare it "
      f"with `python -m lejepa_jax.data.prepare fashion_mnist --out={data_dir}` or pass --data_dir."
    )
  data_dir = os.path.abspath(data_dir)
  with tempfile.TemporaryDirectory(prefix="bench_ablate_") as scratch:
    ablation = time_ablation(recipe, lambdas, steps, data_dir, extra, scratch)
    print("  ablation done", flush=True)
    sequential = time_sequential_runs(recipe, lambdas, steps, data_dir, extra, scratch)
  return end_to_end_table(sequential, ablation, len(lambdas), steps, schedule)
