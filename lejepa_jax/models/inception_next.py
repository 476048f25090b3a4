"""InceptionNeXt (Yu et al. 2024) as timm defines it (`inception_next_atto`, the paper's Figure 9):
ConvNeXt's macro design with an Inception depthwise token mixer and BatchNorm.

A 4x4 stride-4 convolution and BatchNorm; four stages (BatchNorm and a 2x2 stride-2 convolution
before stages 2-4) of MetaNeXt blocks: the token mixer leaves 5/8 of the channels as they are and
runs a quarter each through a 3x3, a 1 x band and a band x 1 depthwise convolution; BatchNorm; a
1x1-convolution MLP (GELU; 4x wide, 3x in the last stage); a layer scale (1e-6 at initialisation)
and stochastic depth on the branch. The pooled features are timm's head without its classifier:
global average, a Linear layer to 3x the width, GELU and LayerNorm. Variable names follow timm's,
so its state_dict maps one to one.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from lejepa_jax.models import layers

# variant -> (blocks per stage, channels per stage, band kernel, fraction of channels per branch)
INCEPTION_NEXT_SIZES = {"atto": ((2, 2, 6, 2), (40, 80, 160, 320), 9, 0.25)}
MLP_RATIOS = (4, 4, 4, 3)
HEAD_RATIO = 3  # timm's MlpClassifierHead: a Linear layer to 3x the last stage's width
LAYER_SCALE_INIT = 1e-6

_conv = functools.partial(layers.conv, use_bias=True, kernel_init=layers.TRUNC_NORMAL)


class InceptionDWConv(nnx.Module):
  """Splits the channels [identity, square, wide, tall] and runs a depthwise 3x3, 1 x band and
  band x 1 convolution (with biases, zero-padded to keep the size) on the last three parts."""

  def __init__(self, channels: int, band: int, branch_ratio: float, *, dtype, rngs: nnx.Rngs):
    branch = int(channels * branch_ratio)
    self.splits = (channels - 3 * branch, channels - 2 * branch, channels - branch)
    depthwise = functools.partial(_conv, branch, branch, groups=branch, dtype=dtype, rngs=rngs)
    self.dwconv_hw = depthwise(3, padding=((1, 1), (1, 1)))
    self.dwconv_w = depthwise((1, band), padding=((0, 0), (band // 2, band // 2)))
    self.dwconv_h = depthwise((band, 1), padding=((band // 2, band // 2), (0, 0)))

  def __call__(self, x: jax.Array) -> jax.Array:
    identity, square, wide, tall = jnp.split(x, self.splits, axis=-1)
    return jnp.concatenate(
      [identity, self.dwconv_hw(square), self.dwconv_w(wide), self.dwconv_h(tall)], axis=-1
    )


class ConvMlp(nnx.Module):
  def __init__(self, channels: int, hidden: int, *, dtype, rngs: nnx.Rngs):
    self.fc1 = _conv(channels, hidden, 1, dtype=dtype, rngs=rngs)
    self.fc2 = _conv(hidden, channels, 1, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class MetaNeXtBlock(nnx.Module):
  """x + drop_path(layer_scale * mlp(norm(token_mixer(x))))."""

  def __init__(self, channels, mlp_ratio, band, branch_ratio, drop_path, *, dtype, rngs: nnx.Rngs):
    self.token_mixer = InceptionDWConv(channels, band, branch_ratio, dtype=dtype, rngs=rngs)
    self.norm = layers.batch_norm(channels, dtype=dtype, rngs=rngs)
    self.mlp = ConvMlp(channels, int(mlp_ratio * channels), dtype=dtype, rngs=rngs)
    self.layer_scale = nnx.Param(jnp.full((channels,), LAYER_SCALE_INIT), out_sharding=("norm",))
    self.drop_path = layers.DropPath(drop_path, rngs=rngs)
    self.drop_rate = drop_path

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.mlp(self.norm(self.token_mixer(x)))
    return x + self.drop_path(y * self.layer_scale[...].astype(y.dtype), self.drop_rate)


class MetaNeXtStage(nnx.Module):
  """BatchNorm and a 2x2 stride-2 convolution where `downsample`, then the blocks (one per rate)."""

  def __init__(self, in_ch, out_ch, downsample, mlp_ratio, band, branch_ratio, rates, *, dtype, rngs):
    self.downsample = (
      nnx.List(
        [
          layers.batch_norm(in_ch, dtype=dtype, rngs=rngs),
          _conv(in_ch, out_ch, 2, strides=2, padding="VALID", dtype=dtype, rngs=rngs),
        ]
      )
      if downsample
      else None
    )
    self.blocks = nnx.List(
      [
        MetaNeXtBlock(out_ch, mlp_ratio, band, branch_ratio, rate, dtype=dtype, rngs=rngs)
        for rate in rates
      ]
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    for layer in self.downsample or ():
      x = layer(x)
    for block in self.blocks:
      x = block(x)
    return x


class _MlpHead(nnx.Module):
  def __init__(self, channels: int, *, dtype, rngs: nnx.Rngs):
    self.fc1 = layers.dense(
      channels, HEAD_RATIO * channels, ("embed", "mlp"), dtype=dtype, rngs=rngs,
      kernel_init=layers.TRUNC_NORMAL,
    )  # fmt: skip
    self.norm = layers.layer_norm(HEAD_RATIO * channels, dtype=dtype, rngs=rngs)

  def __call__(self, pooled: jax.Array) -> jax.Array:
    return self.norm(jax.nn.gelu(self.fc1(pooled), approximate=False))


class InceptionNeXt(layers.PooledConvNet):
  """InceptionNeXt backbone returning timm's pre-classifier head features (3 x 320 = 960 for atto).

  Args:
    variant: 'atto'.
    in_channels: image channels.
    drop_path: stochastic-depth rate of the last block (linearly increasing from 0).
    dtype: computation dtype (parameters stay float32).
  """

  @layers.lazily_sharded
  def __init__(
    self,
    variant: str = "atto",
    *,
    in_channels: int = 3,
    drop_path: float = 0.0,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    if variant not in INCEPTION_NEXT_SIZES:
      raise ValueError(
        f"Unknown InceptionNeXt variant {variant!r}: expected one of {list(INCEPTION_NEXT_SIZES)}."
      )
    depths, dims, band, branch_ratio = INCEPTION_NEXT_SIZES[variant]
    self.variant, self.in_channels, self.dtype = variant, in_channels, dtype
    self.stem = nnx.List(
      [
        _conv(in_channels, dims[0], 4, strides=4, padding="VALID", dtype=dtype, rngs=rngs),
        layers.batch_norm(dims[0], dtype=dtype, rngs=rngs),
      ]
    )
    rates = iter(layers.drop_path_rates(drop_path, sum(depths)))
    stages, channels = [], dims[0]
    for i, (depth, dim, ratio) in enumerate(zip(depths, dims, MLP_RATIOS)):
      stage_rates = [next(rates) for _ in range(depth)]
      stages.append(
        MetaNeXtStage(
          channels, dim, i > 0, ratio, band, branch_ratio, stage_rates, dtype=dtype, rngs=rngs
        )
      )
      channels = dim
    self.stages = nnx.List(stages)
    self.head = _MlpHead(channels, dtype=dtype, rngs=rngs)
    self.out_dim = channels

  @property
  def feature_dim(self) -> int:
    return HEAD_RATIO * self.out_dim

  @property
  def pooled_dim(self) -> int:
    return HEAD_RATIO * self.out_dim

  def stage_maps(self, images: jax.Array) -> list[jax.Array]:
    """images [N, H, W, C] -> each stage's output, [N, H / 4, W / 4, dims[0]] to
    [N, H / 32, W / 32, dims[-1]] (4 maps)."""
    layers.check_images(images, self.in_channels, "InceptionNeXt")
    x = images.astype(self.dtype)
    for layer in self.stem:
      x = layer(x)
    maps = []
    for stage in self.stages:
      x = stage(x)
      maps.append(x)
    return maps

  def pool(self, feature_map: jax.Array) -> jax.Array:
    """timm's head without its classifier: [N, H, W, C] -> mean over space -> Linear to 3C -> GELU
    -> LayerNorm, [N, 3C]."""
    return self.head(jnp.mean(feature_map, axis=(1, 2)))
