"""Orbax checkpoints: the only module that imports orbax.

Plain-tree save/restore (encoder export) and the training checkpoint manager, whose checkpoints hold
three items: `state` (model, optimizers, RNG and step counters), `data` (the grain iterator) and
`config` (JSON).

Integrity. Orbax checks neither the array bytes it reads back (OCDBT checksums its index, not the
values) nor the iterator and config JSON, and on a local disk it lists a step whose commit marker is
gone. So every training checkpoint carries a digest, `<step>/lejepa_digest.json`: the size and
SHA-256 of each file, written by the primary process once every process has written its files and
before orbax commits the step (orbax's post-finalization callback), so a committed step always has
its digest. `verify_step` checks a step against it before anything is read; resuming, evaluation and
export use it, and retention (`KeepLatestReadable`) never deletes the newest intact step in favour of
damaged ones. Steps written before digests existed restore unverified, with a warning.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
from collections.abc import Sequence
from typing import Any

import orbax.checkpoint as ocp

log = logging.getLogger("lejepa_jax")


def flat_arrays(tree: Any, separator: str = ".") -> dict[str, Any]:
  """Flattens a nested dict of arrays to {"a.b.c": array}: the keys of saved and exported trees."""
  import jax

  return {
    separator.join(str(getattr(k, "key", k)) for k in path): leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


_backend_choice_made = False


def _choose_array_saving_for_backend() -> None:
  """Orbax's array saving, chosen by backend once per process (before the first save).

  Orbax's default splits each shard among its replicas and has each replica copy its slice to the
  host ("replica-parallel"), which spreads device-to-host copies over accelerators; it already turns
  this off when JAX_PLATFORMS names a GPU. On the CPU the devices share the host's memory, so there
  is nothing to spread, and every slice is a dispatched `jax.lax.slice` compiled per shape and
  device. Measured on the 2-core AMD EPYC, tests/tiny_config.py's 8-device run (data 4 x fsdp 2):
  its two saves compiled 136 slices, 4.4 s of a 25.8 s run; with whole shards saved by one replica
  there are none. The files are the same format; either setting reads the other's.
  """
  global _backend_choice_made
  if _backend_choice_made:
    return
  _backend_choice_made = True
  import jax

  if jax.default_backend() == "cpu":
    # The metadata store orbax's default handler has (it is not exported), so the files stay the same.
    from orbax.checkpoint._src.metadata import array_metadata_store

    handler = ocp.type_handlers.ArrayHandler(
      use_replica_parallel=False, array_metadata_store=array_metadata_store.Store()
    )
    absl = logging.getLogger("absl")  # orbax warns of any override, chosen or not
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
      ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
    finally:
      absl.setLevel(level)


def save_tree(directory: str | os.PathLike, tree: Any) -> None:
  """Writes a pytree of arrays to `directory` (which must not exist) and waits until it is on disk."""
  _choose_array_saving_for_backend()
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


def training_manager(
  directory: str | os.PathLike, max_to_keep: int = 3, *, create: bool = True
) -> ocp.CheckpointManager:
  """Manager of the training run's checkpoints: the train state, the data iterator, the config.

  Every step it saves gets its digest; it keeps the newest `max_to_keep` steps, and more when they
  are damaged (`KeepLatestReadable`). `create=False` opens an existing directory for reading
  (evaluation): orbax then neither creates it nor holds every process at a barrier, so processes may
  open it any number of times.
  """
  import grain

  _choose_array_saving_for_backend()
  directory = os.path.abspath(directory)
  registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
  registry.add(DATA, grain.checkpoint.CheckpointSave, grain.checkpoint.CheckpointHandler)
  registry.add(DATA, grain.checkpoint.CheckpointRestore, grain.checkpoint.CheckpointHandler)
  digests = _DigestWriter(directory)
  options = ocp.CheckpointManagerOptions(
    # The processes meet at barriers named by step; an ablation's group and member managers save the
    # same step at once, so each directory's barriers get their own names (every process passes the
    # same directory).
    multiprocessing_options=ocp.options.MultiprocessingOptions(
      barrier_sync_key_prefix=hashlib.sha256(directory.encode()).hexdigest()[:16]
    ),
    create=create,
    preservation_policy=KeepLatestReadable(directory, max_to_keep),
    async_options=ocp.AsyncOptions(post_finalization_callback=digests),
  )
  return _DigestingManager(directory, options=options, handler_registry=registry, digests=digests)


# Digests -----------------------------------------------------------------------------------------

DIGEST_FILE = "lejepa_digest.json"
COMMIT_MARKER = "commit_success.txt"
# Written or updated by orbax after the digest (the commit marker is checked on its own).
_UNDIGESTED = (DIGEST_FILE, COMMIT_MARKER, "_CHECKPOINT_METADATA")


class DamagedCheckpointError(RuntimeError):
  """A checkpoint step whose files differ from what was written (or cannot be read)."""

  def __init__(self, step: int, path: str, reason: str, kind: str):
    super().__init__(f"checkpoint step {step}: {path}: {reason}")
    self.step, self.path, self.reason, self.kind = step, path, reason, kind


def _sha256(path: pathlib.Path) -> str:
  """SHA-256 of a file, hashed once per (file, size, modification time): retention checks the step
  the digest writer has just hashed at every save, and a rewrite changes the modification time."""
  stat = os.stat(path)
  return _sha256_of(os.path.realpath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _sha256_of(path: str, inode: int, size: int, mtime_ns: int) -> str:
  del inode, size, mtime_ns  # the cache key: the same bytes unless one of them changed
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 23), b""):
      digest.update(block)
  return digest.hexdigest()


def file_digests(step_dir: str | os.PathLike) -> dict[str, dict]:
  """{path relative to `step_dir`: {"bytes": size, "sha256": hex}} of every file orbax and grain
  wrote there (not the digest itself, the commit marker and orbax's step metadata)."""
  root = pathlib.Path(step_dir)
  return {
    f.relative_to(root).as_posix(): {"bytes": f.stat().st_size, "sha256": _sha256(f)}
    for f in sorted(root.rglob("*"))
    if f.is_file() and f.name not in _UNDIGESTED
  }


def write_digest(step_dir: str | os.PathLike) -> None:
  """Writes `step_dir`/lejepa_digest.json (atomically: a reader never sees half of it)."""
  path = os.path.join(step_dir, DIGEST_FILE)
  digest = {"format": 1, "files": file_digests(step_dir)}
  with open(path + ".tmp", "w") as f:
    json.dump(digest, f, indent=0)
  os.replace(path + ".tmp", path)


class _DigestWriter:
  """Orbax's post-finalization callback: runs on the primary process after every process has
  written the step and before orbax commits it (renames the temporary directory)."""

  def __init__(self, directory: str):
    self.directory = pathlib.Path(directory)
    self.pending: collections.deque[int] = collections.deque()

  def __call__(self) -> None:
    step = self.pending.popleft()
    # Before the commit the step lives in orbax's temporary directory (local disks); on object
    # stores orbax writes in place.
    written = sorted(self.directory.glob(f"{step}.orbax-checkpoint-tmp*")) or [
      self.directory / str(step)
    ]
    write_digest(written[-1])


class _DigestingManager(ocp.CheckpointManager):
  """A CheckpointManager that tells its digest writer which step each save is."""

  def __init__(self, *args, digests: _DigestWriter, **kwargs):
    super().__init__(*args, **kwargs)
    self._digests = digests

  def save(self, step: int, *args, **kwargs) -> bool:
    import jax

    primary = jax.process_index() == 0
    if primary:
      self._digests.pending.append(step)
    saved = super().save(step, *args, **kwargs)
    if primary and not saved and step in self._digests.pending:
      self._digests.pending.remove(step)
    return saved


def verify_step(directory: str | os.PathLike, step: int) -> bool:
  """Checks checkpoint `step` in `directory` against its digest before it is read.

  Returns True when every file matches, False for a step written before digests existed (not
  verified). Raises DamagedCheckpointError naming the first file that differs: a missing commit
  marker, a missing file, another size, other bytes, or an unreadable digest.
  """
  step_dir = pathlib.Path(directory) / str(step)
  if not (step_dir / COMMIT_MARKER).exists():
    raise DamagedCheckpointError(
      step,
      str(step_dir / COMMIT_MARKER),
      "the commit marker is missing (the save never finished, or the file was removed)",
      "uncommitted",
    )
  digest_path = step_dir / DIGEST_FILE
  if not digest_path.exists():
    return False
  try:
    files = json.loads(digest_path.read_text())["files"]
  except (OSError, ValueError, KeyError) as e:
    raise DamagedCheckpointError(
      step, str(digest_path), f"the digest cannot be read ({e})", "bad-digest"
    ) from e
  for name, want in files.items():
    path = step_dir / name
    if not path.is_file():
      raise DamagedCheckpointError(step, str(path), "the file is missing", "missing-file")
    size = path.stat().st_size
    if size != want["bytes"]:
      raise DamagedCheckpointError(
        step,
        str(path),
        f"{size} bytes, {want['bytes']} were written",
        "truncated" if size < want["bytes"] else "resized",
      )
    if _sha256(path) != want["sha256"]:
      raise DamagedCheckpointError(
        step, str(path), "its bytes differ from those written (SHA-256 mismatch)", "altered"
      )
  return True


def is_readable(directory: str | os.PathLike, step: int) -> bool:
  """Whether `step` passes `verify_step` (unverified old steps count as readable)."""
  try:
    verify_step(directory, step)
    return True
  except DamagedCheckpointError:
    return False


@dataclasses.dataclass
class KeepLatestReadable:
  """Orbax preservation policy: the newest `n` steps (all when n is None), and when none of them
  passes `verify_step`, also the newest older step that does, so that retention never deletes the
  last intact checkpoint in favour of damaged ones."""

  directory: str
  n: int | None

  def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> list[bool]:
    keep = list(ocp.checkpoint_managers.LatestN(self.n).should_preserve(checkpoints, context=context))
    if all(keep) or any(
      is_readable(self.directory, c.step)
      for c, kept in zip(reversed(checkpoints), reversed(keep))
      if kept
    ):
      return keep
    for i in reversed(range(len(checkpoints))):
      if not keep[i] and is_readable(self.directory, checkpoints[i].step):
        log.warning("keeping checkpoint step %d: the newer steps kept are damaged", checkpoints[i].step)
        keep[i] = True
        break
    return keep


def set_aside(directory: str | os.PathLike, step: int, kind: str) -> str:
  """Moves a damaged step out of orbax's sight, bytes unchanged, to
  `<directory>_unreadable/<step>_<kind>` (so the step can be trained and saved again); returns it."""
  directory = os.path.abspath(directory)
  target = os.path.join(f"{directory}_unreadable", f"{step}_{re.sub(r'[^a-z-]', '', kind)}")
  suffix, base = 1, target
  while os.path.exists(target):
    suffix, target = suffix + 1, f"{base}.{suffix}"
  os.makedirs(os.path.dirname(target), exist_ok=True)
  shutil.move(os.path.join(directory, str(step)), target)
  return target


def save_training(
  manager: ocp.CheckpointManager, step: int, state: Any, data_iterator, config: dict
) -> None:
  """Saves asynchronously; call `manager.wait_until_finished()` before exiting."""
  import grain

  manager.save(
    step,
    args=ocp.args.Composite(
      **{
        STATE: ocp.args.StandardSave(state),
        DATA: grain.checkpoint.CheckpointSave(data_iterator),
        CONFIG: ocp.args.JsonSave(config),
      }
    ),
  )


def restore_training(
  manager: ocp.CheckpointManager, step: int, abstract_state: Any, data_iterator
) -> Any:
  """Restores the train state (onto `abstract_state`'s shardings) and the iterator in place."""
  import grain

  restored = manager.restore(
    step,
    args=ocp.args.Composite(
      **{
        STATE: ocp.args.StandardRestore(abstract_state),
        DATA: grain.checkpoint.CheckpointRestore(data_iterator),
      }
    ),
  )
  return restored[STATE]


def has_data_state(manager: ocp.CheckpointManager, step: int) -> bool:
  """Whether `step` holds a data-iterator state for this process under the current process count.

  grain writes one state file per process, named by process index and count.
  """
  import jax

  name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
  return (manager.directory / str(step) / DATA / name).exists()


def restore_state_only(manager: ocp.CheckpointManager, step: int, abstract_state: Any = None) -> Any:
  """The train state of a step without the data iterator (probe jobs, exports).

  Without `abstract_state` the arrays come back as saved, on the default device.
  """
  restored = manager.restore(
    step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract_state)})
  )
  return restored[STATE]


def state_subtree_metadata(manager: ocp.CheckpointManager, step: int, key: str | int) -> dict:
  """Shapes and dtypes of the arrays under `key` of `step`'s saved train state (reads metadata only)."""
  handler = ocp.PyTreeCheckpointHandler()
  try:
    tree = handler.metadata(manager.directory / str(step) / STATE).tree
  finally:
    handler.close()
  if str(key) not in tree:
    raise ValueError(
      f"the saved train state of step {step} has no item {key!r} (it has "
      f"{sorted(tree)}): it was not written by this trainer"
    )
  return tree[str(key)]


def restore_state_subtree(manager: ocp.CheckpointManager, step: int, key: str | int, target: Any) -> Any:
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
