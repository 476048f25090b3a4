"""Vision Transformer (pre-norm, CLS token, learned interpolated position embeddings, registers)."""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
from flax import nnx

from lejepa_jax.models import layers


@dataclasses.dataclass(frozen=True)
class ViTSize:
  width: int
  depth: int
  mlp_dim: int
  num_heads: int


# The standard definitions (Dosovitskiy et al. 2021; Touvron et al. 2021; Zhai et al. 2022 for g).
VIT_SIZES = {
  "Mi": ViTSize(64, 2, 128, 2),  # micro: not a standard size; for tests and CPU smoke runs
  "Ti6": ViTSize(192, 6, 768, 3),  # ViT-Ti at half depth: not a standard size; for small CPUs
  "Ti": ViTSize(192, 12, 768, 3),
  "S": ViTSize(384, 12, 1536, 6),
  "B": ViTSize(768, 12, 3072, 12),
  "L": ViTSize(1024, 24, 4096, 16),
  "H": ViTSize(1280, 32, 5120, 16),
  "g": ViTSize(1408, 40, 6144, 16),
}
# 8, 14, 16: the published models' patches; 4 and 7 for 28-32 px images (Fashion-MNIST, CIFAR).
PATCH_SIZES = (4, 7, 8, 14, 16)


def parse_variant(variant: str) -> tuple[ViTSize, int]:
  """'L/14' -> (the ViT-L size, patch 14)."""
  match = re.fullmatch(r"(\w+)/(\d+)", variant)
  if not match or match.group(1) not in VIT_SIZES or int(match.group(2)) not in PATCH_SIZES:
    raise ValueError(
      f"Unknown ViT variant {variant!r}: expected '<size>/<patch>' with size in "
      f"{list(VIT_SIZES)} and patch in {list(PATCH_SIZES)}, e.g. 'S/16' or 'L/14'."
    )
  return VIT_SIZES[match.group(1)], int(match.group(2))


def resize_position_embeddings(pos: jax.Array, grid: int, grid_h: int, grid_w: int) -> jax.Array:
  """Position embeddings of a grid x grid patch grid, [1, grid * grid, W], resized bicubically to
  grid_h x grid_w: [1, grid_h * grid_w, W] (unchanged at the native grid)."""
  if (grid_h, grid_w) == (grid, grid):
    return pos
  width = pos.shape[-1]
  pos = pos.reshape(grid, grid, width)
  pos = jax.image.resize(pos, (grid_h, grid_w, width), method="bicubic", antialias=False)
  return pos.reshape(1, grid_h * grid_w, width)


class Attention(nnx.Module):
  """Multi-head self-attention over tokens [N, T, W] (fused QKV projection)."""

  def __init__(self, width: int, num_heads: int, *, dtype, rngs: nnx.Rngs):
    self.num_heads = num_heads
    self.qkv = layers.dense(width, 3 * width, ("embed", "heads"), dtype=dtype, rngs=rngs)
    self.out = layers.dense(width, width, ("heads", "embed"), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    n, t, w = x.shape
    qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, w // self.num_heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [N, T, H, Dh]
    return self.out(attention(q, k, v).reshape(n, t, w))


def attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """Softmax attention, [N, T, H, Dh] -> [N, T, H, Dh], its form chosen per platform when the
  program is lowered (`jax.lax.platform_dependent`), so a program exported from a CPU host for
  GPUs or TPUs carries their form.

  GPU/TPU: `jax.nn.dot_product_attention` (fused kernels where the platform has them). CPU:
  `head_major_attention`.
  """
  return jax.lax.platform_dependent(
    q, k, v, cpu=head_major_attention, default=jax.nn.dot_product_attention
  )


def head_major_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """Softmax attention as head-major batched matmuls: XLA's CPU backend runs them about 2x faster
  than `jax.nn.dot_product_attention`'s layout. The softmax is spelled out with the row maximum
  outside the gradient (softmax does not depend on it, so its gradient is exactly zero): 13% faster
  forward + backward than `jax.nn.softmax` there."""
  q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))  # [N, H, T, Dh]
  scores = ((q * q.shape[-1] ** -0.5) @ k.swapaxes(-1, -2)).astype(jnp.float32)
  exp = jnp.exp(scores - jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True)))
  weights = (exp / exp.sum(axis=-1, keepdims=True)).astype(v.dtype)
  return (weights @ v).transpose(0, 2, 1, 3)


