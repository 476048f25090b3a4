"""Training orchestration: mesh, sharded model and optimizers, data, checkpoints, the loop, logging.

No math here: the objective lives in `lejepa_jax.losses` and the step in `lejepa_jax.steps`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import signal
import threading
import time
from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from lejepa_jax import checkpointing, compiler, data, event_log, models, reports, sharding, steps

log = logging.getLogger("lejepa_jax")


def lr_schedule(config, lr: float | jax.Array | None = None) -> optax.Schedule:
  """Linear warmup, then cosine decay to lr * final_lr_fraction at total_steps.

  `lr` (a float, or a traced scalar such as an ablation member's) replaces config.optim.lr.
  """
  if isinstance(lr, jax.Array):
    # optax schedules branch on their peak value in Python: scale the unit-peak schedule instead.
    unit = lr_schedule(config, 1.0)
    return lambda count: lr * unit(count)
  o, total = config.optim, config.total_steps
  lr = o.lr if lr is None else lr
  return optax.warmup_cosine_decay_schedule(
      0.0, lr, min(o.warmup_steps, max(total - 1, 1)), max(total, 2),
      end_value=lr * o.final_lr_fraction)


def make_optimizer(config, lr: float | jax.Array | None = None,
                   weight_decay: float | jax.Array | None = None) -> optax.GradientTransformation:
  """AdamW on `lr_schedule`; `lr` / `weight_decay` (floats or traced scalars) replace the config's.

  With `optim.clip_grad_norm` > 0 the gradients are first clipped to that global norm (off in the
  paper's recipe). The optimizer state's structure does not depend on `lr` or `weight_decay`.
  """
  weight_decay = config.optim.weight_decay if weight_decay is None else weight_decay
  adamw = optax.adamw(lr_schedule(config, lr), weight_decay=weight_decay)
  clip = float(config.optim.get("clip_grad_norm", 0.0))
  return optax.chain(optax.clip_by_global_norm(clip), adamw) if clip > 0 else adamw


def build_train_objects(config: ml_collections.ConfigDict, seed: int | jax.Array | None = None):
  """(model, its nnx.Optimizer, online probe, probe optimizer); create with sharding.create_sharded.

  `seed` (an int, or a traced scalar to initialise many models under vmap) replaces config.seed.
  """
  seed = config.seed if seed is None else seed
  model = models.build_encoder(config.model.to_dict(), nnx.Rngs(jax.random.key(seed)))
  optimizer = nnx.Optimizer(model, make_optimizer(config), wrt=nnx.Param)
  probe = steps.LinearProbe(model.feature_dim, config.probe.num_classes, rngs=nnx.Rngs(1))
  probe_tx = optax.adamw(config.optim.probe_lr, weight_decay=config.optim.probe_weight_decay)
  return model, optimizer, probe, nnx.Optimizer(probe, probe_tx, wrt=nnx.Param)


def to_savable(tree):
  """Typed PRNG keys -> their raw uint32 data (checkpoints hold plain arrays)."""
  return jax.tree.map(
      lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, tree)


def from_savable(saved, like):
  """Inverse of to_savable: raw key data back to typed keys where `like` holds keys."""
  return jax.tree.map(
      lambda s, l: jax.random.wrap_key_data(s) if jnp.issubdtype(l.dtype, jax.dtypes.prng_key)
      else s, saved, like)


def abstract_tree(tree):
  """ShapeDtypeStructs (with shardings) of a tree of arrays: an orbax restore target."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def abstract_batch(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, local_batch: int
                   ) -> dict[str, jax.ShapeDtypeStruct]:
  """Abstract global batch for ahead-of-time compilation: {"global": [n, Vg, H, W, C] uint8,
  "local": [n, Vl, h, w, C] uint8, "label": [n] int32}, n = local_batch * process_count, sharded
  over the mesh's batch axes."""
  d = config.data
  n = local_batch * jax.process_count()
  shapes = {"global": (n, d.global_views["count"], d.global_views["size"], d.global_views["size"],
                       d.channels),
            "local": (n, d.local_views["count"], d.local_views["size"], d.local_views["size"],
                      d.channels),
            "label": (n,)}
  dtypes = {"global": jnp.uint8, "local": jnp.uint8, "label": jnp.int32}
  return {k: jax.ShapeDtypeStruct(s, dtypes[k], sharding=jax.sharding.NamedSharding(
      mesh, sharding.batch_spec(mesh, len(s)))) for k, s in shapes.items()}


def step_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The keyword arguments of `steps.train_step` that the config fixes."""
  return dict(loss_config=dict(config.loss), num_global=config.data.global_views["count"],
              mean=tuple(config.data.mean), std=tuple(config.data.std),
              device_augment=data.device_augment_from_config(config.data),
              grad_accum_steps=config.grad_accum_steps)


def compile_train_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, graphdef,
                       state, local_batch: int):
  """The train step jitted with the state donated and layouts kept, compiled ahead of time.

  Logs the compiled per-device memory. Call as `compiled(state, batch, step_key)`.
  """
  step = functools.partial(steps.train_step, graphdef, **step_options(config))
  # The state keeps its layout across steps (XLA would otherwise pick output shardings freely).
  state_shardings = jax.tree.map(lambda x: x.sharding, state)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  jitted = jax.jit(step, donate_argnums=0, out_shardings=(state_shardings, replicated))
  key = jax.eval_shape(lambda: jax.random.key(0))  # abstract too: no device is touched
  with jax.set_mesh(mesh):
    compiled = jitted.lower(abstract_tree(state), abstract_batch(config, mesh, local_batch),
                            key).compile(compiler_options=compiler.options(config))
  memory = compiled.memory_analysis()
  if memory is not None:
    log.info("train step compiled: %.1f MiB arguments, %.1f MiB temporaries per device",
             memory.argument_size_in_bytes / 2**20, memory.temp_size_in_bytes / 2**20)
  return compiled


class MetricsWriter(event_log.EventLog):
  """A training run's `metrics.jsonl` and `tensorboard/` scalars `train/<metric>` (process 0)."""

  def __init__(self, workdir: str):
    super().__init__(workdir, os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    self.append("metrics", {"step": step, **metrics})
    self.scalars("train", metrics, step)


def _check_finite(pending: list[tuple[int, Any]]) -> None:
  """FloatingPointError at the first step whose loss or updated parameters are not finite.

  `pending`: (step, loss, norm of the parameters after the step's update). The loss is computed
  before the update, so a finite loss alone would let a non-finite update reach a checkpoint.
  """
  values = jax.device_get([(loss, param_norm) for _, loss, param_norm in pending])  # one transfer
  for (step, _, _), (value, norm) in zip(pending, values):
    value, norm = float(value), float(norm)
    if not (math.isfinite(value) and math.isfinite(norm)):
      raise FloatingPointError(
          f"Non-finite loss ({value}) or parameters (norm {norm}) at step {step}. The last good "
          "checkpoint is kept; lower optim.lr or check the data, then rerun the same command to "
          "resume from it.")


class PreemptionGuard:
  """Turns a preemption notice (SIGTERM) or Ctrl-C (SIGINT) into a decision the loop acts on: save
  this step, then leave. The loop asks `stop_at(step)` once per step.

  One process: Python handlers set a flag. After the first signal the previous handlers are back,
  so a second Ctrl-C interrupts at once.

  Several processes (jax.distributed, JAX's preemption service on, its default): a scheduler may
  signal one process only (`scancel --signal=TERM` to one task, a maintenance event on one TPU VM).
  SIGTERM is left to JAX's preemption notifier, which spreads a notice received by any process to
  all of them and agrees on a step (`multihost_utils.reached_preemption_sync_point`): `stop_at`
  is True on every process at that same step, so all save it together and exit with status 0.
  Ctrl-C is turned into that notice (a SIGTERM to this process), so it stops every process too.
  """

  def __init__(self):
    self.requested = False
    self._previous, self._calls = {}, 0
    self._synced = jax.process_count() > 1 and jax.config.jax_enable_preemption_service
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT,) if self._synced else (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    log.warning("received signal %d: checkpointing and exiting after this step (again to "
                "interrupt at once)", signum)
    self.restore()
    if self._synced:
      os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption notifier: every process stops
    else:
      self.requested = True

  def stop_at(self, step: int) -> bool:
    """Whether the loop should save `step` and leave (the same answer on every process)."""
    if self._synced and not self.requested:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      # The protocol wants a rising count that every process shares: the calls made so far (a
      # step restarts at 1 in each group of an ablation and at the restored step on a resume).
      self._calls += 1
      if multihost_utils.reached_preemption_sync_point(self._calls):
        log.warning("preemption notice: every process saves step %d and exits", step)
        self.requested = True
    return self.requested

  def restore(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def train_iterator(config, source, start_batch: int = 0):
  """This process's iterator of training batches over `source`, from global batch `start_batch`."""
  return iter(data.train_dataset(
      source, data.multicrop_from_config(config.data.to_dict()),
      global_batch_size=config.data.global_batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      num_workers=config.data.num_workers, start_batch=start_batch))


def restore(manager, start, state, iterator, config, source):
  """Restores the train state of step `start` in place; returns the data iterator to continue with.

  The saved iterator state is per process; a run resumed with another process count (e.g. a pod
  checkpoint continued on one host) restarts the data at global batch `start` instead, which is
  the batch the original run would have read next unless it skipped undecodable records.
  """
  abstract = abstract_tree(to_savable(nnx.to_pure_dict(state)))
  if checkpointing.has_data_state(manager, start):
    saved = checkpointing.restore_training(manager, start, abstract, iterator)
  else:
    log.info("the data iterator of step %d was saved by another process count: the data continue "
             "at global batch %d", start, start)
    saved = checkpointing.restore_state_only(manager, start, abstract)
    iterator = train_iterator(config, source, start_batch=start)
  nnx.replace_by_pure_dict(state, from_savable(saved, nnx.to_pure_dict(state)))
  return iterator


def resume(manager, state, iterator, config, source,
           check: Callable[[int], None] | None = None) -> tuple[int, Any]:
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
        log.warning("checkpoint step %d has no digest (written before checkpoints had one): "
                    "restoring it unverified", step)
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
        f"No checkpoint in {manager.directory} can be restored:\n" + "\n".join(
            f"  step {e.step}: {e.path}: {e.reason}" for e in damaged) +
        "\nNothing was changed. Restore the files from a copy, or move the checkpoints directory "
        "aside to train from the start.")
  return 0, iterator


class UnreadableCheckpointsError(RuntimeError):
  """Every checkpoint step of a run is damaged or unreadable."""


def _restore_or_raise(manager, step, state, iterator, config, source):
  """`restore`, with orbax's and grain's read failures turned into DamagedCheckpointError."""
  try:
    return restore(manager, step, state, iterator, config, source)
  except Exception as e:  # pylint: disable=broad-except  (whatever the readers raise on bad bytes)
    raise checkpointing.DamagedCheckpointError(
        step, str(manager.directory / str(step)),
        f"it could not be restored ({type(e).__name__}: {str(e)[:300]})", "unreadable") from e


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
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices("lejepa_jax: damaged checkpoints set aside")
  manager.reload()


# Keys a resumed run may change: where and how it runs, not what it trains. (Not
# data.num_workers: the saved data-iterator state is laid out per worker.)
RESUMABLE_CHANGES = ("log_every", "checkpoint_every", "keep_checkpoints", "data.data_dir",
                     "data.eval_crop_fraction", "mesh.", "model.remat", "compiler_options",
                     "member_convolutions", "data.skip_bad_records")


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
  from lejepa_jax import config_lib  # pylint: disable=import-outside-toplevel
  flat = _flat(json.loads(config_lib.base_config().to_json()))
  for option, value in config_lib.MODEL_OPTIONS.get(model_name, {}).items():
    flat[f"model.{option}"] = value
  return flat


def _check_same_experiment(manager, start: int, config, workdir: str, allow_change: bool) -> None:
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
        f"step {start} with the new values. Nothing was changed in {workdir}.")
  log.warning("continuing the run from step %d with a changed config: %s", start, listing)


def _setup(config, workdir, allow_config_change: bool = False):
  """Mesh, data iterator, sharded train state (restored if the workdir has a checkpoint)."""
  mesh = sharding.make_mesh(dict(config.mesh.axes), config.mesh.axis_type,
                            dcn_axes=dict(config.mesh.get("dcn_axes", {})))
  local_batch = data.pipeline.local_batch_size(config.data.global_batch_size, jax.process_count())
  source = data.open_source(config.data.name, config.data.split, config.data.data_dir)
  iterator = train_iterator(config, source)
  graphdef, state = nnx.split(sharding.create_sharded(lambda: build_train_objects(config), mesh))
  manager = checkpointing.training_manager(os.path.join(workdir, "checkpoints"),
                                           config.keep_checkpoints)
  start, iterator = resume(
      manager, state, iterator, config, source,
      check=lambda step: _check_same_experiment(manager, step, config, workdir, allow_config_change))
  if start:
    log.info("resumed from step %d in %s", start, workdir)
  return mesh, local_batch, iterator, graphdef, state, manager, start


def _log_line(step, total, m) -> None:
  eta = (total - step) * m["step_time_s"]
  log.info("step %d/%d loss %.4f pred %.4f sigreg %.4f probe_acc %.3f lr %.2e | %.3f s/step "
           "%.0f img/s ETA %.0f s", step, total, m["loss"], m["pred"], m["sigreg"],
           m["probe_accuracy"], m["lr"], m["step_time_s"], m["images_per_s"], eta)


def _check_workdir(workdir: str) -> None:
  if "://" in workdir:
    raise ValueError(
        f"--workdir={workdir}: the run directory must be a file system path (metrics, TensorBoard "
        "events and reports are plain files). Mount the bucket (Cloud Storage FUSE: "
        "launch/tpu_pod.sh mounts gs://BUCKET at ~/gcs) and pass the mounted path.")


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """DIR/config.json: the config of the latest start, readable before the first checkpoint."""
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json(indent=2))


