"""MaxViT (Tu et al. 2022) in timm's "rw" variants of the paper's Figure 9: `maxvit_pico_rw_256`,
`maxvit_nano_rw_256` and their `maxvit_rmlp_*` forms, defined as timm defines them.

A stem (3x3 stride-2 convolution, BatchNorm + SiLU, 3x3 convolution); four stages of MaxViT blocks,
the first of each at stride 2. A block is an MBConv (BatchNorm; 1x1 expansion to 4x the input
width, BatchNorm + SiLU; strided 3x3 depthwise, BatchNorm + SiLU; squeeze-and-excitation to 1/16;
1x1 projection; a 2x2 average-pooled, 1x1-projected shortcut where it strides), then attention
within windows of side img_size / 32 and attention across a grid of the same side (each a pre-norm
transformer layer: LayerNorm, multi-head attention of 32-channel heads with relative-position
biases, LayerNorm, 4x GELU MLP). The biases are a learned table per offset (`rel_pos="bias"`) or,
for the rmlp models, a 2-layer ReLU MLP (512 hidden, dropout 0.125 in training) of the
log-scaled offsets (`rel_pos="mlp"`). The pooled features are the spatial mean of the final
LayerNorm'd map. Variable names follow timm's, so its state_dict maps one to one.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lejepa_jax.models import layers
from lejepa_jax.models.swin import relative_position_index


@dataclasses.dataclass(frozen=True)
class MaxViTSize:
  widths: tuple[int, ...]  # channels per stage
  depths: tuple[int, ...]  # blocks per stage
  stem: tuple[int, int]  # channels of the stem's two convolutions


MAXVIT_SIZES = {
  "mini": MaxViTSize((32, 32, 64, 64), (1, 1, 1, 1), (16, 32)),  # not a standard size: for tests
  "pico": MaxViTSize((32, 64, 128, 256), (2, 2, 5, 2), (24, 32)),
  "nano": MaxViTSize((64, 128, 256, 512), (1, 2, 3, 1), (32, 64)),
}
REL_POS = ("bias", "mlp")
HEAD_DIM = 32
PARTITION_RATIO = 32  # window and grid side = image side / 32
EXPANSION = 4  # the MBConv's and the MLP's widening
SE_RATIO = 1 / 16  # squeeze-and-excitation width, relative to the MBConv's expanded width
REL_POS_MLP_HIDDEN = 512
REL_POS_MLP_DROPOUT = 0.125
LAYER_NORM_EPS = 1e-6

_conv = functools.partial(layers.conv, padding=((1, 1), (1, 1)))


class SqueezeExcite(nnx.Module):
  """x * sigmoid(fc2(silu(fc1(mean over space of x)))), 1x1 convolutions with biases: timm's SEModule
  (efficientnet.SqueezeExcite computes the same under timm's EfficientNet names)."""

  def __init__(self, channels: int, reduced: int, *, dtype, rngs: nnx.Rngs):
    self.fc1 = layers.conv(channels, reduced, 1, use_bias=True, dtype=dtype, rngs=rngs)
    self.fc2 = layers.conv(reduced, channels, 1, use_bias=True, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    squeezed = jnp.mean(x, axis=(1, 2), keepdims=True)
    return x * jax.nn.sigmoid(self.fc2(jax.nn.silu(self.fc1(squeezed))))


class _Shortcut(nnx.Module):
  """2x2 average pool, then a bias-free 1x1 convolution where the width changes (timm's Downsample2d)."""

  def __init__(self, in_ch: int, out_ch: int, *, dtype, rngs: nnx.Rngs):
    self.expand = layers.conv(in_ch, out_ch, 1, dtype=dtype, rngs=rngs) if in_ch != out_ch else None

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
    return x if self.expand is None else self.expand(x)


class MBConv(nnx.Module):
  def __init__(self, in_ch: int, out_ch: int, stride: int, drop_path: float, *, dtype, rngs):
    mid = EXPANSION * in_ch  # timm's rw models expand from the input width
    norm = functools.partial(layers.batch_norm, dtype=dtype, rngs=rngs)
    self.shortcut = _Shortcut(in_ch, out_ch, dtype=dtype, rngs=rngs) if stride == 2 else None
    self.pre_norm = norm(in_ch)
    self.conv1_1x1 = layers.conv(in_ch, mid, 1, dtype=dtype, rngs=rngs)
    self.norm1 = norm(mid)
    self.conv2_kxk = _conv(mid, mid, 3, strides=stride, groups=mid, dtype=dtype, rngs=rngs)
    self.norm2 = norm(mid)
    self.se = SqueezeExcite(mid, int(SE_RATIO * mid), dtype=dtype, rngs=rngs)
    self.conv3_1x1 = layers.conv(mid, out_ch, 1, dtype=dtype, rngs=rngs)
    self.drop_path = layers.DropPath(drop_path, rngs=rngs)
    self.drop_rate = drop_path

  def __call__(self, x: jax.Array) -> jax.Array:
    shortcut = x if self.shortcut is None else self.shortcut(x)
    y = jax.nn.silu(self.norm1(self.conv1_1x1(self.pre_norm(x))))
    y = self.se(jax.nn.silu(self.norm2(self.conv2_kxk(y))))
    return self.drop_path(self.conv3_1x1(y), self.drop_rate) + shortcut


def log_offsets(window: int) -> np.ndarray:
  """[2w - 1, 2w - 1, 2] row and column offsets as sign(d) * log(1 + |d|) (timm's "cr" coords)."""
  d = np.arange(-(window - 1), window, dtype=np.float32)
  grid = np.stack(np.meshgrid(d, d, indexing="ij"), axis=-1)
  return np.sign(grid) * np.log1p(np.abs(grid))


class RelPosBias(nnx.Module):
  """A learned bias per head and relative offset within the window."""

  def __init__(self, window: int, num_heads: int, *, rngs: nnx.Rngs):
    self.window = window
    shape = ((2 * window - 1) ** 2, num_heads)
    self.relative_position_bias_table = nnx.Param(
      layers.TRUNC_NORMAL(rngs.params(), shape, jnp.float32), out_sharding=(None, None)
    )

  def __call__(self) -> jax.Array:
    """-> [heads, w*w, w*w]."""
    return self.relative_position_bias_table[...][relative_position_index(self.window)].transpose(
      2, 0, 1
    )


class _RelPosMlp(nnx.Module):
  """2 -> REL_POS_MLP_HIDDEN (ReLU, dropout) -> heads, in float32: the biases are added to float32
  attention scores."""

  def __init__(self, num_heads: int, *, rngs: nnx.Rngs):
    self.fc1 = layers.dense(2, REL_POS_MLP_HIDDEN, (None, None), dtype=jnp.float32, rngs=rngs)
    self.dropout = nnx.Dropout(REL_POS_MLP_DROPOUT, rngs=rngs)
    self.fc2 = layers.dense(REL_POS_MLP_HIDDEN, num_heads, (None, None), dtype=jnp.float32, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(self.dropout(jax.nn.relu(self.fc1(x))))


class RelPosMlp(nnx.Module):
  """Biases from a 2-layer MLP of the log-scaled relative offsets (timm's RelPosMlp, mode "cr")."""

  def __init__(self, window: int, num_heads: int, *, rngs: nnx.Rngs):
    self.window, self.num_heads = window, num_heads
    self.mlp = _RelPosMlp(num_heads, rngs=rngs)

  def __call__(self) -> jax.Array:
    """-> [heads, w*w, w*w]."""
    table = self.mlp(jnp.asarray(log_offsets(self.window))).reshape(-1, self.num_heads)
    return table[relative_position_index(self.window)].transpose(2, 0, 1)


class PartitionAttention(nnx.Module):
  """A pre-norm transformer layer over windows ("block": w x w neighbours) or a grid ("grid": w x w
  tokens spread over the whole map) of side `window`; x [N, H, W, C] -> [N, H, W, C]."""

  def __init__(self, width, window, partition, rel_pos, drop_path, *, dtype, rngs: nnx.Rngs):
    self.window, self.grid = window, partition == "grid"
    norm = functools.partial(layers.layer_norm, epsilon=LAYER_NORM_EPS, dtype=dtype, rngs=rngs)
    self.norm1 = norm(width)
    self.attn = Attention(width, window, rel_pos, dtype=dtype, rngs=rngs)
    self.norm2 = norm(width)
    self.mlp = Mlp(width, dtype=dtype, rngs=rngs)
    self.drop_path = layers.DropPath(drop_path, rngs=rngs)
    self.drop_rate = drop_path

  def _partition(self, x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    s = self.window
    if self.grid:  # token (i, j) of partition (a, b) is map position (i * H/s + a, j * W/s + b)
      x = x.reshape(n, s, h // s, s, w // s, c).transpose(0, 2, 4, 1, 3, 5)
    else:
      x = x.reshape(n, h // s, s, w // s, s, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, s * s, c)

  def _unpartition(self, x: jax.Array, shape) -> jax.Array:
    n, h, w, c = shape
    s = self.window
    if self.grid:
      return x.reshape(n, h // s, w // s, s, s, c).transpose(0, 3, 1, 4, 2, 5).reshape(shape)
    return x.reshape(n, h // s, w // s, s, s, c).transpose(0, 1, 3, 2, 4, 5).reshape(shape)

  def __call__(self, x: jax.Array) -> jax.Array:
    attended = self._unpartition(self.attn(self._partition(self.norm1(x))), x.shape)
    x = x + self.drop_path(attended, self.drop_rate)
    return x + self.drop_path(self.mlp(self.norm2(x)), self.drop_rate)


class Attention(nnx.Module):
  """Multi-head attention of HEAD_DIM-channel heads with relative-position biases; the qkv
  projection lays out each head's query, key and value side by side (timm's head_first)."""

  def __init__(self, width: int, window: int, rel_pos: str, *, dtype, rngs: nnx.Rngs):
    self.num_heads = width // HEAD_DIM
    self.qkv = layers.dense(width, 3 * width, ("embed", "heads"), dtype=dtype, rngs=rngs)
    self.rel_pos = (RelPosBias if rel_pos == "bias" else RelPosMlp)(window, self.num_heads, rngs=rngs)
    self.proj = layers.dense(width, width, ("heads", "embed"), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x [B, T, C] (B = partitions x images) -> [B, T, C]."""
    b, t, c = x.shape
    qkv = self.qkv(x).reshape(b, t, self.num_heads, 3 * HEAD_DIM).transpose(0, 2, 1, 3)
    q, k, v = jnp.split(qkv, 3, axis=-1)  # [B, heads, T, HEAD_DIM]
    scores = ((q * HEAD_DIM**-0.5) @ k.swapaxes(-1, -2)).astype(jnp.float32) + self.rel_pos()
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return self.proj((weights @ v).transpose(0, 2, 1, 3).reshape(b, t, c))


class Mlp(nnx.Module):
  def __init__(self, width: int, *, dtype, rngs: nnx.Rngs):
    self.fc1 = layers.dense(width, EXPANSION * width, ("embed", "mlp"), dtype=dtype, rngs=rngs)
    self.fc2 = layers.dense(EXPANSION * width, width, ("mlp", "embed"), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class MaxViTBlock(nnx.Module):
  """MBConv, then window ("block") attention, then grid attention."""

  def __init__(self, in_ch, out_ch, stride, window, rel_pos, drop_path, *, dtype, rngs: nnx.Rngs):
    self.conv = MBConv(in_ch, out_ch, stride, drop_path, dtype=dtype, rngs=rngs)
    attention = functools.partial(
      PartitionAttention, out_ch, window, rel_pos=rel_pos, drop_path=drop_path, dtype=dtype, rngs=rngs
    )
    self.attn_block = attention("block")
    self.attn_grid = attention("grid")

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.attn_grid(self.attn_block(self.conv(x)))


class _Stage(nnx.Module):
  def __init__(self, blocks: list[MaxViTBlock]):
    self.blocks = nnx.List(blocks)

  def __call__(self, x: jax.Array) -> jax.Array:
    for block in self.blocks:
      x = block(x)
    return x


class _Stem(nnx.Module):
  def __init__(self, in_ch: int, widths: tuple[int, int], *, dtype, rngs: nnx.Rngs):
    self.conv1 = _conv(in_ch, widths[0], 3, strides=2, dtype=dtype, rngs=rngs)
    self.norm1 = layers.batch_norm(widths[0], dtype=dtype, rngs=rngs)
    self.conv2 = _conv(widths[0], widths[1], 3, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv2(jax.nn.silu(self.norm1(self.conv1(x))))


class MaxViT(layers.PooledConvNet):
  """MaxViT backbone returning the spatial mean of the final LayerNorm'd map.

  Args:
    variant: 'pico' or 'nano' (or 'mini', a 4-block network for tests).
    img_size: the image side the windows are laid out for (side / 32 tokens a window; timm's 256
      for the `_256` models); a multiple of 32, and images must have it.
    rel_pos: "bias" (a learned table: maxvit_*_rw) or "mlp" (maxvit_rmlp_*_rw).
    in_channels: image channels.
    drop_path: stochastic-depth rate of the last block (linearly increasing from 0).
    dtype: computation dtype (parameters stay float32).
  """

  @layers.lazily_sharded
  def __init__(
    self,
    variant: str = "nano",
    *,
    img_size: int = 224,
    rel_pos: str = "bias",
    in_channels: int = 3,
    drop_path: float = 0.0,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    if variant not in MAXVIT_SIZES:
      raise ValueError(f"Unknown MaxViT variant {variant!r}: expected one of {list(MAXVIT_SIZES)}.")
    if rel_pos not in REL_POS:
      raise ValueError(f"model.rel_pos must be one of {list(REL_POS)}, got {rel_pos!r}.")
    if img_size % PARTITION_RATIO:
      raise ValueError(
        f"MaxViT's img_size must be a multiple of {PARTITION_RATIO} (its windows are img_size / "
        f"{PARTITION_RATIO} tokens a side), got {img_size}: set model.img_size to the views' size."
      )
    size = MAXVIT_SIZES[variant]
    self.variant, self.img_size, self.rel_pos = variant, img_size, rel_pos
    self.in_channels, self.dtype = in_channels, dtype
    window = img_size // PARTITION_RATIO
    self.stem = _Stem(in_channels, size.stem, dtype=dtype, rngs=rngs)
    rates = iter(layers.drop_path_rates(drop_path, sum(size.depths)))
    stages, channels = [], size.stem[1]
    for depth, width in zip(size.depths, size.widths):
      blocks = []
      for i in range(depth):
        blocks.append(
          MaxViTBlock(
            channels, width, 2 if i == 0 else 1, window, rel_pos, next(rates), dtype=dtype, rngs=rngs
          )
        )
        channels = width
      stages.append(_Stage(blocks))
    self.stages = nnx.List(stages)
    self.norm = layers.layer_norm(channels, epsilon=LAYER_NORM_EPS, dtype=dtype, rngs=rngs)
    self.out_dim = channels

  def stage_maps(self, images: jax.Array) -> list[jax.Array]:
    """images [N, img_size, img_size, C] -> each stage's output, [N, H / 4, W / 4, widths[0]] to
    [N, H / 32, W / 32, widths[-1]] (4 maps; the last LayerNorm'd)."""
    layers.check_images(images, self.in_channels, "MaxViT")
    if images.shape[1:3] != (self.img_size, self.img_size):
      raise ValueError(
        f"MaxViT laid out for {self.img_size} px images got {images.shape[1:3]}: set "
        "model.img_size to the views' size (every view of one size)."
      )
    x = self.stem(images.astype(self.dtype))
    maps = []
    for stage in self.stages:
      x = stage(x)
      maps.append(x)
    maps[-1] = self.norm(x)
    return maps
