"""The online linear probe trained beside the encoder (and the evaluation's fine-tuning head)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lejepa_jax.models import layers


class LinearProbe(nnx.Module):
  """LayerNorm + Linear on stop-gradient backbone features, trained alongside the encoder."""

  @layers.lazily_sharded
  def __init__(self, in_dim: int, num_classes: int, *, rngs: nnx.Rngs):
    self.norm = nnx.LayerNorm(in_dim, rngs=rngs)
    self.linear = nnx.Linear(in_dim, num_classes, rngs=rngs)

  def __call__(self, features: jax.Array) -> jax.Array:
    return self.linear(self.norm(features.astype(jnp.float32)))
