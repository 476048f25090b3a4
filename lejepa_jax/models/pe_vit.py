"""The Perception Encoder ViT (Bolya et al. 2025) of the paper's Figure 9,
`vit_pe_core_tiny_patch16_384`, defined as timm defines it (its `Eva` class with the PE options).

Against lejepa_jax's ViT: a bias-free patch embedding; learned absolute position embeddings that
cover the CLS token too; a LayerNorm before the first block; 2-D rotary position embeddings on the
queries and keys of the patch tokens in every block (timm's "cat" RoPE: interleaved pairs, x and y
frequencies concatenated, grid positions 1..n rescaled to a 24 x 24 reference grid); LayerNorm
epsilon 1e-5; and as its pooled features timm's attention pooling (`AttentionPoolLatent`: one
learned query, 8 heads, over every final-normed token, then a residual LayerNorm + 4x GELU MLP).
The projector and the probes read those pooled features, as for the Figure 9 ConvNets. Variable
names follow timm's, so its state_dict maps one to one.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lejepa_jax.models import layers, vit

LAYER_NORM_EPS = 1e-5
ROPE_REFERENCE_GRID = 24  # timm's ref_feat_shape: positions are rescaled to this grid
ROPE_GRID_OFFSET = 1.0  # timm's rope_grid_offset: positions count from 1
ROPE_TEMPERATURE = 10000.0
POOL_HEADS = 8
POOL_MLP_RATIO = 4


def rope_sin_cos(grid_h: int, grid_w: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
  """timm's "cat" rotary embedding of a grid_h x grid_w patch grid: (sin, cos), each
  [grid_h * grid_w, head_dim], row-major over the grid.

  A token at row i, column j has positions x = (j + 1) / grid_w * 24 and y = (i + 1) / grid_h * 24
  ("xy" indexing, offset 1, rescaled to the reference grid). Its angles are x * f, then y * f, for
  the head_dim / 4 frequencies f_k = 10000^(-k / (head_dim / 4)); each angle serves one interleaved
  pair of channels (angles repeated twice)."""
  bands = head_dim // 4
  freqs = 1.0 / ROPE_TEMPERATURE ** (np.arange(bands, dtype=np.float64) / bands)
  x = (np.arange(grid_w) + ROPE_GRID_OFFSET) / grid_w * ROPE_REFERENCE_GRID
  y = (np.arange(grid_h) + ROPE_GRID_OFFSET) / grid_h * ROPE_REFERENCE_GRID
  xs, ys = np.meshgrid(x, y, indexing="xy")  # [grid_h, grid_w] each
  angles = np.concatenate([xs[..., None] * freqs, ys[..., None] * freqs], axis=-1)
  angles = np.repeat(angles.reshape(grid_h * grid_w, 2 * bands), 2, axis=-1)
  return np.sin(angles).astype(np.float32), np.cos(angles).astype(np.float32)


def apply_rope(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
  """Rotates each interleaved channel pair (x0, x1) of x [N, T, H, Dh] by its angle:
  (x0 cos - x1 sin, x1 cos + x0 sin); sin, cos [T, Dh]."""
  pairs = x.reshape(x.shape[:-1] + (-1, 2))
  rotated = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
  out = x * cos[:, None].astype(jnp.float32) + rotated * sin[:, None].astype(jnp.float32)
  return out.astype(x.dtype)


class RopeAttention(nnx.Module):
  """Multi-head self-attention (fused QKV) with RoPE on the queries and keys of the patch tokens
  (the `num_prefix` tokens before them are not rotated)."""

  def __init__(self, width: int, num_heads: int, num_prefix: int, *, dtype, rngs: nnx.Rngs):
    self.num_heads, self.num_prefix = num_heads, num_prefix
    self.qkv = layers.dense(width, 3 * width, ("embed", "heads"), dtype=dtype, rngs=rngs)
    self.proj = layers.dense(width, width, ("heads", "embed"), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
    n, t, w = x.shape
    qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, w // self.num_heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [N, T, H, Dh]
    p = self.num_prefix
    q = jnp.concatenate([q[:, :p], apply_rope(q[:, p:], sin, cos)], axis=1)
    k = jnp.concatenate([k[:, :p], apply_rope(k[:, p:], sin, cos)], axis=1)
    return self.proj(vit.attention(q, k, v).reshape(n, t, w))


class Block(nnx.Module):
  """Pre-norm transformer block with RoPE attention and stochastic depth on both branches."""

  def __init__(self, size: vit.ViTSize, num_prefix: int, drop_path: float, *, dtype, rngs):
    norm = functools.partial(layers.layer_norm, epsilon=LAYER_NORM_EPS, dtype=dtype, rngs=rngs)
    self.norm1 = norm(size.width)
    self.attn = RopeAttention(size.width, size.num_heads, num_prefix, dtype=dtype, rngs=rngs)
    self.norm2 = norm(size.width)
    self.mlp = vit.Mlp(size.width, size.mlp_dim, dtype=dtype, rngs=rngs)
    self.drop_path = layers.DropPath(drop_path, rngs=rngs)
    self.drop_rate = drop_path

  def __call__(self, x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
    x = x + self.drop_path(self.attn(self.norm1(x), sin, cos), self.drop_rate)
    return x + self.drop_path(self.mlp(self.norm2(x)), self.drop_rate)


class AttentionPool(nnx.Module):
  """One learned query attending over every token, then a residual LayerNorm + MLP: tokens
  [N, T, W] -> [N, W] (timm's AttentionPoolLatent with one latent)."""

  def __init__(self, width: int, num_heads: int, mlp_ratio: int, *, dtype, rngs: nnx.Rngs):
    self.num_heads = num_heads
    self.latent = nnx.Param(
      nnx.initializers.truncated_normal(width**-0.5)(rngs.params(), (1, 1, width)),
      out_sharding=(None, None, "embed"),
    )
    self.q = layers.dense(width, width, ("embed", "heads"), dtype=dtype, rngs=rngs)
    self.kv = layers.dense(width, 2 * width, ("embed", "heads"), dtype=dtype, rngs=rngs)
    self.proj = layers.dense(width, width, ("heads", "embed"), dtype=dtype, rngs=rngs)
    self.norm = layers.layer_norm(width, epsilon=LAYER_NORM_EPS, dtype=dtype, rngs=rngs)
    self.mlp = vit.Mlp(width, mlp_ratio * width, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    n, t, w = x.shape
    heads = self.num_heads
    latent = jnp.broadcast_to(self.latent[...].astype(x.dtype), (n, 1, w))
    q = self.q(latent).reshape(n, 1, heads, w // heads)
    kv = self.kv(x).reshape(n, t, 2, heads, w // heads)
    pooled = self.proj(vit.attention(q, kv[:, :, 0], kv[:, :, 1]).reshape(n, 1, w))
    return (pooled + self.mlp(self.norm(pooled)))[:, 0]


class PerceptionViT(nnx.Module):
  """The Perception Encoder ViT backbone; (pooled, features) are both the attention-pooled vector.

  One model takes every crop size of a step: the absolute position embeddings of the patches,
  defined on the `img_size` grid, are resized bicubically to each input's grid (the CLS token's
  is kept), and the rotary embeddings are computed for each grid.

  Args:
    variant: '<size>/<patch>' as for the ViT (timm's vit_pe_core_tiny_patch16_384: 'Ti/16').
    img_size: side of the grid the position embeddings are defined on (in pixels; timm's model
      name says 384, the paper's views are 224).
    in_channels: image channels.
    drop_path: stochastic-depth rate of the last block (linearly increasing from 0).
    dtype: computation dtype (parameters stay float32).
  """

  @layers.lazily_sharded
  def __init__(
    self,
    variant: str = "Ti/16",
    *,
    img_size: int = 224,
    in_channels: int = 3,
    drop_path: float = 0.0,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    size, patch = vit.parse_variant(variant)
    self.variant, self.patch, self.width, self.in_channels = variant, patch, size.width, in_channels
    self.num_heads, self.grid, self.dtype = size.num_heads, img_size // patch, dtype
    init = layers.TRUNC_NORMAL
    self.patch_embed = _PatchEmbed(in_channels, size.width, patch, dtype=dtype, rngs=rngs)
    self.cls_token = nnx.Param(
      init(rngs.params(), (1, 1, size.width)), out_sharding=(None, None, "embed")
    )
    self.pos_embed = nnx.Param(
      init(rngs.params(), (1, 1 + self.grid**2, size.width)), out_sharding=(None, None, "embed")
    )
    norm = functools.partial(layers.layer_norm, epsilon=LAYER_NORM_EPS, dtype=dtype, rngs=rngs)
    self.norm_pre = norm(size.width)
    self.blocks = nnx.List(
      [
        Block(size, 1, rate, dtype=dtype, rngs=rngs)
        for rate in layers.drop_path_rates(drop_path, size.depth)
      ]
    )
    self.norm = norm(size.width)
    self.attn_pool = AttentionPool(size.width, POOL_HEADS, POOL_MLP_RATIO, dtype=dtype, rngs=rngs)

  @property
  def feature_dim(self) -> int:
    return self.width

  @property
  def pooled_dim(self) -> int:
    return self.width

  def _position_embeddings(self, grid_h: int, grid_w: int) -> jax.Array:
    """[1, 1 + grid_h * grid_w, width]: the CLS token's, then the patches' resized to the grid."""
    pos = self.pos_embed[...]
    patches = vit.resize_position_embeddings(pos[:, 1:], self.grid, grid_h, grid_w)
    return jnp.concatenate([pos[:, :1], patches], axis=1)

  def _embed(self, images: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array], int, int]:
    """images [N, H, W, C] -> (the first block's input [N, 1 + h * w, width], the rotary (sin, cos)
    [h * w, head_dim] of the h x w patch grid, h, w)."""
    layers.check_images(images, self.in_channels, "PerceptionViT", multiple_of=self.patch)
    patches = self.patch_embed(images.astype(self.dtype))  # [N, h, w, width]
    n, gh, gw, _ = patches.shape
    cls = jnp.broadcast_to(self.cls_token[...].astype(self.dtype), (n, 1, self.width))
    x = jnp.concatenate([cls, patches.reshape(n, gh * gw, self.width)], axis=1)
    x = self.norm_pre(x + self._position_embeddings(gh, gw).astype(self.dtype))
    sin, cos = rope_sin_cos(gh, gw, self.width // self.num_heads)
    return x, (jnp.asarray(sin), jnp.asarray(cos)), gh, gw

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """images [N, H, W, C] -> (pooled, features), both the attention-pooled [N, width]."""
    x, rope, _, _ = self._embed(images)
    for block in self.blocks:
      x = block(x, *rope)
    pooled = self.attn_pool(self.norm(x))
    return pooled, pooled

  def stage_maps(self, images: jax.Array) -> list[jax.Array]:
    """Every block's patch tokens after the final norm, as maps: [N, H, W, C] ->
    [[N, H / patch, W / patch, width]] * depth, first block to last."""
    x, rope, gh, gw = self._embed(images)
    maps = []
    for block in self.blocks:
      x = block(x, *rope)
      maps.append(self.norm(x)[:, 1:].reshape(x.shape[0], gh, gw, self.width))
    return maps

  def patch_features(self, images: jax.Array) -> jax.Array:
    """Final normalised patch tokens as a map: [N, H, W, C] -> [N, H / patch, W / patch, width]."""
    return self.stage_maps(images)[-1]


class _PatchEmbed(nnx.Module):
  """The bias-free patchifying convolution (kernel = stride = patch):
  [N, H, W, C] -> [N, H / patch, W / patch, width]."""

  def __init__(self, in_channels: int, width: int, patch: int, *, dtype, rngs: nnx.Rngs):
    self.proj = layers.conv(
      in_channels,
      width,
      patch,
      strides=patch,
      padding="VALID",
      dtype=dtype,
      kernel_init=layers.TRUNC_NORMAL,
      rngs=rngs,
    )

  def __call__(self, images: jax.Array) -> jax.Array:
    return self.proj(images)
