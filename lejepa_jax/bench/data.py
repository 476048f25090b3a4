"""Input-pipeline throughput per CPU worker: images/s and views/s of the multi-crop augmentation.

Recipes: the paper's ImageNet views (2 x 224 + 6 x 96 px, full photometric augmentation) on JPEG-encoded
256-400 px images generated locally, and the Fashion-MNIST recipe of configs/fashion_mnist.py on 28 px
PNGs. One process, no prefetch workers: the numbers are per worker; the pipeline scales with
`data.num_workers`.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
from absl import flags

from lejepa_jax import cli, data
from lejepa_jax.bench import common

IMAGENET_RECIPE = {
  "channels": 3,
  "global_views": {"count": 2, "size": 224, "scale": (0.3, 1.0)},
  "local_views": {"count": 6, "size": 96, "scale": (0.05, 0.3)},
  "augment": {},  # the defaults are the paper's recipe
}
FASHION_MNIST_RECIPE = {
  "channels": 1,
  "global_views": {"count": 2, "size": 28, "scale": (0.25, 1.0)},
  "local_views": {"count": 4, "size": 14, "scale": (0.05, 0.25)},
  "augment": {},
}

_PROG = "python -m lejepa_jax.bench data"
_FLAGS = flags.FlagValues()  # this benchmark's own flags (`lejepa_jax.cli`)
_SECONDS = flags.DEFINE_float("seconds", 20.0, "time per recipe", flag_values=_FLAGS)
_NUM_IMAGES = flags.DEFINE_integer(
  "num_images",
  256,
  "distinct images of the ImageNet recipe (8x as many for Fashion-MNIST)",
  flag_values=_FLAGS,
)


def synthetic_jpegs(count: int, seed: int = 0) -> list[dict]:
  """Natural-looking (smooth, textured) RGB JPEGs with sides drawn from 256-400 px."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(count):
    h, w = rng.integers(256, 401, 2)
    coarse = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3)).astype(np.uint8)
    image = cv2.resize(coarse, (int(w), int(h)), interpolation=cv2.INTER_CUBIC)
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    out.append(
      {
        "image": cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes(),
        "label": i % 10,
      }
    )
  return out


def small_pngs(count: int, seed: int = 0) -> list[dict]:
  rng = np.random.default_rng(seed)
  return [
    {
      "image": cv2.imencode(".png", rng.integers(0, 256, (28, 28), np.uint8))[1].tobytes(),
      "label": i % 10,
    }
    for i in range(count)
  ]


def throughput(source: list[dict], recipe: dict, batch: int, seconds: float) -> tuple[float, int]:
  """Images per second of the training pipeline over `source` for about `seconds`."""
  multicrop = data.multicrop_from_config(recipe)
  it = iter(data.train_dataset(source, multicrop, global_batch_size=batch, seed=0))
  next(it)  # warm-up
  start, images = time.perf_counter(), 0
  while time.perf_counter() - start < seconds:
    next(it)
    images += batch
  return images / (time.perf_counter() - start), recipe["global_views"]["count"] + recipe["local_views"][
    "count"
  ]


def main(argv: list[str] | None = None) -> None:
  """The command line (module docstring); `argv` without the program name, None: sys.argv[1:]."""
  cli.parse(_FLAGS, argv, prog=_PROG, doc=__doc__)
  print(f"# data pipeline, 1 worker ({common.machine_description()})", flush=True)
  rows = []
  for name, source, recipe, batch in (
    ("ImageNet 2x224 + 6x96, JPEG 256-400 px", synthetic_jpegs(_NUM_IMAGES.value), IMAGENET_RECIPE, 16),
    (
      "Fashion-MNIST 2x28 + 4x14, PNG 28 px",
      small_pngs(_NUM_IMAGES.value * 8),
      FASHION_MNIST_RECIPE,
      256,
    ),
  ):
    images_per_s, views = throughput(source, recipe, batch, _SECONDS.value)
    rows.append([name, f"{images_per_s:.1f}", f"{images_per_s * views:.0f}"])
    print(f"  done {name}", flush=True)
  print(common.markdown_table(["recipe", "images/s per worker", "views/s per worker"], rows))
