"""End-of-run reports: summary.json and a PNG of the training curves (process 0 only)."""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(workdir: str) -> list[dict]:
  """Rows of metrics.jsonl, the last row per step (a resumed run may repeat steps)."""
  rows: dict[int, dict] = {}
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        row = json.loads(line)
        rows[row["step"]] = row
  return [rows[k] for k in sorted(rows)]


def plot_curves(rows: list[dict], path: str) -> None:
  """Loss and its two terms (left), online probe accuracy (right), against the step."""
  steps = [r["step"] for r in rows]
  fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
  for key, style in (("loss", "-"), ("pred", "--"), ("sigreg", ":")):
    left.plot(steps, [r[key] for r in rows], style, label=key)
  left.set_yscale("log")
  left.set_xlabel("step")
  left.legend()
  left.set_title("LeJEPA loss")
  right.plot(steps, [r["probe_accuracy"] for r in rows])
  right.set_xlabel("step")
  right.set_ylim(0, 1)
  right.set_title("online linear probe accuracy (train batch)")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write_summary(workdir: str, last: dict) -> None:
  rows = read_metrics(workdir)
  summary = {"final": last, "steps_logged": len(rows),
             "best_probe_accuracy": max((r["probe_accuracy"] for r in rows), default=None)}
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  if rows:
    plot_curves(rows, os.path.join(workdir, "curves.png"))
