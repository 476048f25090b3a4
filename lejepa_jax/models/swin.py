"""Swin Transformer (Liu et al. 2021): windowed attention with relative position biases, shifted
windows every other block, patch merging between stages.

Defined as timm's `swin_transformer.py` (Swin-T: `swin_tiny_patch4_window7_224`, 27.5M parameters),
the network of the paper's Table 5 row "swin_tiny": a 4x4 stride-4 patch embedding + LayerNorm;
stages of pre-norm blocks whose attention runs inside non-overlapping windows, the odd blocks on
windows shifted by half a window (a cyclic roll, with a mask keeping tokens that were not
neighbours apart); a 2x2 patch merging (LayerNorm of the 4 concatenated tokens, then a bias-free
Linear to twice the width) at the start of stages 2-4; a final LayerNorm over every token, then the
spatial mean. LayerNorm epsilon 1e-5 and exact GELU, as timm.

The windows are fixed when the model is built, from `img_size`: a stage whose map is not larger
than the window attends over the whole map and never shifts (timm's rule). Maps that do not divide
into windows are zero-padded to whole windows, and odd maps to even sides before a merging, as timm
does.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lejepa_jax.models import layers
from lejepa_jax.models.vit import Mlp


@dataclasses.dataclass(frozen=True)
class SwinSize:
  embed_dim: int
  depths: tuple[int, ...]
  num_heads: tuple[int, ...]
  window: int
  patch: int = 4


SWIN_SIZES = {
  "mini": SwinSize(16, (2, 2), (1, 2), 4),  # not a standard size: for tests on 32 px images
  "tiny": SwinSize(96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
  "small": SwinSize(96, (2, 2, 18, 2), (3, 6, 12, 24), 7),
  "base": SwinSize(128, (2, 2, 18, 2), (4, 8, 16, 32), 7),
}
LAYER_NORM_EPS = 1e-5  # PyTorch's LayerNorm default, which timm's Swin uses
SHIFT_MASK = -100.0  # the score added between tokens of a shifted window that were not neighbours


def relative_position_index(window: int) -> np.ndarray:
  """[w*w, w*w] index into the (2w - 1)^2 bias table of each (query, key) pair's offset."""
  coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
  offsets = coords[:, :, None] - coords[:, None, :] + window - 1  # [2, w*w, w*w], from 0
  return offsets[0] * (2 * window - 1) + offsets[1]


def shift_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
  """[num_windows, w*w, w*w] additive scores for a map rolled by -shift: 0 between tokens that came
  from the same region of the unrolled map, SHIFT_MASK between tokens the roll brought together."""
  regions = np.zeros((height, width), np.int32)
  bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
  for i, rows in enumerate(bounds):
    for j, cols in enumerate(bounds):
      regions[rows, cols] = 3 * i + j
  windows = partition(regions[None, :, :, None], window)[..., 0]  # [num_windows, w*w]
  return np.where(windows[:, :, None] == windows[:, None, :], 0.0, SHIFT_MASK).astype(np.float32)