class Mlp(nnx.Module):
  def __init__(self, width: int, hidden: int, *, dtype, rngs: nnx.Rngs):
    self.fc1 = layers.dense(width, hidden, ("embed", "mlp"), dtype=dtype, rngs=rngs)
    self.fc2 = layers.dense(hidden, width, ("mlp", "embed"), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    hidden = self.fc1(x)
    # GELU evaluated in float32 whatever the compute dtype, on every backend (elementwise, so cheap
    # anywhere; more exact): on the CPU the bfloat16 form ran 2.5x slower forward + backward.
    activated = jax.nn.gelu(hidden.astype(jnp.float32), approximate=False)
    return self.fc2(activated.astype(hidden.dtype))


class Block(nnx.Module):
  """Pre-norm transformer block with stochastic depth on both residual branches."""

  def __init__(self, size: ViTSize, drop_path: float, *, dtype, rngs: nnx.Rngs):
    self.norm1 = layers.layer_norm(size.width, dtype=dtype, rngs=rngs)
    self.attn = Attention(size.width, size.num_heads, dtype=dtype, rngs=rngs)
    self.norm2 = layers.layer_norm(size.width, dtype=dtype, rngs=rngs)
    self.mlp = Mlp(size.width, size.mlp_dim, dtype=dtype, rngs=rngs)
    self.drop_path = layers.DropPath(drop_path, rngs=rngs)

  def __call__(self, x: jax.Array, drop_rate: float | jax.Array) -> jax.Array:
    """x [N, T, W] -> [N, T, W]; `drop_rate` is the block's stochastic-depth rate (the rate it was
    built for: given here, not held, so the blocks of a ViT share one graph)."""
    x = x + self.drop_path(self.attn(self.norm1(x)), drop_rate)
    return x + self.drop_path(self.mlp(self.norm2(x)), drop_rate)


class ViT(nnx.Module):
  """Vision Transformer backbone.

  One model takes every crop size of a step (e.g. 224 px global and 96 px local views): the learned
  position embeddings, defined on the `img_size` grid, are resized bicubically to each input's grid.

  Args:
    variant: '<size>/<patch>' with size in Ti, S, B, L, H, g and patch in 8, 14, 16.
    img_size: side of the grid the position embeddings are defined on (in pixels).
    in_channels: image channels.
    class_token: prepend a CLS token; without it features are the mean patch token.
    num_registers: extra register tokens (no position embedding), dropped from the outputs.
    drop_path: stochastic-depth rate of the last block (linearly increasing from 0).
    dtype: computation dtype (parameters stay float32).
    remat: activation rematerialisation per block, a key of `layers.REMAT_POLICIES` ("none", "full",
      "dots_saveable", "dots_with_no_batch_dims_saveable"): less memory, more compute, same values.
  """

  @layers.lazily_sharded
  def __init__(
    self,
    variant: str = "S/16",
    *,
    img_size: int = 224,
    in_channels: int = 3,
    class_token: bool = True,
    num_registers: int = 0,
    drop_path: float = 0.0,
    dtype=jnp.float32,
    remat: str = "none",
    rngs: nnx.Rngs,
  ):
    size, patch = parse_variant(variant)
    layers.check_remat(remat)
    self.remat = remat
    self.variant, self.patch, self.width, self.in_channels = variant, patch, size.width, in_channels
    self.grid = img_size // patch
    self.num_prefix = int(class_token) + num_registers
    self.class_token, self.num_registers = class_token, num_registers
    self.dtype = dtype
    self.patch_embed = layers.dense(
      patch * patch * in_channels, size.width, ("patch", "embed"), dtype=dtype, rngs=rngs
    )
    init = layers.TRUNC_NORMAL
    self.pos_embed = nnx.Param(
      init(rngs.params(), (1, self.grid**2, size.width)), out_sharding=(None, None, "embed")
    )
    self.cls = (
      nnx.Param(init(rngs.params(), (1, 1, size.width)), out_sharding=(None, None, "embed"))
      if class_token
      else None
    )
    self.registers = (
      nnx.Param(init(rngs.params(), (1, num_registers, size.width)), out_sharding=(None, None, "embed"))
      if num_registers
      else None
    )
    self.drop_rates = tuple(layers.drop_path_rates(drop_path, size.depth))
    self.blocks = nnx.List([Block(size, rate, dtype=dtype, rngs=rngs) for rate in self.drop_rates])
    self.norm = layers.layer_norm(size.width, dtype=dtype, rngs=rngs)

  @property
  def feature_dim(self) -> int:
    """Size of the probe features from :meth:`embed`: two concatenated tokens of `width`."""
    return 2 * self.width

  @property
  def pooled_dim(self) -> int:
    return self.width

  def _position_embeddings(self, grid_h: int, grid_w: int) -> jax.Array:
    return resize_position_embeddings(self.pos_embed[...], self.grid, grid_h, grid_w)

  def _tokens(self, images: jax.Array) -> tuple[jax.Array, tuple[int, int]]:
    """Patchify and embed: [N, H, W, C] -> tokens [N, prefix + h * w, width]."""
    layers.check_images(images, self.in_channels, "ViT", multiple_of=self.patch)
    n, height, width, c = images.shape
    gh, gw, p = height // self.patch, width // self.patch, self.patch
    patches = images.reshape(n, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, gh * gw, -1)
    x = self.patch_embed(patches.astype(self.dtype)) + self._position_embeddings(gh, gw).astype(
      self.dtype
    )
    prefix = []
    if self.cls is not None:
      prefix.append(jnp.broadcast_to(self.cls[...].astype(self.dtype), (n, 1, self.width)))
    if self.registers is not None:
      prefix.append(
        jnp.broadcast_to(self.registers[...].astype(self.dtype), (n, self.num_registers, self.width))
      )
    return jnp.concatenate(prefix + [x], axis=1), (gh, gw)

  def _block(self, index: int, x: jax.Array) -> jax.Array:
    """Block `index`, rematerialised per `self.remat` (backward recomputes what was not kept)."""
    return layers.remat_call(self.blocks[index], x, self.remat, self.drop_rates[index])

  def _summary(self, tokens: jax.Array) -> jax.Array:
    """CLS token after the final norm, or the mean patch token without a CLS: [N, width]."""
    normed = self.norm(tokens)
    return normed[:, 0] if self.class_token else jnp.mean(normed[:, self.num_prefix :], axis=1)

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """images [N, H, W, C] -> (pooled [N, width] for the projector, features [N, 2 width] for probes).

    Probe features are the summary tokens (CLS, or mean patch token) of the last two blocks, each
    after the final LayerNorm, concatenated (the paper's linear-probe protocol).
    """
    x, _ = self._tokens(images)
    previous = x
    for index in range(len(self.blocks)):
      previous, x = x, self._block(index, x)
    pooled = self._summary(x)
    return pooled, jnp.concatenate([self._summary(previous), pooled], axis=-1)

  def stage_maps(self, images: jax.Array) -> list[jax.Array]:
    """Every block's patch tokens after the final norm, as maps: [N, H, W, C] ->
    [[N, H / patch, W / patch, width]] * depth, first block to last."""
    x, (gh, gw) = self._tokens(images)
    maps = []
    for index in range(len(self.blocks)):
      x = self._block(index, x)
      maps.append(self.norm(x)[:, self.num_prefix :].reshape(x.shape[0], gh, gw, self.width))
    return maps

  def patch_features(self, images: jax.Array) -> jax.Array:
    """Final normalised patch tokens as a map: [N, H, W, C] -> [N, H / patch, W / patch, width]."""
    return self.stage_maps(images)[-1]
