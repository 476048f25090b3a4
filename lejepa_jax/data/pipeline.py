"""grain pipelines over TFDS ArrayRecord sources: multi-crop training batches and exact evaluation passes.

Training: seeded global shuffle (a new order every epoch) -> repeat -> multi-crop `random_map`
(deterministic per (seed, position in the global stream)) -> this host's block of every global batch
-> drop undecodable records -> batch of global_batch / process_count -> optional multiprocess
prefetch. The global batches are the same examples with the same crops whatever the process count.
The iterator's state (`get_state` / `set_state`) goes into the training checkpoint, so a resumed run
continues with exactly the batches the uninterrupted run would have produced.
"""

from __future__ import annotations

import os

import math
from typing import Any, Mapping

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding

from lejepa_jax import sharding as sharding_lib
from lejepa_jax.data import augment


class DataError(ValueError):
  """A dataset that cannot be opened; the message says what to run."""


def open_source(name: str, split: str, data_dir: str | None):
  """A TFDS ArrayRecord data source whose images stay encoded (decoded by the pipeline's workers)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  try:
    return tfds.data_source(
        name, split=split, data_dir=data_dir, builder_kwargs={"file_format": "array_record"},
        decoders={"image": tfds.decode.SkipDecoding()}, download=False)
  except Exception as error:  # TFDS raises several types (not found, bad split, missing files)
    # Without a data_dir TFDS reads its default directory: prepare into that one.
    out = data_dir or os.path.expanduser(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))
    hint = (f"python -m lejepa_jax.data.prepare fashion_mnist --out={out}"
            if name == "fashion_mnist" else
            f"python -m lejepa_jax.data.prepare folder --name={name} --source=<image folder> "
            f"--out={out}")
    raise DataError(
        f"Cannot open dataset {name!r} split {split!r} in data_dir={data_dir!r} ({error}). "
        f"Prepare it first, e.g. `{hint}`, or set data.name / data.split / data.data_dir.") from error


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise DataError(f"data.global_batch_size={global_batch_size} must be divisible by the "
                    f"{process_count} processes.")
  return global_batch_size // process_count


class _HostBlocks(grain.MapDataset):
  """Host `index` of `count`: the `index`-th contiguous block of every run of `global_batch` elements.

  Element k of this host is element (k // b) * global_batch + index * b + k % b of the parent, with
  b = global_batch / count. Concatenating the hosts' k-th batches in process order gives the parent's
  k-th run of `global_batch` elements, which is what `jax.make_array_from_process_local_data` builds
  when process i's devices hold the i-th block of the batch axis (meshes laid out in process order;
  other layouts permute the rows of a batch, which the loss does not see). A strided slice
  `[index::count]` puts the same examples in each global batch, but in an order that depends on the
  host count: each device would hold other examples, and sums would round differently.
  """

  def __init__(self, parent: grain.MapDataset, global_batch: int, index: int, count: int):
    super().__init__(parent)
    self._global_batch, self._index = global_batch, index
    self._block = local_batch_size(global_batch, count)
    self._length = len(parent) // global_batch * self._block

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, k):
    if isinstance(k, slice):
      return self.slice(k)
    run, offset = divmod(k, self._block)
    return self._parent[run * self._global_batch + self._index * self._block + offset]

  def __str__(self) -> str:
    return f"_HostBlocks(global_batch={self._global_batch}, index={self._index})"


def train_dataset(source, multicrop: augment.MultiCrop, *, global_batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1, num_epochs: int | None = None,
                  num_workers: int = 0, start_batch: int = 0) -> grain.IterDataset:
  """Batches {"global": [n, Vg, H, W, C] uint8, "local": [n, Vl, h, w, C] uint8, "label": [n]}.

  n = global_batch_size / process_count; hosts read disjoint blocks of each global batch.
  `start_batch` skips that many global batches (a resume whose iterator state cannot be used).
  """
  batch = local_batch_size(global_batch_size, process_count)
  # Crops are drawn before the per-host selection, so each example's rng follows its position in the
  # global stream, not in a host's share: the same global batch for any process count.
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(num_epochs).random_map(multicrop)
  ds = _HostBlocks(ds, global_batch_size, process_index, process_count)[start_batch * batch:]
  it = ds.to_iter_dataset().filter(lambda x: x is not None).batch(batch, drop_remainder=True)
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return it


class _PaddedSlice(grain.transforms.Map):
  """Index k of this host's slice -> the k-th example, or a flagged copy of example 0 past the end."""

  def __init__(self, source, crop: augment.CenterCrop, process_index: int, process_count: int):
    self.source, self.crop = source, crop
    self.process_index, self.process_count = process_index, process_count

  def map(self, k: int) -> dict:
    index = int(k) * self.process_count + self.process_index
    element = self.crop.map(self.source[min(index, len(self.source) - 1)])
    element["valid"] = np.bool_(element["valid"] and index < len(self.source))
    return element


def eval_dataset(source, crop: augment.CenterCrop, *, global_batch_size: int,
                 process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """Every example exactly once, in order: {"image": [n, S, S, C], "label": [n], "valid": [n]}.

  The last batch is padded (valid = False) so every host yields the same number of full batches.
  """
  batch = local_batch_size(global_batch_size, process_count)
  per_host = math.ceil(len(source) / process_count)
  per_host = math.ceil(per_host / batch) * batch
  ds = grain.MapDataset.range(per_host).map(_PaddedSlice(source, crop, process_index, process_count))
  return ds.batch(batch, drop_remainder=True)


def to_global_batch(local: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """This host's numpy batch -> global jax.Arrays sharded over the mesh's batch axes (dim 0)."""
  out = {}
  for name, value in local.items():
    sharding = NamedSharding(mesh, sharding_lib.batch_spec(mesh, np.ndim(value)))
    out[name] = jax.make_array_from_process_local_data(sharding, np.asarray(value))
  return out
