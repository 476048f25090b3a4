"""grain pipelines over TFDS ArrayRecord sources: multi-crop training batches, exact evaluation passes.

Training: seeded global shuffle (a new order every epoch) -> repeat -> multi-crop `random_map`
(deterministic per (seed, position in the global stream)) -> this host's block of every global batch
-> batch of global_batch / process_count -> optional multiprocess prefetch. The global batches are
the same examples with the same crops whatever the process count.
The iterator's state (`get_state` / `set_state`) goes into the training checkpoint, so a resumed run
continues with exactly the batches the uninterrupted run would have produced.

Bad records: each record is read and its image decoded where its index is known
(`_CheckedRecords`). One that cannot be read, parsed or decoded raises BadRecordError naming the
split's file, the record's index in it and what to do, before any batch holding it is returned (from
a grain worker too: grain re-raises a worker's exception in the main process). With the transform's
`skip_bad_records` (config `data.skip_bad_records`) it is logged, counted in the transform's `skipped`
list and left out instead: training goes on with the next records, evaluation gets a flagged
(valid = False) row.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding

from lejepa_jax.data import augment
from lejepa_jax.scale import sharding as sharding_lib

log = logging.getLogger("lejepa_jax")


class DataError(ValueError):
  """A dataset that cannot be opened; the message says what to run."""


class BadRecordError(DataError):
  """A record that cannot be read or decoded; the message names its file and index, and what to do.

  Only a message argument, so that it pickles: grain sends a worker's exception to the main process.
  """


def prepare_command(name: str, out: str) -> str:
  """The command that writes dataset `name` into TFDS data_dir `out`."""
  if name == "fashion_mnist":
    return f"python -m lejepa_jax.prepare fashion_mnist --out={out}"
  return f"python -m lejepa_jax.prepare folder --name={name} --source=<image folder> --out={out}"


class FirstRecords:
  """The first `n` records of a random-access source, read like the source (a probe or a
  fine-tuning run on a subset of a large split)."""

  def __init__(self, source, n: int):
    self.source, self.n = source, min(n, len(source))

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, index):
    return self.source[index]

  def __getitems__(self, indices):
    return self.source.__getitems__(indices)


class ChosenRecords:
  """The records of a random-access source at `indices`, in that order: record i here is record
  `indices[i]` there (a fine-tuning run on k examples per class)."""

  def __init__(self, records, indices):
    self.records, self.indices = records, np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index):
    return self.records[int(self.indices[index])]

  def __getitems__(self, indices):
    return self.records.__getitems__([int(self.indices[i]) for i in indices])


def record_labels(source, chunk: int = 1024) -> np.ndarray:
  """The "label" of every record of `source`, [len(source)] int64, read `chunk` records at a time
  (the images stay encoded)."""
  labels = np.empty(len(source), np.int64)
  for start in range(0, len(source), chunk):
    stop = min(start + chunk, len(source))
    labels[start:stop] = [int(r["label"]) for r in source.__getitems__(range(start, stop))]
  return labels


def open_source(name: str, split: str, data_dir: str | None):
  """A TFDS ArrayRecord data source whose images stay encoded (decoded by the pipeline's workers)."""
  import tensorflow_datasets as tfds

  try:
    return tfds.data_source(
      name,
      split=split,
      data_dir=data_dir,
      builder_kwargs={"file_format": "array_record"},
      decoders={"image": tfds.decode.SkipDecoding()},
      download=False,
    )
  except Exception as error:  # TFDS raises several types (not found, bad split, missing files)
    # Without a data_dir TFDS reads its default directory: prepare into that one.
    out = data_dir or os.path.expanduser(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))
    raise DataError(
      f"Cannot open dataset {name!r} split {split!r} in data_dir={data_dir!r} ({error}). "
      f"Prepare it first, e.g. `{prepare_command(name, out)}`, or set data.name / data.split / "
      "data.data_dir."
    ) from error


def _tfds_source(source):
  """The TFDS data source under wrappers that keep its indices (evaluation's prefix), or None."""
  for _ in range(8):
    if hasattr(source, "dataset_info"):
      return source
    source = getattr(source, "source", None)
  return None


def _record_file(tfds_source, index: int) -> tuple[str, int] | None:
  """(file, index in that file) of record `index` of the split, from TFDS's file instructions."""
  try:
    instructions = tfds_source.dataset_info.splits[tfds_source.split].file_instructions
  except Exception:  # a split spec TFDS cannot resolve: no file
    return None
  for instruction in instructions:
    take = instruction.take
    if take < 0:  # to the end of the shard
      take = instruction.examples_in_shard - instruction.skip
    if index < take:
      return os.fspath(instruction.filename), instruction.skip + index
    index -= take
  return None


