"""Pure train step: LeJEPA loss on the projector outputs, AdamW update, online linear probe.

The step takes and returns the whole training state (model, optimizer, probe, probe optimizer) as an
`nnx.State`; `compile_train_step` jits it with the state donated and compiles it ahead of time.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from lejepa_jax import data, losses
from lejepa_jax.data import device_augment as device_augment_lib
from lejepa_jax.data.augment import Augment
from lejepa_jax.scale import compiler, program_cache, sharding
from lejepa_jax.training import train_state

log = logging.getLogger("lejepa_jax")


def prepare_views(
  views: jax.Array, key: jax.Array, mean, std, device_augment: Augment | None
) -> jax.Array:
  """uint8 views [N, V, H, W, C] -> normalised float32, photometric ops first if done on device."""
  if device_augment is not None:
    views = device_augment_lib.augment_views(views, key, device_augment)
  return data.normalize(views, mean, std)


def _embed_views(model, views: jax.Array) -> tuple[jax.Array, jax.Array]:
  """[N, V, H, W, C] -> (pooled [N, V, D], probe features [N, V, F]) through the backbone."""
  n, v = views.shape[:2]
  pooled, features = model.backbone(views.reshape((n * v,) + views.shape[2:]))
  return pooled.reshape(n, v, -1), features.reshape(n, v, -1)


def lejepa_objective(
  model,
  batch: Mapping[str, jax.Array],
  key: jax.Array,
  loss_config: Mapping[str, Any],
  num_global: int,
  mean,
  std,
  device_augment: Augment | None = None,
):
  """Loss and its parts for a multi-crop batch; also returns the global views' probe features.

  `key` draws the SIGReg directions; on-device augmentation (if any) uses keys folded from it.
  """
  views = lambda name, i: prepare_views(
    batch[name], jax.random.fold_in(key, i), mean, std, device_augment
  )
  pooled_g, features_g = _embed_views(model, views("global", 1))
  pooled = pooled_g
  if batch["local"].shape[1]:
    pooled_l, _ = _embed_views(model, views("local", 2))
    pooled = jnp.concatenate([pooled_g, pooled_l], axis=1)
  z = model.projector(pooled)  # [N, V, K]: one BatchNorm over every view of the batch
  loss, parts = losses.lejepa_loss(z, key, num_global=num_global, **loss_config)
  return loss, (parts, features_g)


def _accumulated_grads(model, batch, key, objective, num_micro: int):
  """Mean gradients over `num_micro` contiguous micro-batches of the batch, one `lax.scan` step each
  (the program's size stays that of one micro-batch); BatchNorm statistics update after each.
  SIGReg and BatchNorm then see micro-batches, which changes the objective: use it only when the
  batch does not fit, and prefer more devices."""
  n = batch["label"].shape[0]
  if n % num_micro:
    raise ValueError(f"grad_accum_steps={num_micro} must divide the batch size {n}.")
  micro_batches = jax.tree.map(lambda x: x.reshape(num_micro, n // num_micro, *x.shape[1:]), batch)
  graphdef, model_state = nnx.split(model)
  zeros = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))

  def micro_step(carry, inputs):
    model_state, grad_sum = carry
    i, micro = inputs
    m = nnx.merge(graphdef, model_state)
    out, grads = nnx.value_and_grad(
      lambda m: objective(m, micro, jax.random.fold_in(key, 100 + i)), has_aux=True
    )(m)
    return (nnx.state(m), jax.tree.map(jnp.add, grad_sum, grads)), out

  (model_state, grad_sum), (losses_, (parts, features)) = jax.lax.scan(
    micro_step, (model_state, zeros), (jnp.arange(num_micro), micro_batches)
  )
  nnx.update(model, model_state)  # the BatchNorm statistics after the last micro-batch
  parts = {k: jnp.mean(v) for k, v in parts.items()}
  features = features.reshape(n, *features.shape[2:])
  grads = jax.tree.map(lambda g: g / num_micro, grad_sum)
  return (jnp.mean(losses_), (parts, features)), grads


def train_step(
  graphdef,
  state,
  batch,
  key,
  *,
  loss_config,
  num_global,
  mean,
  std,
  device_augment: Augment | None = None,
  grad_accum_steps: int = 1,
  tx: optax.GradientTransformation | None = None,
):
  """One step: (state, metrics). `key` is this step's key (fold_in(seed key, step)).

  `tx` replaces the encoder optimizer's transformation for this step; it must keep the state's
  structure (e.g. `optimizers.make_optimizer` with traced per-member lr / weight decay under vmap).
  """
  trained = nnx.merge(graphdef, state)
  model, optimizer, probe = trained.model, trained.optimizer, trained.probe
  model.train()
  if tx is not None:
    optimizer.tx = tx

  def objective(model, batch, key):
    return lejepa_objective(model, batch, key, loss_config, num_global, mean, std, device_augment)

  if grad_accum_steps > 1:
    (loss, (parts, features)), grads = _accumulated_grads(model, batch, key, objective, grad_accum_steps)
  else:
    (loss, (parts, features)), grads = nnx.value_and_grad(
      lambda m: objective(m, batch, key), has_aux=True
    )(model)
  optimizer.update(model, grads)

  # The probe reads stop-gradient features of the first global view: labels never reach the encoder.
  features = jax.lax.stop_gradient(features[:, 0])

  def probe_loss_fn(probe):
    logits = probe(features)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean(), logits

  (probe_loss, logits), probe_grads = nnx.value_and_grad(probe_loss_fn, has_aux=True)(probe)
  trained.probe_optimizer.update(probe, probe_grads)
  metrics = {
    "loss": loss,
    "pred": parts["pred"],
    "sigreg": parts["sigreg"],
    "probe_loss": probe_loss,
    "probe_accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
    "grad_norm": optax.tree.norm(grads),
    "param_norm": optax.tree.norm(nnx.state(model, nnx.Param)),
  }
  return nnx.state(trained), metrics


def abstract_batch(
  config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, local_batch: int
) -> dict[str, jax.ShapeDtypeStruct]:
  """Abstract global batch for ahead-of-time compilation: {"global": [n, Vg, H, W, C] uint8,
  "local": [n, Vl, h, w, C] uint8, "label": [n] int32}, n = local_batch * process_count, sharded
  over the mesh's batch axes."""
  d = config.data
  n = local_batch * jax.process_count()
  shapes = {
    "global": (n, d.global_views["count"], d.global_views["size"], d.global_views["size"], d.channels),
    "local": (n, d.local_views["count"], d.local_views["size"], d.local_views["size"], d.channels),
    "label": (n,),
  }
  dtypes = {"global": jnp.uint8, "local": jnp.uint8, "label": jnp.int32}
  return {
    k: jax.ShapeDtypeStruct(
      s, dtypes[k], sharding=jax.sharding.NamedSharding(mesh, sharding.batch_spec(mesh, len(s)))
    )
    for k, s in shapes.items()
  }


def step_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The keyword arguments of `train_step` that the config fixes."""
  return dict(
    loss_config=dict(config.loss),
    num_global=config.data.global_views["count"],
    mean=tuple(config.data.mean),
    std=tuple(config.data.std),
    device_augment=data.device_augment_from_config(config.data),
    grad_accum_steps=config.grad_accum_steps,
  )


def bound_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, graphdef, state, batch: int):
  """(`train_step` with `config`'s options bound, its abstract arguments on `mesh`: the state's
  shapes and shardings, a uint8 batch of `batch` images, a step key). Lowering it touches no
  device: the AOT compile, the accelerator export and the cost plan all start here."""
  step = functools.partial(train_step, graphdef, **step_options(config))
  return step, (train_state.abstract_tree(state), abstract_batch(config, mesh, batch), _abstract_key())


@functools.cache
def _abstract_key() -> jax.ShapeDtypeStruct:
  """A step key's shape and dtype, traced once per process: a cached program's lookup traces
  nothing."""
  return jax.eval_shape(lambda: jax.random.key(0))


def compile_train_step(
  config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, graphdef, state, local_batch: int
):
  """The train step jitted with the state donated and layouts kept, compiled ahead of time, once
  per process for equal arguments (`lejepa_jax.scale.program_cache`).

  Logs the compiled per-device memory. Call as `compiled(state, batch, step_key)`.
  """
  step, args = bound_step(config, mesh, graphdef, state, local_batch)
  abstract_state, batch, _ = args

  def lower():
    # The state keeps its layout across steps (XLA would otherwise pick output shardings freely).
    state_shardings = jax.tree.map(lambda x: x.sharding, abstract_state)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    jitted = jax.jit(step, donate_argnums=0, out_shardings=(state_shardings, replicated))
    with jax.set_mesh(mesh):
      return jitted.lower(*args)

  key = program_cache.program_key(config, "train_step", abstract_state, batch)
  compiled = program_cache.compiled(key, lower, compiler.options(config))
  log_compiled_memory(compiled, "train step")
  return compiled


def export_train_step(
  config: ml_collections.ConfigDict, platforms: Sequence[str]
) -> jax.export.Exported:
  """`config`'s train step on its mesh of this host's devices (`config.mesh.axes`), traced and
  lowered by `jax.export` for `platforms` (e.g. ("cuda", "tpu")) from any host: nothing is
  allocated or compiled. What a job spends before XLA compiles, and a check that a config lowers
  for accelerators this host does not have."""
  mesh = sharding.make_mesh(dict(config.mesh.axes), config.mesh.axis_type)
  graphdef, state = sharding.abstract_state(lambda: train_state.build_train_objects(config), mesh)
  step, args = bound_step(config, mesh, graphdef, state, config.data.global_batch_size)
  with jax.set_mesh(mesh):
    return jax.export.export(jax.jit(step), platforms=tuple(platforms))(*args)


def log_compiled_memory(compiled, what: str) -> None:
  """Logs a compiled program's per-device argument and temporary memory (where XLA reports it)."""
  memory = compiled.memory_analysis()
  if memory is not None:
    log.info(
      "%s compiled: %.1f MiB arguments, %.1f MiB temporaries per device",
      what,
      memory.argument_size_in_bytes / 2**20,
      memory.temp_size_in_bytes / 2**20,
    )
