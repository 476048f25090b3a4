"""Pure train step: LeJEPA loss on the projector outputs, AdamW update, online linear probe.

The step takes and returns the whole training state (model, optimizer, probe, probe optimizer) as an
`nnx.State`; train.py jits it with the state donated and compiles it ahead of time.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lejepa_jax import losses
from lejepa_jax.data import device_augment as device_augment_lib
from lejepa_jax.data.augment import Augment
from lejepa_jax.models import layers


class LinearProbe(nnx.Module):
  """LayerNorm + Linear on stop-gradient backbone features, trained alongside the encoder."""

  @layers.lazily_sharded
  def __init__(self, in_dim: int, num_classes: int, *, rngs: nnx.Rngs):
    self.norm = nnx.LayerNorm(in_dim, rngs=rngs)
    self.linear = nnx.Linear(in_dim, num_classes, rngs=rngs)

  def __call__(self, features: jax.Array) -> jax.Array:
    return self.linear(self.norm(features.astype(jnp.float32)))


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """uint8 [..., C] (or float in [0, 1]) -> float32 standardised per channel, on the device.

  Images travel from the host as uint8 (4x less transfer than float32).
  """
  if images.dtype == jnp.uint8:
    images = images.astype(jnp.float32) / 255.0
  return (images - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def prepare_views(views: jax.Array, key: jax.Array, mean, std,
                  device_augment: Augment | None) -> jax.Array:
  """uint8 views [N, V, H, W, C] -> normalised float32, photometric ops first if done on device."""
  if device_augment is not None:
    views = device_augment_lib.augment_views(views, key, device_augment)
  return normalize(views, mean, std)


def _embed_views(model, views: jax.Array) -> tuple[jax.Array, jax.Array]:
  """[N, V, H, W, C] -> (pooled [N, V, D], probe features [N, V, F]) through the backbone."""
  n, v = views.shape[:2]
  pooled, features = model.backbone(views.reshape((n * v,) + views.shape[2:]))
  return pooled.reshape(n, v, -1), features.reshape(n, v, -1)


def lejepa_objective(model, batch: Mapping[str, jax.Array], key: jax.Array,
                     loss_config: Mapping[str, Any], num_global: int, mean, std,
                     device_augment: Augment | None = None):
  """Loss and its parts for a multi-crop batch; also returns the global views' probe features.

  `key` draws the SIGReg directions; on-device augmentation (if any) uses keys folded from it.
  """
  views = lambda name, i: prepare_views(  # noqa: E731
      batch[name], jax.random.fold_in(key, i), mean, std, device_augment)
  pooled_g, features_g = _embed_views(model, views("global", 1))
  pooled = pooled_g
  if batch["local"].shape[1]:
    pooled_l, _ = _embed_views(model, views("local", 2))
    pooled = jnp.concatenate([pooled_g, pooled_l], axis=1)
  z = model.projector(pooled)  # [N, V, K]: one BatchNorm over every view of the batch
  loss, parts = losses.lejepa_loss(z, key, num_global=num_global, **loss_config)
  return loss, (parts, features_g)


def _accumulated_grads(model, batch, key, objective, num_micro: int):
  """Mean gradients over `num_micro` micro-batches of the batch (unrolled; BatchNorm statistics update
  after each). SIGReg and BatchNorm then see micro-batches, which changes the objective: use it only
  when the batch does not fit, and prefer more devices."""
  n = batch["label"].shape[0]
  if n % num_micro:
    raise ValueError(f"grad_accum_steps={num_micro} must divide the batch size {n}.")
  size = n // num_micro
  total_grads, outs = None, []
  for i in range(num_micro):
    micro = jax.tree.map(lambda x: x[i * size:(i + 1) * size], batch)
    out, grads = nnx.value_and_grad(lambda m: objective(m, micro, jax.random.fold_in(key, 100 + i)),
                                    has_aux=True)(model)
    total_grads = grads if total_grads is None else jax.tree.map(jnp.add, total_grads, grads)
    outs.append(out)
  (loss, (parts, _)), features = outs[0], [o[1][1] for o in outs]
  loss = jnp.mean(jnp.stack([o[0] for o in outs]))
  parts = {k: jnp.mean(jnp.stack([o[1][0][k] for o in outs])) for k in parts}
  grads = jax.tree.map(lambda g: g / num_micro, total_grads)
  return (loss, (parts, jnp.concatenate(features, axis=0))), grads


def train_step(graphdef, state, batch, key, *, loss_config, num_global, mean, std,
               device_augment: Augment | None = None, grad_accum_steps: int = 1,
               tx: optax.GradientTransformation | None = None):
  """One step: (state, metrics). `key` is this step's key (fold_in(seed key, step)).

  `tx` replaces the encoder optimizer's transformation for this step; it must keep the state's
  structure (e.g. `train.make_optimizer` with traced per-member lr / weight decay under vmap).
  """
  model, optimizer, probe, probe_optimizer = nnx.merge(graphdef, state)
  model.train()
  if tx is not None:
    optimizer.tx = tx

  def objective(model, batch, key):
    return lejepa_objective(model, batch, key, loss_config, num_global, mean, std, device_augment)

  if grad_accum_steps > 1:
    (loss, (parts, features)), grads = _accumulated_grads(model, batch, key, objective,
                                                          grad_accum_steps)
  else:
    (loss, (parts, features)), grads = nnx.value_and_grad(
        lambda m: objective(m, batch, key), has_aux=True)(model)
  optimizer.update(model, grads)

  # The probe reads stop-gradient features of the first global view: labels never reach the encoder.
  features = jax.lax.stop_gradient(features[:, 0])

  def probe_loss_fn(probe):
    logits = probe(features)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean(), logits

  (probe_loss, logits), probe_grads = nnx.value_and_grad(probe_loss_fn, has_aux=True)(probe)
  probe_optimizer.update(probe, probe_grads)
  metrics = {"loss": loss, "pred": parts["pred"], "sigreg": parts["sigreg"],
             "probe_loss": probe_loss,
             "probe_accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
             "grad_norm": optax.tree.norm(grads),
             "param_norm": optax.tree.norm(nnx.state(model, nnx.Param))}
  return nnx.state((model, optimizer, probe, probe_optimizer)), metrics