# Features that name an example in TFDS datasets (imagenet2012: file_name; tfds ImageFolder:
# image/filename), quoted in the error so the bad image can be found at its origin.
KEY_FEATURES = ("file_name", "filename", "image/filename", "id", "key")


def _example_key(element: Any) -> str | None:
  for name in KEY_FEATURES if isinstance(element, Mapping) else ():
    value = element.get(name)
    if value is not None:
      value = value.item() if isinstance(value, np.ndarray) and value.size == 1 else value
      return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
  return None


def describe_record(source, index: int, element: Any = None) -> str:
  """Where a bad record is: "record 5 of dataset 'x' split 'train' (file
  .../x-train.array_record-00000-of-00001, index 5 in that file), key 'a/5.png'" (the key if the
  example has one)."""
  tfds_source = _tfds_source(source)
  if tfds_source is None:
    where = f"record {index} of {source!r}"
  else:
    where = (
      f"record {index} of dataset {tfds_source.dataset_info.name!r} split {str(tfds_source.split)!r}"
    )
    located = _record_file(tfds_source, index)
    if located:
      where += f" (file {located[0]}, index {located[1]} in that file)"
  key = _example_key(element)
  return where + (f", key {key!r}" if key else "")


def _advice(source) -> str:
  tfds_source = _tfds_source(source)
  if tfds_source is None:
    redo = "Fix or re-create the data"
  else:
    info = tfds_source.dataset_info
    version_dir = os.fspath(info.data_dir)
    data_dir = os.path.dirname(os.path.dirname(version_dir))
    redo = (
      f"Re-create the dataset: delete {version_dir} and run "
      f"`{prepare_command(info.name, data_dir)}` (it stops at an image it cannot decode and "
      "names it)"
    )
  return (
    f"{redo}; or set data.skip_bad_records=True to leave out bad records (each is logged "
    "with its file and index, and counted)."
  )


# Skipping stops being an option when most records are bad: the data, not a few records, is broken
# (and a pipeline that repeats forever would skip forever).
MIN_BAD_TO_JUDGE = 10
MAX_BAD_SHARE = 0.5


class _CheckedRecords:
  """`source` whose records are read and their images decoded here, where the record index is known.

  A record that cannot be read (a corrupted ArrayRecord chunk), parsed (not a TF example) or decoded
  raises BadRecordError naming it; with `transform.skip_bad_records` it is logged, appended to
  `transform.skipped` and returned as None (grain leaves Nones out of the batches).
  """

  def __init__(self, source, transform):
    self.source, self.transform = source, transform
    self.reads = self.bad = 0  # this process's, for the guard against skipping everything

  def __len__(self) -> int:
    return len(self.source)

  def __repr__(self) -> str:
    return f"_CheckedRecords({self.source!r})"

  def __getitem__(self, index) -> dict | None:
    index = int(index)
    self.reads += 1
    try:
      element = dict(self.source[index])
    except Exception as error:  # array_record, protobuf, TFDS
      return self._bad(index, None, f"it cannot be read ({type(error).__name__}: {error})", error)
    return self._decoded(index, element)

  def read_many(self, indices: list[int]) -> list[dict | None]:
    """Records `indices`, read in one call where the source can (a TFDS source reads a batch of
    records about 6x faster than one by one); a batch that fails is read again record by record,
    so the error names the bad one."""
    read_batch = getattr(self.source, "__getitems__", None)
    if read_batch is None:
      return [self[index] for index in indices]
    try:
      elements = [dict(element) for element in read_batch(indices)]
    except Exception:  # array_record, protobuf, TFDS
      return [self[index] for index in indices]
    self.reads += len(indices)
    return [self._decoded(index, element) for index, element in zip(indices, elements)]

  def _decoded(self, index: int, element: dict) -> dict | None:
    """The element with its image decoded, or `_bad` for one without a decodable image."""
    data = element.get(self.transform.image_key)
    if data is None:
      return self._bad(
        index, element, f"it has no {self.transform.image_key!r} feature (it has {sorted(element)})"
      )
    try:
      image = augment.decode(data, self.transform.channels)
    except Exception as error:  # bytes of the wrong type, OpenCV
      return self._bad(index, element, f"the image cannot be decoded ({error})", error)
    if image is None:
      return self._bad(index, element, augment.undecodable_reason(data))
    element[self.transform.image_key] = image  # decoded once: the transform passes arrays through
    return element

  def _bad(self, index: int, element, problem: str, error: Exception | None = None) -> None:
    where = describe_record(self.source, index, element)
    if not self.transform.skip_bad_records:
      raise BadRecordError(f"Bad {where}: {problem}. {_advice(self.source)}") from error
    self.bad += 1
    if self.bad >= MIN_BAD_TO_JUDGE and self.bad > MAX_BAD_SHARE * self.reads:
      # No log line: grain's read-ahead threads may still bring many more of them.
      raise BadRecordError(
        f"{self.bad} of the {self.reads} records read were bad (the last: {where}: {problem}): "
        f"the dataset itself is broken, skipping cannot help. {_advice(self.source)}"
      )
    self.transform.skipped.append(f"{where}: {problem}")
    log.warning(
      "skipped bad %s: %s (%d skipped in this process; data.skip_bad_records is on)",
      where,
      problem,
      len(self.transform.skipped),
    )
    return None


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise DataError(
      f"data.global_batch_size={global_batch_size} must be divisible by the {process_count} processes."
    )
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


