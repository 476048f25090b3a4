"""Offline preparation of local data into TFDS ArrayRecord datasets, without network access: the
library behind `python -m lejepa_jax.prepare` (that module's docstring has the command lines).

The result is read back like any TFDS dataset: `tfds.data_source(name, split, data_dir=DATA_DIR)`.
Preparing a dataset that is already there does nothing. Images are stored PNG-encoded (TFDS then
needs no TensorFlow to write them). An image that cannot be decoded (or a JPEG cut short) stops
the preparation with its path, and nothing is written; with skip_bad_images each is listed and
left out.
"""

from __future__ import annotations

import gzip
import os
import sys
from collections.abc import Iterator

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist package
FASHION_MNIST_CLASSES = (
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (optionally gzipped), the format MNIST-style datasets ship in."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  if data[:2] != b"\x00\x00" or data[2] != 0x08:
    raise ValueError(f"{path} is not an IDX file of unsigned bytes.")
  ndim = data[3]
  dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def encode_png(image: np.ndarray) -> bytes:
  import cv2

  if image.ndim == 3 and image.shape[-1] == 3:
    image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)  # OpenCV writes BGR
  ok, buffer = cv2.imencode(".png", image)
  if not ok:
    raise ValueError("PNG encoding failed.")
  return buffer.tobytes()


def _idx_path(source: str, stem: str) -> str:
  for candidate in (f"{stem}.gz", stem):
    path = os.path.join(source, candidate)
    if os.path.exists(path):
      return path
  raise FileNotFoundError(
    f"{os.path.join(source, stem)}(.gz) not found. Install Fashion-MNIST with "
    "`apt-get install dataset-fashion-mnist` or pass --source=<folder with the IDX files>."
  )


class BadImageError(ValueError):
  """An image in an image folder that cannot be decoded; the message names it and what to do."""


def _builders():
  """Builder classes, defined lazily so importing this module does not import TFDS."""
  import tensorflow_datasets as tfds

  class FashionMnistLocal(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Fashion-MNIST from local IDX files, written exactly as TFDS's own `fashion_mnist` 3.0.1."""

    name = "fashion_mnist"
    VERSION = tfds.core.Version("3.0.1")

    def __init__(self, *, source: str, **kwargs):
      self._source = source
      super().__init__(**kwargs)

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {
            "image": tfds.features.Image(shape=(28, 28, 1)),
            "label": tfds.features.ClassLabel(names=FASHION_MNIST_CLASSES),
          }
        ),
        supervised_keys=("image", "label"),
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples("train"), "test": self._generate_examples("t10k")}

    def _generate_examples(self, prefix: str) -> Iterator[tuple[int, dict]]:
      images = read_idx(_idx_path(self._source, f"{prefix}-images-idx3-ubyte"))
      labels = read_idx(_idx_path(self._source, f"{prefix}-labels-idx1-ubyte"))
      for i, (image, label) in enumerate(zip(images, labels)):
        yield i, {"image": encode_png(image[..., None]), "label": int(label)}

  class ImageFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Images arranged one sub-folder per class (optionally under train/, test/, ... split folders)."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, source: str, skip_bad_images: bool = False, **kwargs):
      self._source, self._skip_bad_images = source, skip_bad_images
      self.skipped: list[str] = []  # the images left out with skip_bad_images
      self._splits = _folder_splits(source)
      self._classes = sorted({c for split in self._splits.values() for c in _class_dirs(split)})
      super().__init__(**kwargs)

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=self._classes),
          }
        ),
        supervised_keys=("image", "label"),
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(path) for split, path in self._splits.items()}

    def _generate_examples(self, folder: str):
      for label in _class_dirs(folder):
        class_dir = os.path.join(folder, label)
        for filename in sorted(os.listdir(class_dir)):
          if not filename.lower().endswith(IMAGE_SUFFIXES):
            continue
          image = self._read(os.path.join(class_dir, filename))
          if image is not None:
            yield f"{label}/{filename}", {"image": encode_png(image), "label": label}

    def _read(self, path: str) -> np.ndarray | None:
      """The RGB image at `path`; a bad one raises, or with skip_bad_images is listed -> None."""
      from lejepa_jax.data import augment

      with open(path, "rb") as f:
        data = f.read()
      # The training pipeline's decoder, so that what is written is what training can read.
      image = augment.decode(data, 3)
      if image is not None:
        return image
      reason = augment.undecodable_reason(data)
      if not self._skip_bad_images:
        raise BadImageError(
          f"Bad image {path}: {reason}. Replace or delete it and run the command again (nothing "
          "was written), or pass --skip_bad_images to leave out such images (each is listed)."
        )
      self.skipped.append(path)
      print(
        f"[prepare] skipped bad image {path}: {reason} ({len(self.skipped)} skipped)", file=sys.stderr
      )
      return None

  return FashionMnistLocal, ImageFolder


def _class_dirs(folder: str) -> list[str]:
  """Class sub-folders; hidden ones (.ipynb_checkpoints, .DS_Store folders, ...) are not classes."""
  return sorted(
    d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)) and not d.startswith(".")
  )


# Split folder names as datasets ship them -> the TFDS split names the configs read.
SPLIT_FOLDERS = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}


def _folder_splits(source: str) -> dict[str, str]:
  """{split: folder}: `train/`, `validation/` (or `val/`), `test/` sub-folders if present, else all
  of `source` is the train split. Other sub-folders next to split folders are reported, not read."""
  if not os.path.isdir(source):
    raise FileNotFoundError(f"Image folder {source} does not exist.")
  named = {}
  for folder, split in SPLIT_FOLDERS.items():
    if os.path.isdir(os.path.join(source, folder)):
      if split in named:
        raise ValueError(f"{source} has both validation/ and val/: keep one.")
      named[split] = os.path.join(source, folder)
  if named:
    ignored = sorted(set(_class_dirs(source)) - set(SPLIT_FOLDERS))
    if ignored:
      print(
        f"[prepare] {source}: not split folders, skipped: {ignored} (splits are "
        f"{sorted(SPLIT_FOLDERS)})",
        file=sys.stderr,
      )
  return named or {"train": source}


def prepare_fashion_mnist(out: str, source: str = FASHION_MNIST_DIR) -> str:
  """Writes `fashion_mnist` (train 60k, test 10k) under `out`; a no-op if it is already there."""
  fashion_mnist, _ = _builders()
  builder = fashion_mnist(source=source, data_dir=out, file_format="array_record")
  builder.download_and_prepare()
  return builder.data_dir


def prepare_image_folder(name: str, source: str, out: str, skip_bad_images: bool = False) -> str:
  """Writes the images under `source` (one sub-folder per class) as TFDS dataset `name` under `out`.

  An image that cannot be decoded raises BadImageError naming it (TFDS then removes the partial
  output); with `skip_bad_images` each is listed on stderr, left out and counted.
  """
  _, image_folder = _builders()
  # TFDS takes a dataset's name from its builder class.
  named = type(f"ImageFolder_{name}", (image_folder,), {"name": name}, skip_registration=True)
  builder = named(
    source=source, data_dir=out, file_format="array_record", skip_bad_images=skip_bad_images
  )
  builder.download_and_prepare()
  if builder.skipped:
    print(
      f"[prepare] left out {len(builder.skipped)} bad image(s) (--skip_bad_images), listed above",
      file=sys.stderr,
    )
  return builder.data_dir
