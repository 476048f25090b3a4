"""Reports: summary.json and a PNG of the training curves at the end of a run (process 0 only), and
the evaluation job's pictures (PCA of patch features, 2-D embedding plot)."""

from __future__ import annotations

import json
import os

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt


def read_metrics(workdir: str) -> list[dict]:
  """Rows of metrics.jsonl, the last row per step (a resumed run may repeat steps)."""
  rows = {row["step"]: row for row in read_jsonl(os.path.join(workdir, "metrics.jsonl"))}
  return [rows[k] for k in sorted(rows)]


def train_seconds_at(workdir: str, step: int) -> float:
  """Training seconds recorded by the last metrics line at or before `step` (0 if none): where a
  resumed run's clock continues."""
  seconds = [r.get("train_seconds", 0.0) for r in read_metrics(workdir) if r["step"] <= step]
  return float(seconds[-1]) if seconds else 0.0


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


_EVALUATOR_STYLES = {"linear": ("o-", "linear probe"), "knn": ("s-", "kNN")}


def plot_time_to_accuracy(workdir: str, probe_name: str, path: str) -> bool:
  """Accuracy against minutes of training: the online probe (training batches, from
  metrics.jsonl), and the evaluation job's linear and kNN test accuracy of each evaluated checkpoint
  (eval/<evaluator>.jsonl rows of probe config `probe_name`), next to the pixel and random-init
  levels. Returns False (and draws nothing) before there is anything to draw."""
  train = [r for r in read_metrics(workdir) if "train_seconds" in r]
  if not train:
    return False
  steps = np.array([r["step"] for r in train], float)
  minutes = np.array([r["train_seconds"] for r in train]) / 60
  fig, ax = plt.subplots(figsize=(7, 4.5))
  ax.plot(
    minutes,
    [100 * r["probe_accuracy"] for r in train],
    color="0.7",
    lw=1,
    label="online probe (augmented training batches)",
  )
  for evaluator, (style, name) in _EVALUATOR_STYLES.items():
    rows = [
      r
      for r in read_jsonl(os.path.join(workdir, "eval", f"{evaluator}.jsonl"))
      if r.get("probe_config") == probe_name
    ]
    points = sorted((r["step"], r["top1"]) for r in rows if r["encoder"] == "checkpoint")
    # The encoder at random initialisation is the run at minute 0.
    points = [(0, r["top1"]) for r in rows if r["encoder"] == "random_init"][-1:] + points
    if points:
      at = np.interp(
        [p[0] for p in points], np.concatenate([[0], steps]), np.concatenate([[0], minutes])
      )
      (line,) = ax.plot(
        at, [100 * p[1] for p in points], style, label=f"{name}, test set (minute 0: random init)"
      )
      for r in rows:
        if r["encoder"] == "pixels":
          ax.axhline(100 * r["top1"], color=line.get_color(), ls="--", lw=1, label=f"{name}, raw pixels")
  ax.set_xlabel("minutes of training")
  ax.set_ylabel("top-1 accuracy (%)")
  ax.set_title(
    f"time to accuracy ({os.path.basename(os.path.normpath(workdir))}, probe config {probe_name})"
  )
  ax.legend(fontsize=7, loc="lower right")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True


def write_summary(workdir: str, last: dict) -> None:
  rows = read_metrics(workdir)
  summary = {
    "final": last,
    "steps_logged": len(rows),
    "best_probe_accuracy": max((r["probe_accuracy"] for r in rows), default=None),
  }
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  if rows:
    plot_curves(rows, os.path.join(workdir, "curves.png"))


def _pca(x: np.ndarray, k: int) -> np.ndarray:
  """Projections of the rows of x [n, d] on its top-k principal directions: [n, k]."""
  centred = x - x.mean(0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  return centred @ vt[:k].T


def plot_patch_pca(images: np.ndarray, patches: np.ndarray, path: str) -> None:
  """Inputs (top row) and the first 3 principal components of their patch features as RGB (bottom).

  Args:
    images: [n, H, W, C] uint8 inputs.
    patches: [n, h, w, D] patch features (ViT tokens or a ConvNet's final map); the PCA is fitted on
      the patches of all n images together, so colours are comparable across images.
  """
  n, h, w, d = patches.shape
  rgb = _pca(patches.reshape(-1, d).astype(np.float64), 3)
  rgb = (rgb - rgb.min(0)) / np.maximum(rgb.max(0) - rgb.min(0), 1e-12)
  rgb = rgb.reshape(n, h, w, 3)
  fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
  for i in range(n):
    image = images[i, ..., 0] if images.shape[-1] == 1 else images[i]
    axes[0, i].imshow(image, cmap="gray" if images.shape[-1] == 1 else None)
    axes[1, i].imshow(rgb[i], interpolation="nearest")
    for ax in axes[:, i]:
      ax.set_axis_off()
  fig.suptitle("inputs and PCA of patch features (RGB = first 3 components)")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_embedding_2d(features: np.ndarray, labels: np.ndarray, path: str) -> None:
  """Scatter of features [n, F] on their first two principal components, coloured by label [n]."""
  xy = _pca(features.astype(np.float64), 2)
  fig, ax = plt.subplots(figsize=(5, 4.5))
  points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=4)
  fig.colorbar(points, ax=ax, label="class")
  ax.set_title("frozen features, first two principal components")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
