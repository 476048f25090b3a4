"""Pictures, drawn from numbers the caller has read: the training curves, accuracy against minutes of
training, PCA of patch features and 2-D embeddings. PNG files only; matplotlib is imported (with its
file-only backend) when a picture is first drawn, not when this module is imported."""

from __future__ import annotations

import functools
import os

import numpy as np


@functools.cache
def pyplot():
  """matplotlib.pyplot on the Agg backend (files, no display), imported on first use."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def plot_curves(rows: list[dict], path: str) -> None:
  """Loss and its two terms (left), online probe accuracy (right), against the step."""
  plt = pyplot()
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


EVALUATOR_STYLES = {"linear": ("o-", "linear probe"), "knn": ("s-", "kNN")}


def plot_time_to_accuracy(
  train: list[dict], evaluations: dict[str, list[dict]], title: str, path: str
) -> bool:
  """Accuracy against minutes of training: the online probe (`train`: metrics rows with
  train_seconds), and the linear and kNN test accuracy of each evaluated checkpoint (`evaluations`:
  {evaluator: its eval rows}), next to the pixel and random-init levels. Returns False (and draws
  nothing) before there is anything to draw."""
  train = [r for r in train if "train_seconds" in r]
  if not train:
    return False
  plt = pyplot()
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
  for evaluator, (style, name) in EVALUATOR_STYLES.items():
    rows = evaluations.get(evaluator, [])
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
  ax.set_title(title)
  ax.legend(fontsize=7, loc="lower right")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True


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
  plt = pyplot()
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
  plt = pyplot()
  xy = _pca(features.astype(np.float64), 2)
  fig, ax = plt.subplots(figsize=(5, 4.5))
  points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=4)
  fig.colorbar(points, ax=ax, label="class")
  ax.set_title("frozen features, first two principal components")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
