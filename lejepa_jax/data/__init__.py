"""Input pipeline: TFDS ArrayRecord sources, grain multi-crop batches, offline data preparation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lejepa_jax.data.augment import Augment, CenterCrop, MultiCrop, Views
from lejepa_jax.data.normalization import normalize as normalize  # the package API
from lejepa_jax.data.pipeline import (
  BadRecordError,
  ChosenRecords,
  DataError,
  FirstRecords,
  eval_dataset,
  open_source,
  record_labels,
  to_global_batch,
  train_dataset,
)

# The paper's ImageNet views (docs/method.md, Recipes), used where a config gives none.
DEFAULT_GLOBAL_VIEWS = {"count": 2, "size": 224, "scale": (0.3, 1.0)}
DEFAULT_LOCAL_VIEWS = {"count": 6, "size": 96, "scale": (0.05, 0.3)}


def _views(config: Mapping[str, Any]) -> Views:
  return Views(
    count=int(config["count"]),
    size=int(config["size"]),
    scale=tuple(config["scale"]),
    ratio=tuple(config.get("ratio", (3 / 4, 4 / 3))),
  )


def augment_from_config(config: Mapping[str, Any]) -> Augment:
  return Augment(
    **{
      k: tuple(v) if isinstance(v, (list, tuple)) else v
      for k, v in dict(config.get("augment", {})).items()
    }
  )


def multicrop_from_config(config: Mapping[str, Any]) -> MultiCrop:
  """MultiCrop from a data config: {channels, global_views, local_views, augment, augment_on_device,
  skip_bad_records}.

  With `augment_on_device` the host keeps only crops and flips; see `device_augment_from_config`.
  With `skip_bad_records` (default False: a bad record stops training with an error naming it) the
  pipeline logs, counts and leaves out records it cannot read or decode.
  """
  aug = augment_from_config(config)
  if config.get("augment_on_device", False):
    aug = aug.geometric_only()
  return MultiCrop(
    _views(config.get("global_views", DEFAULT_GLOBAL_VIEWS)),
    _views(config.get("local_views", DEFAULT_LOCAL_VIEWS)),
    aug,
    channels=int(config.get("channels", 3)),
    skip_bad_records=bool(config.get("skip_bad_records", False)),
  )


def device_augment_from_config(config: Mapping[str, Any]) -> Augment | None:
  """The photometric ops the train step applies on the device, or None when the host does them."""
  return augment_from_config(config) if config.get("augment_on_device", False) else None


__all__ = [
  "Augment",
  "BadRecordError",
  "CenterCrop",
  "ChosenRecords",
  "DataError",
  "FirstRecords",
  "MultiCrop",
  "Views",
  "device_augment_from_config",
  "eval_dataset",
  "multicrop_from_config",
  "open_source",
  "record_labels",
  "to_global_batch",
  "train_dataset",
]
