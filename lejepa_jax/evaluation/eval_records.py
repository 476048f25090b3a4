"""What the evaluation job has done and found: the record of evaluated steps, the results
writer (jsonl + TensorBoard) and the console table."""

from __future__ import annotations

import json
import os

import jax

from lejepa_jax.training import event_log


class EvalRecord:
  """Which checkpoint steps (and baselines) a probe config has handled: `eval/done_<name>.json`.

  Written atomically after each evaluation, so a restarted `--follow` job never repeats one.
  """

  def __init__(self, workdir: str, name: str):
    self.path = os.path.join(workdir, "eval", f"done_{name}.json")
    self.data = {"done": [], "skipped": {}, "baselines": [], "total_steps": None}
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.data.update(json.load(f))

  def handled(self, step: int) -> bool:
    return step in self.data["done"] or str(step) in self.data["skipped"]

  def finished(self) -> bool:
    """True once the run's final step has been handled (the run's total_steps is known)."""
    total = self.data["total_steps"]
    return total is not None and self.handled(total)

  def mark_done(self, step: int, total_steps: int) -> None:
    self.data["done"] = sorted(set(self.data["done"]) | {step})
    self.data["total_steps"] = total_steps
    self._save()

  def mark_skipped(self, step: int, reason: str) -> None:
    self.data["skipped"][str(step)] = reason
    self._save()

  def mark_baseline(self, name: str) -> None:
    self.data["baselines"] = sorted(set(self.data["baselines"]) | {name})
    self._save()

  def _save(self) -> None:
    if jax.process_index() != 0:  # one writer on shared storage
      return
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    with open(self.path + ".tmp", "w") as f:
      json.dump(self.data, f, indent=1)
    os.replace(self.path + ".tmp", self.path)


class ResultsWriter(event_log.EventLog):
  """`eval/<evaluator>.jsonl` rows and TensorBoard scalars `<encoder>/<evaluator>/<metric>`; keeps
  every row written (`rows`, on every process) for the console table."""

  def __init__(self, workdir: str, probe_name: str):
    directory = os.path.join(workdir, "eval")
    super().__init__(directory, os.path.join(directory, "tensorboard"))
    self.probe_name = probe_name
    self.rows: list[dict] = []

  def write(self, step: int, encoder: str, results: dict[str, dict[str, float]]) -> None:
    for name, values in results.items():
      row = {"step": step, "encoder": encoder, "probe_config": self.probe_name, **values}
      self.rows.append({"evaluator": name, **row})
      self.append(name, row)
      self.scalars(f"{encoder}/{name}", values, step)


def format_table(rows: list[dict]) -> str:
  """One line per (encoder, step, evaluator): its metrics, accuracies as percentages."""
  lines = [f"{'encoder':<12} {'step':>6}  {'evaluator':<10}  metrics"]
  for row in rows:
    metrics = {k: v for k, v in row.items() if k not in ("evaluator", "step", "encoder", "probe_config")}
    lines.append(
      f"{row['encoder']:<12} {row['step']:>6}  {row['evaluator']:<10}  {format_metrics(metrics)}"
    )
  return "\n".join(lines)


def format_metrics(metrics: dict[str, float]) -> str:
  """'top1 91.20%, top5 99.80%': accuracies as percentages, other metrics (RankMe, SIGReg, losses,
  steps, seconds) as numbers."""
  numbers = ("rankme", "sigreg", "loss", "steps", "seconds")
  return ", ".join(
    f"{k} {v:.4g}" if k.startswith(numbers) else f"{k} {100 * v:.2f}%" for k, v in metrics.items()
  )


def plot_time_to_accuracy(workdir: str, probe_name: str, path: str) -> bool:
  """DIR/eval/time_to_accuracy_<probe>.png from the run's metrics and the evaluations of probe config
  `probe_name` (`plots.plot_time_to_accuracy`); False before there is anything to draw."""
  from lejepa_jax import plots

  evaluations = {
    name: [
      r
      for r in event_log.read_jsonl(os.path.join(workdir, "eval", f"{name}.jsonl"))
      if r.get("probe_config") == probe_name
    ]
    for name in plots.EVALUATOR_STYLES
  }
  title = f"time to accuracy ({os.path.basename(os.path.normpath(workdir))}, probe config {probe_name})"
  return plots.plot_time_to_accuracy(event_log.read_metrics(workdir), evaluations, title, path)
