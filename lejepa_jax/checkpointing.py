"""Orbax checkpoints: the only module that imports orbax.

Plain-tree save/restore (encoder export) and the training checkpoint manager, whose checkpoints hold
three items: `state` (model, optimizers, RNG and step counters), `data` (the grain iterator) and
`config` (JSON).
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


def save_tree(directory: str | os.PathLike, tree: Any) -> None:
  """Writes a pytree of arrays to `directory` (which must not exist) and waits until it is on disk."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(directory), tree)
  checkpointer.wait_until_finished()
  checkpointer.close()


def restore_tree(directory: str | os.PathLike, target: Any) -> Any:
  """Reads a pytree saved by :func:`save_tree`, laid out as `target` says.

  Args:
    directory: what :func:`save_tree` wrote.
    target: a pytree of `jax.ShapeDtypeStruct` with shardings (or arrays) matching the saved tree;
      each array is read straight into its shards on the devices the sharding names.
  """
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"No checkpoint at {directory}.")
  checkpointer = ocp.StandardCheckpointer()
  try:
    return checkpointer.restore(directory, target)
  finally:
    checkpointer.close()


# Training checkpoints --------------------------------------------------------------------------

STATE, DATA, CONFIG = "state", "data", "config"


def training_manager(directory: str | os.PathLike, max_to_keep: int = 3, *, create: bool = True
                     ) -> ocp.CheckpointManager:
  """Manager of the training run's checkpoints: the train state, the data iterator, the config.

  `create=False` opens an existing directory for reading (evaluation): orbax then neither creates
  it nor holds every process at a barrier, so processes may open it any number of times.
  """
  import grain  # pylint: disable=import-outside-toplevel
  registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
  registry.add(DATA, grain.checkpoint.CheckpointSave, grain.checkpoint.CheckpointHandler)
  registry.add(DATA, grain.checkpoint.CheckpointRestore, grain.checkpoint.CheckpointHandler)
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               handler_registry=registry)


def save_training(manager: ocp.CheckpointManager, step: int, state: Any, data_iterator,
                  config: dict) -> None:
  """Saves asynchronously; call `manager.wait_until_finished()` before exiting."""
  import grain  # pylint: disable=import-outside-toplevel
  manager.save(step, args=ocp.args.Composite(**{
      STATE: ocp.args.StandardSave(state),
      DATA: grain.checkpoint.CheckpointSave(data_iterator),
      CONFIG: ocp.args.JsonSave(config)}))


def restore_training(manager: ocp.CheckpointManager, step: int, abstract_state: Any,
                     data_iterator) -> Any:
  """Restores the train state (onto `abstract_state`'s shardings) and the iterator in place."""
  import grain  # pylint: disable=import-outside-toplevel
  restored = manager.restore(step, args=ocp.args.Composite(**{
      STATE: ocp.args.StandardRestore(abstract_state),
      DATA: grain.checkpoint.CheckpointRestore(data_iterator)}))
  return restored[STATE]


def has_data_state(manager: ocp.CheckpointManager, step: int) -> bool:
  """Whether `step` holds a data-iterator state for this process under the current process count.

  grain writes one state file per process, named by process index and count.
  """
  import jax  # pylint: disable=import-outside-toplevel
  name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
  return (manager.directory / str(step) / DATA / name).exists()


def restore_state_only(manager: ocp.CheckpointManager, step: int, abstract_state: Any = None) -> Any:
  """The train state of a step without the data iterator (probe jobs, exports).

  Without `abstract_state` the arrays come back as saved, on the default device.
  """
  restored = manager.restore(step, args=ocp.args.Composite(**{
      STATE: ocp.args.StandardRestore(abstract_state)}))
  return restored[STATE]


def state_subtree_metadata(manager: ocp.CheckpointManager, step: int, key: str | int) -> dict:
  """Shapes and dtypes of the arrays under `key` of `step`'s saved train state (reads metadata only)."""
  handler = ocp.PyTreeCheckpointHandler()
  try:
    tree = handler.metadata(manager.directory / str(step) / STATE).tree
  finally:
    handler.close()
  if str(key) not in tree:
    raise ValueError(f"the saved train state of step {step} has no item {key!r} (it has "
                     f"{sorted(tree)}): it was not written by this trainer")
  return tree[str(key)]


def restore_state_subtree(manager: ocp.CheckpointManager, step: int, key: str | int,
                          target: Any) -> Any:
  """The subtree `key` of `step`'s train state onto `target`'s shapes and shardings (an orbax
  partial restore: the rest of the saved state, e.g. the optimizer's moments, is never read)."""
  tree = {key: target}
  restore_args = ocp.checkpoint_utils.construct_restore_args(tree)
  restore = ocp.args.PyTreeRestore(tree, restore_args=restore_args, partial_restore=True)
  restored = manager.restore(step, args=ocp.args.Composite(**{STATE: restore}))
  return restored[STATE][key]


def restore_config(manager: ocp.CheckpointManager, step: int) -> dict:
  """The config (as a dict) a training checkpoint was written with."""
  restored = manager.restore(step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()}))
  return restored[CONFIG]

