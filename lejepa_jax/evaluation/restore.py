"""The encoder of a training checkpoint: reading a run's checkpoints for evaluation and export.

`restore_encoder` rebuilds the encoder saved at a step of a training run (the latest intact one by
default) from its checkpoint's config, reading the model's arrays only (no optimizer state) onto any
device count; `random_init_encoder` is the same encoder as training initialises it. Failures name
what to do: FileNotFoundError (no checkpoint; StepNotFoundError: not at that step), CheckpointError
(damaged or unreadable files), ModelMismatchError (the files hold another model than this code
builds). The evaluation job (`lejepa_jax.evaluate`) and the export (`lejepa_jax.export`) both read
checkpoints through this module; nothing under `checkpoints/` is ever changed.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from lejepa_jax.scale import program_cache, sharding
from lejepa_jax.training import checkpointing, train_state

log = logging.getLogger("lejepa_jax")
# How damaged or missing checkpoint files surface (orbax, tensorstore and json raise these);
# anything else (MemoryError, TypeError, ...) is not about the files and propagates unchanged.
_READ_ERRORS = (OSError, ValueError)


class CheckpointError(RuntimeError):
  """A checkpoint step that exists but whose files cannot be read (damaged or unreadable)."""


class StepNotFoundError(FileNotFoundError):
  """The run has no checkpoint at the step asked for (never written, or removed by rotation)."""


class ModelMismatchError(ValueError):
  """A checkpoint holds another model than its config builds with this code."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.abspath(os.path.join(workdir, "checkpoints"))


def _open_manager(workdir: str):
  """The run's checkpoint manager; checks first, as opening one creates a missing directory."""
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    raise FileNotFoundError(
      f"No checkpoints: {directory} does not exist. Is --workdir={workdir} the training run's workdir?"
    )
  return checkpointing.training_manager(directory, create=False)


def _pick_step(manager, step: int | None, workdir: str) -> int:
  """`step`, or the latest when None; an error naming the steps there are when it does not exist."""
  existing = sorted(manager.all_steps())
  if not existing:
    raise FileNotFoundError(
      f"No finished checkpoint in {checkpoint_dir(workdir)} yet: train "
      "first, or pass --follow to wait for one."
    )
  if step is None:
    return existing[-1]
  if step not in existing:
    raise StepNotFoundError(
      f"{checkpoint_dir(workdir)} has no checkpoint step {step}; it has steps "
      f"{_listing(existing)}. Pass one of them to --step (or none: the latest)."
    )
  return step


def _verify(manager, step: int) -> None:
  """CheckpointError when `step`'s files differ from what was written (`checkpointing.verify_step`)."""
  try:
    if not checkpointing.verify_step(manager.directory, step):
      log.warning(
        "checkpoint step %d has no digest (written before checkpoints had one): reading it unverified",
        step,
      )
  except checkpointing.DamagedCheckpointError as e:
    raise CheckpointError(
      f"Checkpoint step {step} in {manager.directory} is damaged: {e.path}: {e.reason}. Evaluate "
      f"another step with --step (the run has {_listing(manager.all_steps())}), or restore the "
      "files from a copy."
    ) from e


def _newest_intact(manager, workdir: str) -> int:
  """The newest step that passes `checkpointing.verify_step` (one warning per damaged newer step);
  the newest step when none does (reading it then raises CheckpointError)."""
  existing = sorted(manager.all_steps())
  _pick_step(manager, None, workdir)  # the error when there is none
  for step in reversed(existing):
    try:
      checkpointing.verify_step(manager.directory, step)
      return step
    except checkpointing.DamagedCheckpointError as e:
      log.warning("%s; taking the step before", e)
  return existing[-1]


def _listing(steps_: list[int]) -> str:
  return ", ".join(map(str, sorted(steps_)))


@contextlib.contextmanager
def _reading(manager, step: int):
  """Turns a failure to read `step`'s files into CheckpointError, or StepNotFoundError when the step
  has gone meanwhile (training keeps only its newest checkpoints)."""
  try:
    yield
  except _READ_ERRORS as e:
    manager.reload()  # the steps now on disk, not those cached when the manager was opened
    directory, existing = str(manager.directory), _listing(manager.all_steps())
    if not (manager.directory / str(step)).exists():
      raise StepNotFoundError(
        f"Checkpoint step {step} in {directory} was removed while being read (the run keeps only "
        f"its newest checkpoints); it has steps {existing}."
      ) from e
    raise CheckpointError(
      f"Checkpoint step {step} in {directory} could not be read ({type(e).__name__}: "
      f"{str(e)[:300]}): its files are damaged or unreadable. Evaluate another step with --step "
      f"(the run has {existing}), or check the run's storage and training log."
    ) from e


