"""Frozen features of an encoder (or of the pixels) on a dataset split, for the evaluators."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from lejepa_jax import data
from lejepa_jax.evaluation import evaluators, progress
from lejepa_jax.scale import compiler

FEATURE_KINDS = ("embed", "feature_map")
# Decoded evaluation splits up to this size stay in memory for the job: every encoder it evaluates
# (baselines, each checkpoint) reads the same crops, and decoding them took about 40% of an
# encoder's evaluation on the Fashion-MNIST default (18 of 50 s); larger splits are read each time.
EVAL_CACHE_BYTES = 2**30


def eval_batches(
  config, split: str, limit: int | None = None, batch_size: int = 256
) -> Iterator[dict[str, np.ndarray]]:
  """Centre crops of every example of a split once: {"image": [n, S, S, C] uint8, "label", "valid"}."""
  # Checkpoints written before the key existed were evaluated on whole images.
  key = (
    config.data.name,
    split,
    config.data.data_dir,
    int(config.data.global_views["size"]),
    int(config.data.channels),
    float(config.data.get("eval_crop_fraction", 1.0)),
    limit,
    batch_size,
    bool(config.data.get("skip_bad_records", False)),
  )
  size = split_size(config, split, limit)
  if size * key[3] ** 2 * key[4] <= EVAL_CACHE_BYTES:
    return iter(_cached_batches(*key))
  return _read_batches(*key)


def _read_batches(
  name, split, data_dir, size, channels, crop_fraction, limit, batch_size, skip_bad_records=False
):
  source = data.open_source(name, split, data_dir)
  if limit and limit < len(source):
    source = data.FirstRecords(source, limit)
  crop = data.CenterCrop(size, channels, crop_fraction=crop_fraction, skip_bad_records=skip_bad_records)
  return iter(data.eval_dataset(source, crop, global_batch_size=batch_size))


@functools.lru_cache(maxsize=4)
def _cached_batches(*key) -> tuple[dict[str, np.ndarray], ...]:
  return tuple(_read_batches(*key))


def split_size(config, split: str, limit: int | None = None) -> int:
  """Examples `eval_batches` yields of a split (at most `limit`)."""
  size = len(data.open_source(config.data.name, split, config.data.data_dir))
  return min(size, limit) if limit else size


def _forward(encoder, images, kind: str, stages: int):
  """(probe features [n, F], projections [n, K] or None) of normalised images."""
  if kind == "embed":
    return encoder(images)
  backbone = encoder.backbone
  maps = backbone.stage_maps(images)
  if not 1 <= stages <= len(maps):
    raise ValueError(
      f"probe config `feature_stages` is {stages}, but this encoder has {len(maps)} "
      "stages (blocks for a ViT); use 1 to read only the final map."
    )
  # ConvNets pool the same final map: no second pass for the projections.
  pooled = backbone.pool(maps[-1]) if hasattr(backbone, "pool") else backbone(images)[0]
  projections = None if encoder.projector is None else encoder.projector(pooled)
  features = jnp.concatenate([m.reshape(m.shape[0], -1) for m in maps[-stages:]], axis=-1)
  return features, projections


def feature_function(mean: tuple, std: tuple, kind: str, stages: int):
  """The pure function of feature extraction: `fn(graphdef, state, uint8 images [n, H, W, C])` ->
  (probe features [n, F], projections [n, K] or None), what evaluation compiles (and what
  tests/test_accelerator_lowering.py lowers for GPUs and TPUs)."""
  return lambda graphdef, state, x: _forward(
    nnx.merge(graphdef, state), data.normalize(x, mean, std), kind, stages
  )


@functools.cache
def _compiled_forward(mean: tuple, std: tuple, kind: str, stages: int, compiler_setting: str):
  """`feature_function` jitted with the backend's compiler options; cached so every split and
  checkpoint shares its compile. Call as `forward(encoder, images)`."""
  jitted = jax.jit(
    feature_function(mean, std, kind, stages),
    static_argnums=0,
    compiler_options=compiler.options(compiler_setting),
  )
  return lambda encoder, images: jitted(*nnx.split(encoder), images)


def extract_features(
  encoder,
  config,
  split: str,
  limit: int | None = None,
  batch_size: int = 256,
  kind: str = "embed",
  stages: int = 1,
  label: str = "",
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """Frozen features [n, F], labels [n] and projector outputs [n, K] (or None) of a split.

  kind: "embed" (the encoder's probe features) or "feature_map" (unpooled maps, flattened: the
  last `stages` stage outputs of a ConvNet or blocks of a ViT, concatenated).
  """
  if kind not in FEATURE_KINDS:
    raise ValueError(f"probe config `features` must be one of {FEATURE_KINDS}, got {kind!r}.")
  if kind == "embed" and stages != 1:
    raise ValueError(
      f"probe config `feature_stages` is {stages}, but it applies to "
      "features='feature_map' only; set features=feature_map or feature_stages=1."
    )
  forward = _compiled_forward(
    tuple(config.data.mean),
    tuple(config.data.std),
    kind,
    stages,
    str(config.get("compiler_options", "auto")),
  )
  features, projections, labels = [], [], []
  batches = eval_batches(config, split, limit, batch_size)
  meter = progress.Progress(
    f"{label or 'encoder'}: {split} features", split_size(config, split, limit), "images"
  )
  for batch in batches:
    valid = batch["valid"]
    meter.update(int(valid.sum()))
    f, z = forward(encoder, batch["image"])
    features.append(np.asarray(f, np.float32)[valid])
    if z is not None:
      projections.append(np.asarray(z, np.float32)[valid])
    labels.append(batch["label"][valid])
  z = _stack_and_free(projections) if projections else None
  return _stack_and_free(features), np.concatenate(labels), z


def _stack_and_free(chunks: list[np.ndarray]) -> np.ndarray:
  """np.concatenate(chunks) that releases each chunk once copied: the peak is one array plus one
  chunk, not two arrays (2.5 GB each for the demo's 60k x 10368 feature maps)."""
  out = np.empty((sum(len(c) for c in chunks),) + chunks[0].shape[1:], chunks[0].dtype)
  start = 0
  chunks.reverse()
  while chunks:
    chunk = chunks.pop()
    out[start : start + len(chunk)] = chunk
    start += len(chunk)
  return out


def pixel_features(config, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Raw-pixel baseline: the same centre crops, standardised and flattened: [n, S*S*C], [n]."""
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  features, labels = [], []
  for batch in eval_batches(config, split, limit):
    valid = batch["valid"]
    pixels = np.asarray(data.normalize(batch["image"][valid], mean, std))
    features.append(pixels.reshape(len(pixels), -1))
    labels.append(batch["label"][valid])
  return np.concatenate(features), np.concatenate(labels)


def example_limit(n: int) -> int | None:
  """A probe config's example count as a limit: 0 (or less) means the whole split (None)."""
  return n if n and n > 0 else None


def feature_set(
  encoder, config, probe: ml_collections.ConfigDict, label: str = ""
) -> evaluators.FeatureSet:
  """Features of the training split (probe fitting) and the evaluation split, extracted once."""
  kind, stages = probe.features, int(probe.feature_stages)
  train_x, train_y, _ = extract_features(
    encoder,
    config,
    config.data.split,
    example_limit(probe.train_examples),
    probe.batch_size,
    kind,
    stages,
    label,
  )
  test_x, test_y, test_z = extract_features(
    encoder,
    config,
    config.data.eval_split,
    example_limit(probe.eval_examples),
    probe.batch_size,
    kind,
    stages,
    label,
  )
  return evaluators.FeatureSet(train_x, train_y, test_x, test_y, int(config.probe.num_classes), test_z)
