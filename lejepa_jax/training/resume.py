"""Resuming a run: the newest intact checkpoint restored into the state, the data iterator
continued, damaged steps set aside, and the config compared with the checkpoint's."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
from flax import nnx

from lejepa_jax import data
from lejepa_jax.training import checkpointing, train_state

log = logging.getLogger("lejepa_jax")


def train_iterator(config, source, start_batch: int = 0):
  """This process's iterator of training batches over `source`, from global batch `start_batch`."""
  return iter(
    data.train_dataset(
      source,
      data.multicrop_from_config(config.data.to_dict()),
      global_batch_size=config.data.global_batch_size,
      seed=config.seed,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      num_workers=config.data.num_workers,
      start_batch=start_batch,
    )
  )


def restore_into(manager, start, state, iterator, config, source):
  """Restores the train state of step `start` in place; returns the data iterator to continue with.

  The saved iterator state is per process; a run resumed with another process count (e.g. a pod
  checkpoint continued on one host) restarts the data at global batch `start` instead, which is
  the batch the original run would have read next unless it skipped undecodable records.
  """
  abstract = train_state.abstract_tree(train_state.to_savable(nnx.to_pure_dict(state)))
  if checkpointing.has_data_state(manager, start):
    saved = checkpointing.restore_training(manager, start, abstract, iterator)
  else:
    log.info(
      "the data iterator of step %d was saved by another process count: the data continue "
      "at global batch %d",
      start,
      start,
    )
    saved = checkpointing.restore_state_only(manager, start, abstract)
    iterator = train_iterator(config, source, start_batch=start)
  nnx.replace_by_pure_dict(state, train_state.from_savable(saved, nnx.to_pure_dict(state)))
  return iterator


def resume(
  manager, state, iterator, config, source, check: Callable[[int], None] | None = None
) -> tuple[int, Any]:
  """Restores the newest readable checkpoint of `manager` into `state`; returns (its step, the data
  iterator to continue with), or (0, `iterator`) when there is no checkpoint.

  Each step is checked against its digest (`checkpointing.verify_step`) before `check(step)` (the
  config comparison) and the restore; a damaged or unreadable step gets one warning and the step
  before is tried. Once one restores, the damaged newer steps are moved aside unchanged
  (`checkpointing.set_aside`) so that they can be trained and saved again. When none restores,
  UnreadableCheckpointsError lists every step with its reason and nothing is moved.
  """
  damaged: list[checkpointing.DamagedCheckpointError] = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      if not checkpointing.verify_step(manager.directory, step):
        log.warning(
          "checkpoint step %d has no digest (written before checkpoints had one): "
          "restoring it unverified",
          step,
        )
      if check is not None:
        check(step)
      iterator = _restore_or_raise(manager, step, state, iterator, config, source)
    except checkpointing.DamagedCheckpointError as e:
      log.warning("%s; trying the step before", e)
      damaged.append(e)
      continue
    _set_aside(manager, damaged)
    return step, iterator
  if damaged:
    raise UnreadableCheckpointsError(
      f"No checkpoint in {manager.directory} can be restored:\n"
      + "\n".join(f"  step {e.step}: {e.path}: {e.reason}" for e in damaged)
      + "\nNothing was changed. Restore the files from a copy, or move the checkpoints directory "
      "aside to train from the start."
    )
  return 0, iterator


class UnreadableCheckpointsError(RuntimeError):
  """Every checkpoint step of a run is damaged or unreadable."""


def _restore_or_raise(manager, step, state, iterator, config, source):
  """`restore_into`, with orbax's and grain's read failures turned into DamagedCheckpointError."""
  try:
    return restore_into(manager, step, state, iterator, config, source)
  except Exception as e:  # whatever the readers raise on bad bytes
    raise checkpointing.DamagedCheckpointError(
      step,
      str(manager.directory / str(step)),
      f"it could not be restored ({type(e).__name__}: {str(e)[:300]})",
      "unreadable",
    ) from e


def _set_aside(manager, damaged: list) -> None:
  """Moves the damaged steps aside (the primary process; the others wait) and refreshes the
  manager's list of steps."""
  if not damaged:
    return
  if jax.process_index() == 0:
    for e in damaged:
      target = checkpointing.set_aside(manager.directory, e.step, e.kind)
      log.warning("moved damaged checkpoint step %d to %s (unchanged)", e.step, target)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("lejepa_jax: damaged checkpoints set aside")
  manager.reload()


# Keys a resumed run may change: where and how it runs, not what it trains. (Not
# data.num_workers: the saved data-iterator state is laid out per worker.)
RESUMABLE_CHANGES = (
  "log_every",
  "checkpoint_every",
  "keep_checkpoints",
  "data.data_dir",
  "data.eval_crop_fraction",
  "mesh.",
  "model.remat",
  "compiler_options",
  "member_convolutions",
  "data.skip_bad_records",
)


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
  return flat


def config_changes(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
  """'key: saved -> now' for each key that differs from the checkpoint's config and would change
  what is trained (RESUMABLE_CHANGES are allowed to differ). A key the checkpoint lacks (written
  before the key joined the config tree) counts as its default then.
  """
  before, now = _flat(saved), _flat(json.loads(config.to_json()))
  defaults = _defaults(now.get("model.name"))
  changes = []
  for key in sorted(now):
    old = before.get(key, defaults.get(key, now[key]))
    if old != now[key] and not key.startswith(RESUMABLE_CHANGES):
      changes.append(f"{key}: {old!r} -> {now[key]!r}")
  return changes


def _defaults(model_name: str | None) -> dict[str, Any]:
  """Flat defaults of the config tree, with the model options of `model_name`'s family."""
  from lejepa_jax import config_lib

  flat = _flat(json.loads(config_lib.base_config().to_json()))
  for option, value in config_lib.MODEL_OPTIONS.get(model_name, {}).items():
    flat[f"model.{option}"] = value
  return flat


def check_same_experiment(manager, start: int, config, workdir: str, allow_change: bool) -> None:
  """Resuming with another config would silently continue the old run, or mix two experiments in
  one workdir: stop, unless the change is asked for."""
  changes = config_changes(checkpointing.restore_config(manager, start), config)
  if not changes:
    return
  listing = "; ".join(changes)
  if not allow_change:
    raise ValueError(
      f"{workdir} holds a run whose config differs from this one ({listing}). Use another "
      f"--workdir for a new experiment, or pass --allow_config_change to continue this run from "
      f"step {start} with the new values. Nothing was changed in {workdir}."
    )
  log.warning("continuing the run from step %d with a changed config: %s", start, listing)
