"""LeViT (Graham et al. 2021): a convolutional stem, then attention stages whose every linear layer
is followed by BatchNorm, with learned attention biases per spatial offset and attention that
subsamples the queries between stages.

Defined as timm's `levit.py` (LeViT-128: `levit_128`, 8.4M parameters without the head), the network
of the paper's Table 3 rows "LeViT-128": a stem of four 3x3 stride-2 convolutions + BatchNorm (to
C/8, C/4, C/2, C channels, Hardswish between them); stage 1 of attention + MLP residual blocks on
the 14x14 tokens; stages 2 and 3 each begin with an attention whose queries are every other token
of every other row (keys and values all tokens), followed by a residual MLP, and halve the grid
(14 -> 7 -> 4). Attention heads have 16-channel keys and queries and 2x (4x in the subsampling
attention) wider values; scores get a learned bias per head and per |row offset|, |column offset|;
Hardswish before each output projection and inside the 2x MLPs; the last BatchNorm of every
residual branch starts at zero (timm's `bn_weight_init=0`). Features: the mean token of the last
stage. The biases tie the model to the `img_size` it was built for (224 for the published models).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lejepa_jax.models import layers


@dataclasses.dataclass(frozen=True)
class LeViTSize:
  widths: tuple[int, ...]
  key_dim: int
  num_heads: tuple[int, ...]
  depths: tuple[int, ...]


LEVIT_SIZES = {
  "mini": LeViTSize((16, 32, 48), 4, (2, 4, 6), (1, 1, 1)),  # not a standard size: for tests
  "128s": LeViTSize((128, 256, 384), 16, (4, 6, 8), (2, 3, 4)),
  "128": LeViTSize((128, 256, 384), 16, (4, 8, 12), (4, 4, 4)),
  "192": LeViTSize((192, 288, 384), 32, (3, 5, 6), (4, 4, 4)),
  "256": LeViTSize((256, 384, 512), 32, (4, 6, 8), (4, 4, 4)),
}
STEM_STRIDE = 16
VALUE_RATIO = 2  # value width / key width in the blocks' attention
SUBSAMPLE_VALUE_RATIO = 4  # ... and in the query-subsampling attention
MLP_RATIO = 2


def bias_index(side: int, stride: int = 1) -> np.ndarray:
  """[queries, keys] index into a [side * side] bias table: |row offset| * side + |column offset|
  between each query (every `stride`-th row and column of the side x side grid) and each key."""
  keys = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij")).reshape(2, -1)
  queries = np.stack(
    np.meshgrid(np.arange(0, side, stride), np.arange(0, side, stride), indexing="ij")
  ).reshape(2, -1)
  offsets = np.abs(queries[:, :, None] - keys[:, None, :])
  return offsets[0] * side + offsets[1]


class LinearBN(nnx.Module):
  """A bias-free Linear layer over tokens [N, T, C_in], then BatchNorm over all N * T tokens."""

  def __init__(self, d_in: int, d_out: int, axes, *, zero_scale: bool = False, dtype, rngs: nnx.Rngs):
    self.linear = layers.dense(d_in, d_out, axes, use_bias=False, dtype=dtype, rngs=rngs)
    self.bn = layers.batch_norm(d_out, dtype=dtype, rngs=rngs, zero_scale=zero_scale)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.bn(self.linear(x))


class Attention(nnx.Module):
  """Multi-head attention over a side x side grid of tokens with per-offset biases; with
  `stride` 2 the queries are every other token of every other row (the grid halves)."""

  def __init__(
    self, d_in: int, d_out: int, key_dim: int, num_heads: int, value_ratio: int, side: int,
    stride: int, *, zero_scale: bool, dtype, rngs: nnx.Rngs,
  ):  # fmt: skip
    self.key_dim, self.value_dim = key_dim, value_ratio * key_dim
    self.num_heads, self.side, self.stride = num_heads, side, stride
    keys_values = num_heads * (key_dim + self.value_dim)
    if stride == 1:  # per head: query, key, value
      self.qkv = LinearBN(
        d_in, num_heads * key_dim + keys_values, ("embed", "heads"), dtype=dtype, rngs=rngs
      )
    else:  # per head: key, value; the queries from the subsampled tokens
      self.kv = LinearBN(d_in, keys_values, ("embed", "heads"), dtype=dtype, rngs=rngs)
      self.q = LinearBN(d_in, num_heads * key_dim, ("embed", "heads"), dtype=dtype, rngs=rngs)
    self.proj = LinearBN(
      num_heads * self.value_dim, d_out, ("heads", "embed"), zero_scale=zero_scale, dtype=dtype,
      rngs=rngs,
    )  # fmt: skip
    self.attention_biases = nnx.Param(
      jnp.zeros((num_heads, side * side), jnp.float32),
      out_sharding=(None, None),  # small: whole
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    """x [N, side * side, d_in] -> [N, queries, d_out]."""
    n, t, _ = x.shape
    heads, kd, vd = self.num_heads, self.key_dim, self.value_dim
    if self.stride == 1:
      q, k, v = jnp.split(self.qkv(x).reshape(n, t, heads, 2 * kd + vd), [kd, 2 * kd], axis=-1)
    else:
      k, v = jnp.split(self.kv(x).reshape(n, t, heads, kd + vd), [kd], axis=-1)
      grid = x.reshape(n, self.side, self.side, -1)[:, :: self.stride, :: self.stride]
      q = self.q(grid.reshape(n, -1, grid.shape[-1])).reshape(n, -1, heads, kd)
    q, k, v = (a.transpose(0, 2, 1, 3) for a in (q, k, v))  # [N, heads, tokens, dim]
    scores = ((q * kd**-0.5) @ k.swapaxes(-1, -2)).astype(jnp.float32)
    scores = scores + self.attention_biases[...][:, bias_index(self.side, self.stride)]
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = (weights @ v).transpose(0, 2, 1, 3).reshape(n, -1, heads * vd)
    return self.proj(jax.nn.hard_swish(out))


class Mlp(nnx.Module):
  def __init__(self, width: int, *, dtype, rngs: nnx.Rngs):
    self.ln1 = LinearBN(width, MLP_RATIO * width, ("embed", "mlp"), dtype=dtype, rngs=rngs)
    self.ln2 = LinearBN(
      MLP_RATIO * width, width, ("mlp", "embed"), zero_scale=True, dtype=dtype, rngs=rngs
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.ln2(jax.nn.hard_swish(self.ln1(x)))


class Block(nnx.Module):
  """Attention and MLP residual branches (no normalisation before them: each ends in BatchNorm)."""

  def __init__(self, width, key_dim, num_heads, side, drop_path, *, dtype, rngs: nnx.Rngs):
    self.attn = Attention(
      width, width, key_dim, num_heads, VALUE_RATIO, side, 1, zero_scale=True, dtype=dtype,
      rngs=rngs,
    )  # fmt: skip
    self.mlp = Mlp(width, dtype=dtype, rngs=rngs)
    self.drop_path = layers.DropPath(drop_path, rngs=rngs)
    self.drop_rate = drop_path

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.drop_path(self.attn(x), self.drop_rate)
    return x + self.drop_path(self.mlp(x), self.drop_rate)


class Subsample(nnx.Module):
  """The query-subsampling attention (no residual: the width and grid change), then a residual MLP."""

  def __init__(self, d_in, d_out, key_dim, side, drop_path, *, dtype, rngs: nnx.Rngs):
    self.attn_downsample = Attention(
      d_in, d_out, key_dim, d_in // key_dim, SUBSAMPLE_VALUE_RATIO, side, 2, zero_scale=False,
      dtype=dtype, rngs=rngs,
    )  # fmt: skip
    self.mlp = Mlp(d_out, dtype=dtype, rngs=rngs)
    self.drop_path = layers.DropPath(drop_path, rngs=rngs)
    self.drop_rate = drop_path

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.attn_downsample(x)
    return x + self.drop_path(self.mlp(x), self.drop_rate)


class LeViT(layers.PooledConvNet):
  """LeViT backbone returning the mean token of its last stage.

  Args:
    variant: one of LEVIT_SIZES ('128' is LeViT-128).
    img_size: the image side the attention biases are laid out for (224 for the published models);
      inputs must have this size.
    in_channels: image channels.
    drop_path: stochastic-depth rate of every residual branch (timm's LeViT: the same for all).
    dtype: computation dtype (parameters stay float32).
  """

  @layers.lazily_sharded
  def __init__(
    self,
    variant: str = "128",
    *,
    img_size: int = 224,
    in_channels: int = 3,
    drop_path: float = 0.0,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    if variant not in LEVIT_SIZES:
      raise ValueError(f"Unknown LeViT variant {variant!r}: expected one of {list(LEVIT_SIZES)}.")
    if img_size % STEM_STRIDE:
      raise ValueError(f"LeViT: img_size {img_size} is not a multiple of the stem's stride 16.")
    size = LEVIT_SIZES[variant]
    self.variant, self.img_size, self.in_channels, self.dtype = variant, img_size, in_channels, dtype
    width = size.widths[0]
    channels = [in_channels, width // 8, width // 4, width // 2, width]
    self.stem = nnx.List(
      [
        layers.ConvBN(a, b, 3, strides=2, dtype=dtype, rngs=rngs)
        for a, b in zip(channels[:-1], channels[1:])
      ]
    )
    side, stages, sides = img_size // STEM_STRIDE, [], []
    for i, (w, heads, depth) in enumerate(zip(size.widths, size.num_heads, size.depths)):
      stage = []
      if i:
        stage.append(Subsample(width, w, size.key_dim, side, drop_path, dtype=dtype, rngs=rngs))
        side = (side - 1) // 2 + 1
      stage += [
        Block(w, size.key_dim, heads, side, drop_path, dtype=dtype, rngs=rngs) for _ in range(depth)
      ]
      stages.append(nnx.List(stage))
      sides.append(side)
      width = w
    self.stages, self.sides = nnx.List(stages), tuple(sides)
    self.out_dim = width

  def stage_maps(self, images: jax.Array) -> list[jax.Array]:
    """images [N, img_size, img_size, C] -> each stage's tokens as a map, [N, img_size / 16,
    img_size / 16, widths[0]] to [N, s, s, out_dim] (14, 7, 4 at 224 px)."""
    layers.check_images(images, self.in_channels, "LeViT")
    if images.shape[1:3] != (self.img_size, self.img_size):
      raise ValueError(
        f"LeViT was built for {self.img_size}x{self.img_size} images (its attention biases are laid "
        f"out for them), got {images.shape[1]}x{images.shape[2]}: every view must have that size "
        "(data.local_views.count=0, as the paper's recipes for backbones other than the ViT) and "
        "model.img_size must be the views' size."
      )
    x = images.astype(self.dtype)
    for i, conv in enumerate(self.stem):
      x = conv(x if i == 0 else jax.nn.hard_swish(x))
    n, h, w, c = x.shape
    x, maps = x.reshape(n, h * w, c), []
    for stage, side in zip(self.stages, self.sides):
      for module in stage:
        x = module(x)
      maps.append(x.reshape(n, side, side, -1))
    return maps
