"""Input pipeline: TFDS ArrayRecord sources, grain multi-crop batches, offline data preparation."""

from __future__ import annotations

from typing import Any, Mapping

from lejepa_jax.data.augment import Augment, CenterCrop, MultiCrop, Views
from lejepa_jax.data.pipeline import (DataError, eval_dataset, open_source, to_global_batch,
                                      train_dataset)


def _views(config: Mapping[str, Any]) -> Views:
  return Views(count=int(config["count"]), size=int(config["size"]),
               scale=tuple(config["scale"]), ratio=tuple(config.get("ratio", (3 / 4, 4 / 3))))


def multicrop_from_config(config: Mapping[str, Any]) -> MultiCrop:
  """MultiCrop from a data config: {channels, global_views, local_views, augment, augment_on_device}."""
  aug = Augment(**{k: tuple(v) if isinstance(v, (list, tuple)) else v
                   for k, v in dict(config.get("augment", {})).items()})
  if config.get("augment_on_device", False):
    aug = aug.geometric_only()
  return MultiCrop(_views(config["global_views"]), _views(config["local_views"]), aug,
                   channels=int(config["channels"]))


__all__ = ["Augment", "CenterCrop", "DataError", "MultiCrop", "Views", "eval_dataset",
           "multicrop_from_config", "open_source", "to_global_batch", "train_dataset"]
