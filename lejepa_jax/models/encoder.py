"""The encoder LeJEPA trains: a backbone and an MLP projector (Linear-BN-ReLU x2, Linear)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lejepa_jax.models import layers


class Projector(nnx.Module):
  """MLP projector: (Linear-BN-ReLU) x (num_layers - 1), then Linear; BN over all leading axes.

  Args:
    in_dim: input features.
    hidden_dim: width of the hidden layers (the paper: 2048).
    out_dim: embedding size K that SIGReg and the prediction term see (the paper: 64-512).
    num_layers: number of Linear layers (the paper: 3).
  """

  @layers.lazily_sharded
  def __init__(
    self,
    in_dim: int,
    *,
    hidden_dim: int = 2048,
    out_dim: int = 128,
    num_layers: int = 3,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    if num_layers < 1:
      raise ValueError(f"projector.num_layers must be >= 1, got {num_layers}.")
    dims = [in_dim] + [hidden_dim] * (num_layers - 1)
    pairs = list(zip(dims[:-1], dims[1:]))
    self.linears = nnx.List(
      [layers.dense(a, b, ("embed", "mlp"), dtype=dtype, rngs=rngs) for a, b in pairs]
    )
    self.norms = nnx.List([layers.batch_norm(b, dtype=dtype, rngs=rngs) for _, b in pairs])
    self.out = layers.dense(dims[-1], out_dim, ("mlp", "embed"), dtype=dtype, rngs=rngs)
    self.out_dim = out_dim

  def __call__(self, x: jax.Array) -> jax.Array:
    """x [..., in_dim] -> [..., out_dim]; the BatchNorm statistics cover every leading axis."""
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    for linear, norm in zip(self.linears, self.norms):
      x = jax.nn.relu(norm(linear(x)))
    return self.out(x).reshape(lead + (self.out_dim,))


class Encoder(nnx.Module):
  """Backbone plus optional projector.

  `__call__(images)` returns (features, projections): the features probes read and the projector
  outputs the loss sees; `embed(images)` returns the features only.
  """

  @layers.lazily_sharded
  def __init__(self, backbone: nnx.Module, projector: Projector | None):
    self.backbone = backbone
    self.projector = projector

  @property
  def feature_dim(self) -> int:
    return self.backbone.feature_dim

  def embed(self, images: jax.Array) -> jax.Array:
    """images [N, H, W, C] -> probe features [N, feature_dim]."""
    return self.backbone(images)[1]

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """images [N, H, W, C] -> (features [N, feature_dim], projections [N, out_dim] or None)."""
    pooled, features = self.backbone(images)
    return features, None if self.projector is None else self.projector(pooled)