def restore_encoder(workdir: str, step: int | None = None, mesh: jax.sharding.Mesh | None = None):
  """(encoder in eval mode, its training config, the step) from a training run's checkpoint.

  Reads the model's arrays only, straight onto `mesh` (all devices by default). Raises
  FileNotFoundError when the run has no checkpoint (StepNotFoundError: not at `step`),
  CheckpointError when the step's files cannot be read, ModelMismatchError when they hold another
  model than this code builds from the checkpoint's config.
  """
  manager = _open_manager(workdir)
  try:
    step = _pick_step(manager, step, workdir) if step is not None else _newest_intact(manager, workdir)
    _verify(manager, step)
    with _reading(manager, step):
      config = ml_collections.ConfigDict(checkpointing.restore_config(manager, step))
    graphdef, state = _restore_model(manager, step, config, mesh or sharding.make_mesh({"data": -1}))
  finally:
    manager.close()
  encoder = nnx.merge(graphdef, state)
  encoder.eval()
  return encoder, config, step


def _restore_model(manager, step: int, config, mesh: jax.sharding.Mesh):
  """(graphdef, state) of the model saved at `step`; its optimizer moments are not read."""
  # Abstract: nothing is allocated (nor initialised) before the saved arrays are read.
  model = lambda: train_state.build_train_objects(config).model
  graphdef, state = sharding.abstract_state(model, mesh)
  like = nnx.to_pure_dict(state)
  target = _savable_abstract(like)
  with _reading(manager, step):
    saved_metadata = checkpointing.state_subtree_metadata(manager, step, train_state.saved_key("model"))
  _check_same_model(saved_metadata, target, step)
  with _reading(manager, step):
    saved = checkpointing.restore_state_subtree(manager, step, train_state.saved_key("model"), target)
  nnx.replace_by_pure_dict(state, train_state.from_savable(saved, like))
  return graphdef, state


def _savable_abstract(like):
  """train_state.to_savable of abstract arrays (typed PRNG keys -> their uint32 data), shardings kept."""

  def leaf(x):
    if not jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      return x
    raw = jax.eval_shape(jax.random.key_data, x)
    return jax.ShapeDtypeStruct(raw.shape, raw.dtype, sharding=x.sharding)

  return jax.tree.map(leaf, like)


def _check_same_model(saved_metadata: dict, target: Any, step: int) -> None:
  """ModelMismatchError listing differences between the saved model and the one this code builds
  (a partial restore would otherwise leave missing arrays unread)."""
  saved, wanted = _shapes(saved_metadata), _shapes(target)
  differences = [f"{k}: missing from the checkpoint" for k in sorted(set(wanted) - set(saved))]
  differences += [f"{k}: not in this code's model" for k in sorted(set(saved) - set(wanted))]
  differences += [
    f"{k}: saved {saved[k]}, built {wanted[k]}"
    for k in sorted(set(saved) & set(wanted))
    if saved[k] != wanted[k]
  ]
  if differences:
    raise ModelMismatchError(
      f"Checkpoint step {step} holds another model than this code builds from its config "
      f"({len(differences)} differences: {'; '.join(differences[:5])}). Evaluate it with the "
      "version of lejepa_jax that trained it."
    )


def _shapes(tree) -> dict[str, tuple]:
  """{'a/b/c': (shape, dtype name)} of a nested dict of arrays or array metadata."""
  return {
    k: (tuple(x.shape), np.dtype(x.dtype).name)
    for k, x in checkpointing.flat_arrays(tree, separator="/").items()
  }


def random_init_encoder(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None):
  """The encoder of `config` as training initialises it (step 0), in eval mode: a baseline."""
  mesh = mesh or sharding.make_mesh({"data": -1})
  # Only the model leaves the jit: the optimizer state built alongside it is never materialised.
  snapshot = copy.deepcopy(config)  # a kept initialiser must not see later changes to `config`
  model = lambda: train_state.build_train_objects(snapshot).model
  key = program_cache.program_key(config, "random_init_encoder")
  encoder = sharding.create_sharded(model, mesh, cache_key=key)
  encoder.eval()
  return encoder


def latest_config(workdir: str) -> ml_collections.ConfigDict:
  """The training config of the run's latest checkpoint (the baselines' data and model)."""
  manager = _open_manager(workdir)
  try:
    step = _pick_step(manager, None, workdir)
    with _reading(manager, step):
      return ml_collections.ConfigDict(checkpointing.restore_config(manager, step))
  finally:
    manager.close()


def checkpoint_steps(workdir: str) -> list[int]:
  """Finalised checkpoint steps of a run (orbax ignores the temporary directories of unfinished
  saves, so a half-written checkpoint is not listed until it is complete)."""
  if not os.path.isdir(checkpoint_dir(workdir)):
    return []
  manager = _open_manager(workdir)
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def require_checkpoints(workdir: str, step: int | None = None) -> None:
  """FileNotFoundError naming the directory when the run has no finished checkpoint (at `step`)."""
  manager = _open_manager(workdir)
  try:
    _pick_step(manager, step, workdir)
  finally:
    manager.close()
