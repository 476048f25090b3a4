"""The `pictures` evaluator: PCA of patch features as RGB next to the inputs, and the features' first
two principal components coloured by class (PNG files under the workdir's eval/pictures/)."""

from __future__ import annotations

import os

import jax
import numpy as np
from flax import nnx

from lejepa_jax import data, plots
from lejepa_jax.evaluation import extraction


def draw(
  encoder,
  config,
  test_x: np.ndarray,
  test_y: np.ndarray,
  out_prefix: str,
  *,
  num_images: int = 8,
  num_points: int = 2000,
) -> list[str]:
  """Draws both pictures of `encoder` on `num_images` evaluation images and `num_points` of the
  evaluation features test_x [m, F] with labels test_y [m]; returns the two PNG paths (none on
  processes other than 0, which draw nothing)."""
  if jax.process_index() != 0:
    return []
  batch = next(extraction.eval_batches(config, config.data.eval_split, num_images, num_images))
  images = batch["image"][batch["valid"]]
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  patches = nnx.jit(lambda m, x: m.backbone.patch_features(data.normalize(x, mean, std)))(
    encoder, images
  )
  os.makedirs(os.path.dirname(out_prefix), exist_ok=True)
  paths = [out_prefix + "_patch_pca.png", out_prefix + "_embedding.png"]
  plots.plot_patch_pca(images, np.asarray(patches, np.float32), paths[0])
  plots.plot_embedding_2d(test_x[:num_points], test_y[:num_points], paths[1])
  return paths
