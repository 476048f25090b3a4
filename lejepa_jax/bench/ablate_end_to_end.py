"""Batched ablation against sequential runs, end to end: the commands a user runs, timed by the clock.

`python -m lejepa_jax.bench ablate --end_to_end` runs N members of a lambda sweep of
configs/fashion_mnist.py two ways on the prepared Fashion-MNIST data, each side as fresh processes:
N times `python -m lejepa_jax.main` (one run per lambda) and once `python -m lejepa_jax.ablate`
(one vmapped program, with its report: RankMe and the online probe on `--eval_examples` images per
member, which the single runs do not compute). The wall clock holds everything a user waits for:
interpreter start and imports, opening the data, compilation, the data pipeline (one per run, one
for the whole ablation), the steps, a checkpoint at the end. Each side trains `--measured_steps`
steps (S); the steady step time from the runs' metrics (`train_seconds` between the first and the
last metrics line) extends the measurement to `--run_steps` (T, default the config's schedule):

  estimate(T) = wall(S) - S * step + T * step,   per side.

The estimate leaves out the schedule's intermediate checkpoints (the default saves at step 700 as
well as at the end): one more save per run, and one stacked plus N member saves for the ablation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from lejepa_jax.bench import common
from lejepa_jax.training import event_log

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "fashion_mnist.py")


def _overrides(steps: int, log_every: int, data_dir: str, extra: dict[str, object]) -> list[str]:
  """`--config.key=value` flags of a measured run: S steps, one checkpoint, at least two metrics
  lines (the steady step time needs two), the given data and model overrides."""
  settings = {
    "total_steps": steps,
    "checkpoint_every": steps,
    "keep_checkpoints": 1,
    "log_every": min(log_every, max(1, steps // 2)),
    "data.data_dir": data_dir,
    **extra,
  }
  return [f"--config.{k}={v}" for k, v in settings.items()]


def _timed(command: list[str], log_path: str) -> float:
  """Wall seconds of `command` (a fresh process, run from the repository root); its output goes to
  `log_path`. A failed command raises with the end of that output."""
  start = time.perf_counter()
  with open(log_path, "w") as log:
    done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
  if done.returncode:
    with open(log_path) as log:
      tail = "".join(log.readlines()[-30:])
    raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}); its output ends:\n{tail}")
  return time.perf_counter() - start


def steady_step_seconds(workdir: str) -> float:
  """Seconds per step between a run's first and last metrics lines (their `train_seconds`)."""
  rows = [r for r in event_log.read_metrics(workdir) if "train_seconds" in r]
  if len(rows) < 2:
    raise RuntimeError(f"{workdir}: fewer than two metrics lines; give more --measured_steps.")
  first, last = rows[0], rows[-1]
  return (last["train_seconds"] - first["train_seconds"]) / (last["step"] - first["step"])


def sequential_commands(
  recipe: str, lambdas: Sequence[str], overrides: list[str], scratch: str
) -> list[tuple[str, list[str]]]:
  """(workdir, command) of one `lejepa_jax.main` run per lambda."""
  runs = []
  for value in lambdas:
    workdir = os.path.join(scratch, f"run_lambda={value}")
    runs.append(
      (
        workdir,
        [
          sys.executable,
          "-m",
          "lejepa_jax.main",
          f"--config={CONFIG}:recipe={recipe}",
          f"--workdir={workdir}",
          *overrides,
          f"--config.loss.sigreg_weight={value}",
        ],
      )
    )
  return runs


def ablation_command(
  recipe: str, lambdas: Sequence[str], overrides: list[str], scratch: str
) -> tuple[str, list[str]]:
  """(workdir, command) of one `lejepa_jax.ablate` over every lambda."""
  workdir = os.path.join(scratch, "ablation")
  return workdir, [
    sys.executable,
    "-m",
    "lejepa_jax.ablate",
    f"--config={CONFIG}:recipe={recipe}",
    f"--workdir={workdir}",
    f"--sweep=loss.sigreg_weight={','.join(lambdas)}",
    *overrides,
  ]


def end_to_end_table(
  sequential: dict[str, float], ablation: dict[str, float], members: int, steps: int, schedule: int
) -> str:
  """Markdown rows per side ({"wall": s, "step": s/step}): the measured wall clock of `steps`, the
  part outside the steps, the steady step, and the `schedule` estimate; then the speed-ups."""
  estimate = lambda r: r["wall"] + (schedule - steps) * r["step"]
  sides = (
    (f"{members} x `python -m lejepa_jax.main`", sequential),
    ("`python -m lejepa_jax.ablate` (with its report)", ablation),
  )
  rows = [
    [
      name,
      f"{r['wall']:.0f}",
      f"{r['wall'] - steps * r['step']:.0f}",
      f"{r['step']:.3f}",
      f"{estimate(r):.0f}",
    ]
    for name, r in sides
  ]
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
  log_every: int,
  data_dir: str,
  extra: dict[str, object],
) -> str:
  """Both sides (the ablation first, after one untimed start of Python and JAX so neither side
  meets a cold file cache) in a scratch directory, removed on success; returns the table."""
  data_dir = os.path.abspath(data_dir)
  if not os.path.isdir(os.path.join(data_dir, "fashion_mnist")):
    raise SystemExit(
      f"bench ablate --end_to_end trains on Fashion-MNIST and found none in {data_dir}; prepare it "
      f"with `python -m lejepa_jax.prepare fashion_mnist --out={data_dir}` or pass --data_dir."
    )
  scratch = tempfile.mkdtemp(prefix="bench_ablate_")
  overrides = _overrides(steps, log_every, data_dir, extra)
  _timed([sys.executable, "-m", "lejepa_jax.main", "--help"], os.path.join(scratch, "warm.log"))
  workdir, command = ablation_command(recipe, lambdas, overrides, scratch)
  ablation = {"wall": _timed(command, workdir + ".log")}
  first_member = sorted(os.listdir(os.path.join(workdir, "members")))[0]
  ablation["step"] = steady_step_seconds(os.path.join(workdir, "members", first_member))
  print("  ablation done", flush=True)
  sequential = {"wall": 0.0, "step": 0.0}
  for workdir, command in sequential_commands(recipe, lambdas, overrides, scratch):
    sequential["wall"] += _timed(command, workdir + ".log")
    sequential["step"] += steady_step_seconds(workdir)
    print(f"  sequential: {os.path.basename(workdir)} done", flush=True)
  shutil.rmtree(scratch)
  return end_to_end_table(sequential, ablation, len(lambdas), steps, schedule)
