"""The training job: set-up, the step loop, logging and checkpoints (`run`); `run_steps` is the
loop itself, shared with the ablation's group loop."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
from flax import nnx

from lejepa_jax import data
from lejepa_jax.scale import program_cache, sharding
from lejepa_jax.training import (
  checkpointing,
  event_log,
  optimizers,
  preemption,
  resume,
  steps,
  train_state,
)

log = logging.getLogger("lejepa_jax")


def run_steps(
  start: int,
  last_step: int,
  step_fn: Callable[[int], Any],
  *,
  log_every: int,
  checkpoint_every: int,
  guard: preemption.PreemptionGuard,
  on_log: Callable[[int, Any, float, float], None],
  on_save: Callable[[int], None],
  seconds_before: float = 0.0,
) -> int:
  """The step loop of a training run and of an ablation group: steps start + 1 .. last_step, or up
  to the step at which a preemption notice arrives; returns the last step taken (`start` if none).

  `step_fn(step)` dispatches one step and returns its metrics (device arrays, not waited for: steps
  run asynchronously). Every `log_every` steps and at the last one, `on_log(step, metrics, seconds
  per step since the previous log, train_seconds)`; every `checkpoint_every` steps and at the last
  one, `on_save(step)` (after `on_log` when both fall on one step). `train_seconds` is the wall-clock
  seconds of training at that step: `seconds_before` (a resumed run's reading at `start`) plus the
  time since this loop began, so the clock continues across resumes.
  """
  loop_start = time.perf_counter()
  window, step = (start, loop_start), start
  for step in range(start + 1, last_step + 1):
    metrics = step_fn(step)
    stopping = guard.stop_at(step) or step == last_step
    if step % log_every == 0 or stopping:
      jax.block_until_ready(metrics)  # time finished work
      now = time.perf_counter()
      on_log(step, metrics, (now - window[1]) / (step - window[0]), seconds_before + now - loop_start)
      window = (step, now)
    if step % checkpoint_every == 0 or stopping:
      on_save(step)
    if stopping:
      break
  return step


def _check_finite(pending: list[tuple[int, jax.Array, jax.Array]]) -> None:
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
        "resume from it."
      )


def _setup(config, workdir, allow_config_change: bool = False):
  """Mesh, data iterator, sharded train state (restored if the workdir has a checkpoint)."""
  mesh = sharding.make_mesh(
    dict(config.mesh.axes), config.mesh.axis_type, dcn_axes=dict(config.mesh.get("dcn_axes", {}))
  )
  local_batch = data.pipeline.local_batch_size(config.data.global_batch_size, jax.process_count())
  source = data.open_source(config.data.name, config.data.split, config.data.data_dir)
  iterator = resume.train_iterator(config, source)
  graphdef, state = nnx.split(
    sharding.create_sharded(
      # A copy: a kept initialiser must not see later changes to the caller's config object.
      functools.partial(train_state.build_train_objects, copy.deepcopy(config)),
      mesh,
      cache_key=program_cache.program_key(config, "train_state"),
    )
  )
  manager = checkpointing.training_manager(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
  start, iterator = resume.resume(
    manager,
    state,
    iterator,
    config,
    source,
    check=lambda step: resume.check_same_experiment(manager, step, config, workdir, allow_config_change),
  )
  if start:
    log.info("resumed from step %d in %s", start, workdir)
  return mesh, local_batch, iterator, graphdef, state, manager, start


def _log_line(step, total, m) -> None:
  eta = (total - step) * m["step_time_s"]
  log.info(
    "step %d/%d loss %.4f pred %.4f sigreg %.4f probe_acc %.3f lr %.2e | %.3f s/step "
    "%.0f img/s ETA %.0f s",
    step,
    total,
    m["loss"],
    m["pred"],
    m["sigreg"],
    m["probe_accuracy"],
    m["lr"],
    m["step_time_s"],
    m["images_per_s"],
    eta,
  )


def _check_workdir(workdir: str) -> None:
  if "://" in workdir:
    raise ValueError(
      f"--workdir={workdir}: the run directory must be a file system path (metrics, TensorBoard "
      "events and reports are plain files). Mount the bucket (Cloud Storage FUSE: "
      "launch/tpu_pod.sh mounts gs://BUCKET at ~/gcs) and pass the mounted path."
    )


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """DIR/config.json: the config of the latest start, readable before the first checkpoint."""
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json(indent=2))


@dataclasses.dataclass
class _Session:
  """One training session between its set-up and its end: the state the step loop's three calls
  (`step`, `log`, `save`) advance and read, in the order run_steps makes them."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  compiled: Any  # the train step, compiled ahead of time: (state, batch, key) -> (state, metrics)
  state: Any
  iterator: Any
  manager: Any
  writer: event_log.MetricsWriter
  pending: list = dataclasses.field(default_factory=list)  # (step, loss, param_norm) not yet checked
  last: dict = dataclasses.field(default_factory=dict)  # the last logged metrics

  def __post_init__(self):
    self.schedule = optimizers.lr_schedule(self.config)
    self.seed_key = jax.random.key(self.config.seed)

  def step(self, step: int) -> dict[str, jax.Array]:
    """Dispatches step `step` (not waited for) and returns its metrics."""
    batch = data.to_global_batch(next(self.iterator), self.mesh)
    with jax.set_mesh(self.mesh):
      self.state, metrics = self.compiled(self.state, batch, jax.random.fold_in(self.seed_key, step))
    self.pending.append((step, metrics["loss"], metrics["param_norm"]))
    return metrics

  def log(self, step: int, metrics: dict[str, jax.Array], step_time: float, seconds: float) -> None:
    """Checks the steps since the last check, then writes and prints this step's metrics."""
    self._check_pending()
    last = {k: float(v) for k, v in jax.device_get(metrics).items()}
    last["lr"] = float(self.schedule(step - 1))
    last["step_time_s"] = step_time
    last["images_per_s"] = self.config.data.global_batch_size / step_time
    last["train_seconds"] = seconds
    self.writer.write(step, last)
    _log_line(step, self.config.total_steps, last)
    self.last = last

  def save(self, step: int) -> None:
    """Checks the steps since the last check (no non-finite state is saved), then checkpoints."""
    self._check_pending()
    checkpointing.save_training(
      self.manager,
      step,
      train_state.to_savable(nnx.to_pure_dict(self.state)),
      self.iterator,
      json.loads(self.config.to_json()),
    )

  def _check_pending(self) -> None:
    _check_finite(self.pending)
    self.pending.clear()


def run(
  config: ml_collections.ConfigDict,
  workdir: str,
  stop_after: int | None = None,
  allow_config_change: bool = False,
) -> dict[str, float]:
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
  mesh, local_batch, iterator, graphdef, state, manager, start = _setup(
    config, workdir, allow_config_change
  )
  _write_config(config, workdir)
  if start >= config.total_steps:
    log.info(
      "the run in %s already finished (step %d of %d); nothing to train",
      workdir,
      start,
      config.total_steps,
    )
    manager.close()
    return {}
  compiled = steps.compile_train_step(config, mesh, graphdef, state, local_batch)
  session = _Session(config, mesh, compiled, state, iterator, manager, event_log.MetricsWriter(workdir))
  guard = preemption.PreemptionGuard()
  last_step = config.total_steps if stop_after is None else min(stop_after, config.total_steps)
  try:
    run_steps(
      start,
      last_step,
      session.step,
      log_every=config.log_every,
      checkpoint_every=config.checkpoint_every,
      guard=guard,
      on_log=session.log,
      on_save=session.save,
      # Wall-clock seconds of training (the loop, data included; not start-up or compile),
      # continued across resumes from the last metrics line at or before the restored step.
      seconds_before=event_log.train_seconds_at(workdir, start),
    )
  finally:
    manager.wait_until_finished()
    manager.close()
    session.writer.close()
    guard.restore()
  if jax.process_index() == 0 and session.last:
    event_log.write_summary(workdir, session.last)
  return session.last
