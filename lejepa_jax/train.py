"""Training orchestration: mesh, sharded model and optimizers, data, checkpoints, the loop, logging.

No math here: the objective lives in `lejepa_jax.losses` and the step in `lejepa_jax.steps`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from lejepa_jax import checkpointing, data, models, sharding, steps

log = logging.getLogger("lejepa_jax")


def _optimizer(config, total_steps: int) -> optax.GradientTransformation:
  o = config.optim
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, o.lr, min(o.warmup_steps, max(total_steps - 1, 1)), max(total_steps, 2),
      end_value=o.lr * o.final_lr_fraction)
  return optax.adamw(schedule, weight_decay=o.weight_decay)


def _build(config):
  """Model, its optimizer, the online probe and its optimizer (built inside one jit)."""
  model = models.build_encoder(config.model.to_dict(), nnx.Rngs(config.seed))
  optimizer = nnx.Optimizer(model, _optimizer(config, config.total_steps), wrt=nnx.Param)
  probe = steps.LinearProbe(model.feature_dim, config.probe.num_classes, rngs=nnx.Rngs(1))
  probe_tx = optax.adamw(config.optim.probe_lr, weight_decay=config.optim.probe_weight_decay)
  return model, optimizer, probe, nnx.Optimizer(probe, probe_tx, wrt=nnx.Param)


def _to_savable(tree):
  """Typed PRNG keys -> their raw uint32 data (checkpoints hold plain arrays)."""
  return jax.tree.map(
      lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, tree)


def _from_savable(saved, like):
  return jax.tree.map(
      lambda s, l: jax.random.wrap_key_data(s) if jnp.issubdtype(l.dtype, jax.dtypes.prng_key)
      else s, saved, like)


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _batch_spec(config, mesh, local_batch: int):
  """Abstract global batch (shapes, dtypes, shardings) for ahead-of-time compilation."""
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


def _compile_step(config, mesh, graphdef, state, local_batch):
  loss_config = dict(config.loss)
  step = functools.partial(
      steps.train_step, graphdef, loss_config=loss_config,
      num_global=config.data.global_views["count"], mean=tuple(config.data.mean),
      std=tuple(config.data.std), device_augment=data.device_augment_from_config(config.data))
  # The state keeps its layout across steps (XLA would otherwise pick output shardings freely).
  state_shardings = jax.tree.map(lambda x: x.sharding, state)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  jitted = jax.jit(step, donate_argnums=0, out_shardings=(state_shardings, replicated))
  with jax.set_mesh(mesh):
    compiled = jitted.lower(_abstract(state), _batch_spec(config, mesh, local_batch),
                            jax.random.key(0)).compile()
  memory = compiled.memory_analysis()
  if memory is not None:
    log.info("train step compiled: %.1f MiB arguments, %.1f MiB temporaries per device",
             memory.argument_size_in_bytes / 2**20, memory.temp_size_in_bytes / 2**20)
  return compiled


class MetricsWriter:
  """JSON lines (always) and TensorBoard event files (tensorboardX) on process 0."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    if self.enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
    self.jsonl.flush()
    for name, value in metrics.items():
      self.tb.add_scalar(f"train/{name}", value, step)

  def close(self) -> None:
    if self.enabled:
      self.jsonl.close()
      self.tb.close()


def _check_finite(pending: list[tuple[int, Any]]) -> None:
  for step, loss in pending:
    value = float(jax.device_get(loss))
    if not math.isfinite(value):
      raise FloatingPointError(
          f"Non-finite loss ({value}) at step {step}. The last good checkpoint is kept; lower "
          "optim.lr or check the data, then rerun the same command to resume from it.")


def run(config: ml_collections.ConfigDict, workdir: str, stop_after: int | None = None
        ) -> dict[str, float]:
  """Trains (or resumes) in `workdir`; returns the last logged metrics.

  Args:
    config: the experiment config.
    workdir: checkpoints and logs; a run resumes from its latest checkpoint.
    stop_after: leave after this step (checkpointed), as a preempted job would; the schedule still
      runs to `config.total_steps`.
  """
  os.makedirs(workdir, exist_ok=True)
  mesh = sharding.make_mesh(dict(config.mesh.axes), config.mesh.axis_type)
  local_batch = data.pipeline.local_batch_size(config.data.global_batch_size, jax.process_count())
  source = data.open_source(config.data.name, config.data.split, config.data.data_dir)
  dataset = data.train_dataset(
      source, data.multicrop_from_config(config.data.to_dict()),
      global_batch_size=config.data.global_batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      num_workers=config.data.num_workers)
  iterator = iter(dataset)

  objects = sharding.create_sharded(lambda: _build(config), mesh)
  graphdef, state = nnx.split(objects)
  manager = checkpointing.training_manager(os.path.join(workdir, "checkpoints"))
  start = manager.latest_step() or 0
  if start:
    saved = checkpointing.restore_training(manager, start, _abstract(_to_savable(
        nnx.to_pure_dict(state))), iterator)
    nnx.replace_by_pure_dict(state, _from_savable(saved, nnx.to_pure_dict(state)))
    log.info("resumed from step %d in %s", start, workdir)
  compiled = _compile_step(config, mesh, graphdef, state, local_batch)
  writer = MetricsWriter(workdir)
  seed_key = jax.random.key(config.seed)
  pending, last, window_start = [], {}, time.perf_counter()
  try:
    last_step = config.total_steps if stop_after is None else min(stop_after, config.total_steps)
    for step in range(start + 1, last_step + 1):
      batch = data.to_global_batch(next(iterator), mesh)
      with jax.set_mesh(mesh):
        state, metrics = compiled(state, batch, jax.random.fold_in(seed_key, step))
      pending.append((step, metrics["loss"]))
      if step % config.log_every == 0 or step == config.total_steps:
        _check_finite(pending)
        pending.clear()
        elapsed, window_start = time.perf_counter() - window_start, time.perf_counter()
        last = {k: float(v) for k, v in jax.device_get(metrics).items()}
        steps_done = config.log_every if step % config.log_every == 0 else step % config.log_every
        last["step_time_s"] = elapsed / steps_done
        last["images_per_s"] = config.data.global_batch_size / last["step_time_s"]
        writer.write(step, last)
        eta = (config.total_steps - step) * last["step_time_s"]
        log.info("step %d/%d loss %.4f pred %.4f sigreg %.4f probe_acc %.3f | %.3f s/step "
                 "%.0f img/s ETA %.0f s", step, config.total_steps, last["loss"], last["pred"],
                 last["sigreg"], last["probe_accuracy"], last["step_time_s"],
                 last["images_per_s"], eta)
      if step % config.checkpoint_every == 0 or step == last_step:
        _check_finite(pending)
        pending.clear()
        checkpointing.save_training(manager, step, _to_savable(nnx.to_pure_dict(state)), iterator,
                                    json.loads(config.to_json()))
  finally:
    manager.wait_until_finished()
    manager.close()
    writer.close()
  return last
