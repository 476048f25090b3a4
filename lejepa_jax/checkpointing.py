"""Orbax checkpoints: the only module that imports orbax.

This version holds the plain-tree save/restore used by encoder export; the training checkpoint manager
joins it with the trainer.
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