def partition(x, window: int):
  """[N, H, W, C] -> [N * (H/w) * (W/w), w*w, C], windows in row-major order (NumPy or JAX)."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // window, window, w // window, window, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, window * window, c)


def unpartition(windows: jax.Array, window: int, height: int, width: int) -> jax.Array:
  """The inverse of `partition`: [N * (H/w) * (W/w), w*w, C] -> [N, H, W, C]."""
  c = windows.shape[-1]
  x = windows.reshape(-1, height // window, width // window, window, window, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


class WindowAttention(nnx.Module):
  """Multi-head attention inside each window, with a learned bias per relative offset and head."""

  def __init__(self, width: int, num_heads: int, window: int, *, dtype, rngs: nnx.Rngs):
    self.num_heads, self.window = num_heads, window
    self.qkv = layers.dense(width, 3 * width, ("embed", "heads"), dtype=dtype, rngs=rngs)
    self.proj = layers.dense(width, width, ("heads", "embed"), dtype=dtype, rngs=rngs)
    table_shape = ((2 * window - 1) ** 2, num_heads)
    self.relative_position_bias_table = nnx.Param(
      layers.TRUNC_NORMAL(rngs.params(), table_shape, jnp.float32), out_sharding=(None, None)
    )

  def __call__(self, x: jax.Array, mask: np.ndarray | None) -> jax.Array:
    """x [B, T, W] (B = windows x images, T = w*w tokens), mask [num_windows, T, T] or None."""
    b, t, w = x.shape
    qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, w // self.num_heads)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # [B, H, T, Dh]
    scores = ((q * q.shape[-1] ** -0.5) @ k.swapaxes(-1, -2)).astype(jnp.float32)
    table = self.relative_position_bias_table[...]
    bias = table[relative_position_index(self.window)].transpose(2, 0, 1)  # [H, T, T]
    scores = scores + bias
    if mask is not None:  # the same mask for the windows of every image
      num_windows = mask.shape[0]
      scores = scores.reshape(-1, num_windows, self.num_heads, t, t) + mask[None, :, None]
      scores = scores.reshape(b, self.num_heads, t, t)
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return self.proj((weights @ v).transpose(0, 2, 1, 3).reshape(b, t, w))


class SwinBlock(nnx.Module):
  """Pre-norm block: (shifted) window attention and an MLP, each with stochastic depth."""

  def __init__(
    self, width: int, num_heads: int, window: int, shift: int, drop_path: float, *, dtype,
    rngs: nnx.Rngs,
  ):  # fmt: skip
    self.window, self.shift = window, shift
    self.norm1 = layers.layer_norm(width, epsilon=LAYER_NORM_EPS, dtype=dtype, rngs=rngs)
    self.attn = WindowAttention(width, num_heads, window, dtype=dtype, rngs=rngs)
    self.norm2 = layers.layer_norm(width, epsilon=LAYER_NORM_EPS, dtype=dtype, rngs=rngs)
    self.mlp = Mlp(width, 4 * width, dtype=dtype, rngs=rngs)
    self.drop_path = layers.DropPath(drop_path, rngs=rngs)
    self.drop_rate = drop_path

  def _attend(self, x: jax.Array) -> jax.Array:
    """Attention within windows of the (rolled) map, zero-padded at the bottom and right to whole
    windows and cropped back, as timm (whose padded tokens are not masked as keys either)."""
    n, h, w, c = x.shape
    if self.shift:
      x = jnp.roll(x, (-self.shift, -self.shift), axis=(1, 2))
    hp, wp = -(-h // self.window) * self.window, -(-w // self.window) * self.window
    x = jnp.pad(x, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
    mask = shift_mask(hp, wp, self.window, self.shift) if self.shift else None
    y = unpartition(self.attn(partition(x, self.window), mask), self.window, hp, wp)[:, :h, :w]
    return jnp.roll(y, (self.shift, self.shift), axis=(1, 2)) if self.shift else y

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.drop_path(self._attend(self.norm1(x)), self.drop_rate)
    return x + self.drop_path(self.mlp(self.norm2(x)), self.drop_rate)


class PatchMerging(nnx.Module):
  """[N, H, W, C] -> [N, H/2, W/2, 2C]: each 2x2 group of tokens concatenated, normalised, projected."""

  def __init__(self, width: int, *, dtype, rngs: nnx.Rngs):
    self.norm = layers.layer_norm(4 * width, epsilon=LAYER_NORM_EPS, dtype=dtype, rngs=rngs)
    self.reduction = layers.dense(
      4 * width, 2 * width, ("mlp", "embed"), use_bias=False, dtype=dtype, rngs=rngs
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.pad(x, ((0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0)))  # odd sides, as timm
    n, h, w, c = x.shape
    # (row offset, column offset) order (0,0), (1,0), (0,1), (1,1), as timm and the original Swin
    x = (
      x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 4, 2, 5).reshape(n, h // 2, w // 2, 4 * c)
    )
    return self.reduction(self.norm(x))


class Swin(layers.PooledConvNet):
  """Swin Transformer backbone returning the spatial mean of its final LayerNorm'd tokens.

  Inputs of any side that is a multiple of the patch run, as in timm: maps pad to whole windows and
  to even sides before each merging; the windows and shifts stay those laid out for `img_size`.

  Args:
    variant: one of SWIN_SIZES ('tiny' is Swin-T).
    img_size: the image side the windows are laid out for (224 for the published models).
    in_channels: image channels.
    drop_path: stochastic-depth rate of the last block (linearly increasing from 0).
    dtype: computation dtype (parameters stay float32).
  """

  @layers.lazily_sharded
  def __init__(
    self,
    variant: str = "tiny",
    *,
    img_size: int = 224,
    in_channels: int = 3,
    drop_path: float = 0.0,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    if variant not in SWIN_SIZES:
      raise ValueError(f"Unknown Swin variant {variant!r}: expected one of {list(SWIN_SIZES)}.")
    size = SWIN_SIZES[variant]
    self.variant, self.img_size, self.in_channels, self.dtype = variant, img_size, in_channels, dtype
    self.patch = size.patch
    self.patch_embed = layers.conv(
      in_channels, size.embed_dim, size.patch, strides=size.patch, padding="VALID", use_bias=True,
      dtype=dtype, rngs=rngs, kernel_init=layers.TRUNC_NORMAL,
    )  # fmt: skip
    self.patch_norm = layers.layer_norm(size.embed_dim, epsilon=LAYER_NORM_EPS, dtype=dtype, rngs=rngs)
    rates = iter(layers.drop_path_rates(drop_path, sum(size.depths)))
    side, width, stages = img_size // size.patch, size.embed_dim, []
    for i, (depth, heads) in enumerate(zip(size.depths, size.num_heads)):
      stage = []
      if i:
        stage.append(PatchMerging(width, dtype=dtype, rngs=rngs))
        side, width = (side + 1) // 2, 2 * width
      window = min(size.window, side)  # a map no larger than the window is one window, unshifted
      shift = window // 2 if side > window else 0
      for b in range(depth):
        stage.append(
          SwinBlock(width, heads, window, shift if b % 2 else 0, next(rates), dtype=dtype, rngs=rngs)
        )
      stages.append(nnx.List(stage))
    self.stages = nnx.List(stages)
    self.norm = layers.layer_norm(width, epsilon=LAYER_NORM_EPS, dtype=dtype, rngs=rngs)
    self.out_dim = width

  def stage_maps(self, images: jax.Array) -> list[jax.Array]:
    """images [N, H, W, C] -> each stage's tokens as a map, [N, H / 4, W / 4, embed_dim] to
    [N, H / 32, W / 32, out_dim] (sides rounded up), the last after the final LayerNorm (timm's
    `forward_features`); `pool` averages it."""
    layers.check_images(images, self.in_channels, "Swin", multiple_of=self.patch)
    x = self.patch_norm(self.patch_embed(images.astype(self.dtype)))
    maps = []
    for stage in self.stages:
      for module in stage:
        x = module(x)
      maps.append(x)
    maps[-1] = self.norm(x)
    return maps
