"""Reports: summary.json and a PNG of the training curves at the end of a run (process 0 only), and
the evaluation job's pictures (PCA of patch features, 2-D embedding plot)."""

from __future__ import annotations

import json
import os

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(workdir: str) -> list[dict]:
  """Rows of metrics.jsonl, the last row per step (a resumed run may repeat steps)."""
  rows: dict[int, dict] = {}
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill mid-write
          continue
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
