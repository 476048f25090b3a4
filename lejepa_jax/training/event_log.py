"""The one writer of a job's numbers, JSON lines and TensorBoard scalars on process 0 only, and their
readers (metrics rows, the training clock of a resumed run, the run's summary).

Training writes `metrics.jsonl` and `tensorboard/` (`MetricsWriter`), the evaluation job
`eval/<evaluator>.jsonl` and `eval/tensorboard/` (`evaluation.eval_records.ResultsWriter`), each
ablation member its own workdir's. Rows are appended and flushed as they come, so a killed job
keeps what it wrote (the readers skip a last line cut short).
"""

from __future__ import annotations

import json
import os
import sys

import jax


def _summary_writer_class() -> type:
  """tensorboardX's SummaryWriter, imported without PyTorch where PyTorch is not imported yet.

  tensorboardX imports torch at module level (inside try/except ImportError) only to recognise
  torch tensors, which the project never logs (its scalars are Python floats). With PyTorch
  installed (the test extra) that import took 1.8 of the 4.7 s a training job spends importing, on
  every job start (2-core AMD EPYC, `python -X importtime`). An entry of None in `sys.modules` makes
  `import torch` raise ImportError; it is removed at once, so later imports of torch work.
  """
  blocked = "torch" not in sys.modules
  if blocked:
    sys.modules["torch"] = None  # type: ignore[assignment]
  try:
    from tensorboardX import SummaryWriter
  finally:
    if blocked:
      del sys.modules["torch"]
  return SummaryWriter


class EventLog:
  """Appends JSON rows to `<directory>/<name>.jsonl` and scalars to TensorBoard events in
  `tensorboard_dir`; a no-op on every process but 0 (one writer on shared storage)."""

  def __init__(self, directory: str, tensorboard_dir: str):
    self.dir = directory
    self.enabled = jax.process_index() == 0
    if self.enabled:
      os.makedirs(directory, exist_ok=True)
      self.tb = _summary_writer_class()(tensorboard_dir)

  def append(self, name: str, row: dict) -> None:
    """One JSON line in `<directory>/<name>.jsonl`, flushed."""
    if self.enabled:
      with open(os.path.join(self.dir, f"{name}.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")

  def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
    """TensorBoard scalars `<prefix>/<name>` at `step`."""
    if self.enabled:
      for name, value in values.items():
        self.tb.add_scalar(f"{prefix}/{name}", value, step)
      self.tb.flush()

  def close(self) -> None:
    if self.enabled:
      self.tb.close()


class MetricsWriter(EventLog):
  """A training run's `metrics.jsonl` and `tensorboard/` scalars `train/<metric>` (process 0)."""

  def __init__(self, workdir: str):
    super().__init__(workdir, os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    self.append("metrics", {"step": step, **metrics})
    self.scalars("train", metrics, step)


def read_jsonl(path: str) -> list[dict]:
  """Rows of a JSON-lines file ([] if it does not exist); a line cut short by a kill is skipped."""
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:
          continue
  return rows


def read_metrics(workdir: str) -> list[dict]:
  """Rows of a run's metrics.jsonl, the last row per step (a resumed run may repeat steps)."""
  rows = {row["step"]: row for row in read_jsonl(os.path.join(workdir, "metrics.jsonl"))}
  return [rows[k] for k in sorted(rows)]


def train_seconds_at(workdir: str, step: int) -> float:
  """Training seconds recorded by the last metrics line at or before `step` (0 if none): where a
  resumed run's clock continues."""
  seconds = [r.get("train_seconds", 0.0) for r in read_metrics(workdir) if r["step"] <= step]
  return float(seconds[-1]) if seconds else 0.0


def write_summary(workdir: str, last: dict) -> None:
  """DIR/summary.json (the last logged metrics, the best online probe accuracy) and curves.png."""
  from lejepa_jax import plots

  rows = read_metrics(workdir)
  summary = {
    "final": last,
    "steps_logged": len(rows),
    "best_probe_accuracy": max((r["probe_accuracy"] for r in rows), default=None),
  }
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  if rows:
    plots.plot_curves(rows, os.path.join(workdir, "curves.png"))