def train_dataset(
  source,
  multicrop: augment.MultiCrop,
  *,
  global_batch_size: int,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
  num_epochs: int | None = None,
  num_workers: int = 0,
  start_batch: int = 0,
) -> grain.IterDataset:
  """Batches {"global": [n, Vg, H, W, C] uint8, "local": [n, Vl, h, w, C] uint8, "label": [n]}.

  n = global_batch_size / process_count; hosts read disjoint blocks of each global batch.
  `start_batch` skips that many global batches (a resume whose iterator state cannot be used).
  A bad record raises BadRecordError, or is left out with `multicrop.skip_bad_records` (module doc).
  """
  batch = local_batch_size(global_batch_size, process_count)
  # Crops are drawn before the per-host selection, so each example's rng follows its position in the
  # global stream, not in a host's share: the same global batch for any process count.
  ds = grain.MapDataset.source(_CheckedRecords(source, multicrop)).seed(seed).shuffle()
  ds = ds.repeat(num_epochs).random_map(multicrop)
  ds = _HostBlocks(ds, global_batch_size, process_index, process_count)[start_batch * batch :]
  it = ds.to_iter_dataset().filter(lambda x: x is not None).batch(batch, drop_remainder=True)
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return it


class _PaddedBatch(grain.transforms.Map):
  """Batch b of this host's slice: examples b * size ... (b + 1) * size - 1 of the slice, read
  together and stacked; past the end, flagged copies of the last example (a flagged blank for a bad
  record skipped with `crop.skip_bad_records`)."""

  def __init__(
    self, source, crop: augment.CenterCrop, size: int, process_index: int, process_count: int
  ):
    self.source, self.crop, self.size = _CheckedRecords(source, crop), crop, size
    self.process_index, self.process_count = process_index, process_count

  def map(self, b: int) -> dict:
    n = len(self.source)
    indices = [
      k * self.process_count + self.process_index
      for k in range(int(b) * self.size, (int(b) + 1) * self.size)
    ]
    records = self.source.read_many([min(index, n - 1) for index in indices])
    elements = []
    for index, record in zip(indices, records):
      element = self.crop.map(record) if record is not None else self.crop.invalid()
      element["valid"] = np.bool_(element["valid"] and index < n)
      elements.append(element)
    return {key: np.stack([e[key] for e in elements]) for key in elements[0]}


def eval_dataset(
  source,
  crop: augment.CenterCrop,
  *,
  global_batch_size: int,
  process_index: int = 0,
  process_count: int = 1,
) -> grain.MapDataset:
  """Every example exactly once, in order: {"image": [n, S, S, C], "label": [n], "valid": [n]}.

  The last batch is padded (valid = False) so every host yields the same number of full batches.
  A bad record raises BadRecordError, or becomes a valid = False row with `crop.skip_bad_records`.
  """
  batch = local_batch_size(global_batch_size, process_count)
  per_host = math.ceil(len(source) / process_count)
  batches = math.ceil(per_host / batch)
  return grain.MapDataset.range(batches).map(
    _PaddedBatch(source, crop, batch, process_index, process_count)
  )


def to_global_batch(local: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """This host's numpy batch -> global jax.Arrays sharded over the mesh's batch axes (dim 0)."""
  out = {}
  for name, value in local.items():
    sharding = NamedSharding(mesh, sharding_lib.batch_spec(mesh, np.ndim(value)))
    out[name] = jax.make_array_from_process_local_data(sharding, np.asarray(value))
  return out