def run(config: ml_collections.ConfigDict, workdir: str, stop_after: int | None = None,
        allow_config_change: bool = False) -> dict[str, float]:
  """Trains (or resumes) in `workdir`; returns the last logged metrics.

  Args:
    config: the experiment config.
    workdir: checkpoints and logs; a run resumes from its latest checkpoint.
    stop_after: leave after this step (checkpointed), as a preempted job would; the schedule still
      runs to `config.total_steps`.
    allow_config_change: resume even if `config` differs from the checkpoint's in keys that change
      what is trained (RESUMABLE_CHANGES may always differ); otherwise that is an error.
  """
  _check_workdir(workdir)
  os.makedirs(workdir, exist_ok=True)
  mesh, local_batch, iterator, graphdef, state, manager, start = _setup(config, workdir,
                                                                        allow_config_change)
  _write_config(config, workdir)
  if start >= config.total_steps:
    log.info("the run in %s already finished (step %d of %d); nothing to train", workdir, start,
             config.total_steps)
    manager.close()
    return {}
  compiled = compile_train_step(config, mesh, graphdef, state, local_batch)
  schedule = lr_schedule(config)
  writer, guard = MetricsWriter(workdir), PreemptionGuard()
  seed_key = jax.random.key(config.seed)
  last_step = config.total_steps if stop_after is None else min(stop_after, config.total_steps)
  pending, last, window = [], {}, (start, time.perf_counter())
  # Wall-clock seconds of training (the loop, data included; not start-up or compile), continued
  # across resumes from the last metrics line at or before the restored step.
  seconds_before, loop_start = reports.train_seconds_at(workdir, start), window[1]
  save = lambda step: checkpointing.save_training(  # noqa: E731
      manager, step, to_savable(nnx.to_pure_dict(state)), iterator, json.loads(config.to_json()))
  try:
    for step in range(start + 1, last_step + 1):
      batch = data.to_global_batch(next(iterator), mesh)
      with jax.set_mesh(mesh):
        state, metrics = compiled(state, batch, jax.random.fold_in(seed_key, step))
      pending.append((step, metrics["loss"], metrics["param_norm"]))
      stopping = guard.stop_at(step) or step == last_step
      if step % config.log_every == 0 or stopping:
        _check_finite(pending)
        pending.clear()
        now = time.perf_counter()
        last = {k: float(v) for k, v in jax.device_get(metrics).items()}
        last["lr"] = float(schedule(step - 1))
        last["step_time_s"] = (now - window[1]) / (step - window[0])
        last["images_per_s"] = config.data.global_batch_size / last["step_time_s"]
        last["train_seconds"] = seconds_before + now - loop_start
        window = (step, now)
        writer.write(step, last)
        _log_line(step, config.total_steps, last)
      if step % config.checkpoint_every == 0 or stopping:
        _check_finite(pending)
        pending.clear()
        save(step)
      if stopping:
        break
  finally:
    manager.wait_until_finished()
    manager.close()
    writer.close()
    guard.restore()
  if jax.process_index() == 0 and last:
    reports.write_summary(workdir, last)
  return last
