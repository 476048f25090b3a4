"""ResNeXt-26-TS (timm's `resnext26ts`): a tiered 3-conv stem, grouped bottlenecks, SiLU.

The network of the paper's Table 5 row "resnext26ts", defined as in timm's `byobnet.py`
(`resnext26ts`, 8.2M parameters): a stem of three 3x3 convolutions (24, 32 and 64 channels, the
first of stride 2) and a 3x3 stride-2 max-pool; four stages of two bottlenecks each (outputs 256,
512, 1024, 2048; the middle 3x3 convolution grouped in groups of 32 channels over a quarter of the
output width, strided in the first block of stages 2-4); a 1x1 convolution + BatchNorm shortcut
where the shape changes; SiLU activations; the last BatchNorm of every residual branch starts at
zero (timm's `zero_init_last`). Every convolution is bias-free and followed by BatchNorm.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lejepa_jax.models import layers

STEM_CHANNELS = (24, 32, 64)
# variant -> (blocks per stage, output channels per stage)
RESNEXT_SIZES = {"26ts": ((2, 2, 2, 2), (256, 512, 1024, 2048))}
GROUP_WIDTH = 32  # channels per group of the 3x3 convolutions
BOTTLENECK_RATIO = 0.25  # the 3x3 convolution's width, relative to the block's output

_PAD1 = ((1, 1), (1, 1))


class GroupedBottleneck(nnx.Module):
  """1x1 -> grouped 3x3 (strided) -> 1x1, added to the (projected) input, then SiLU."""

  def __init__(self, in_ch: int, out_ch: int, stride: int, *, dtype, rngs: nnx.Rngs):
    mid = int(out_ch * BOTTLENECK_RATIO)
    self.shortcut = (
      layers.ConvBN(in_ch, out_ch, 1, strides=stride, dtype=dtype, rngs=rngs)
      if stride != 1 or in_ch != out_ch
      else None
    )
    self.conv1_1x1 = layers.ConvBN(in_ch, mid, 1, act=jax.nn.silu, dtype=dtype, rngs=rngs)
    self.conv2_kxk = layers.ConvBN(
      mid, mid, 3, strides=stride, groups=mid // GROUP_WIDTH, act=jax.nn.silu, dtype=dtype, rngs=rngs
    )
    self.conv3_1x1 = layers.ConvBN(mid, out_ch, 1, zero_scale=True, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    shortcut = x if self.shortcut is None else self.shortcut(x)
    y = self.conv3_1x1(self.conv2_kxk(self.conv1_1x1(x)))
    return jax.nn.silu(y + shortcut)


class ResNeXt(layers.PooledConvNet):
  """ResNeXt-26-TS backbone returning globally average-pooled final features (2048).

  Args:
    variant: '26ts'.
    in_channels: image channels.
    dtype: computation dtype (parameters stay float32).
  """

  @layers.lazily_sharded
  def __init__(self, variant: str = "26ts", *, in_channels: int = 3, dtype=jnp.float32, rngs: nnx.Rngs):
    if variant not in RESNEXT_SIZES:
      raise ValueError(f"Unknown ResNeXt variant {variant!r}: expected one of {list(RESNEXT_SIZES)}.")
    depths, widths = RESNEXT_SIZES[variant]
    self.variant, self.in_channels, self.dtype = variant, in_channels, dtype
    channels, stem = in_channels, []
    for i, out_ch in enumerate(STEM_CHANNELS):
      stem.append(
        layers.ConvBN(
          channels, out_ch, 3, strides=2 if i == 0 else 1, act=jax.nn.silu, dtype=dtype, rngs=rngs
        )
      )
      channels = out_ch
    self.stem = nnx.List(stem)
    stages = []
    for stage, (depth, width) in enumerate(zip(depths, widths)):
      blocks = []
      for i in range(depth):
        stride = 2 if stage > 0 and i == 0 else 1
        blocks.append(GroupedBottleneck(channels, width, stride, dtype=dtype, rngs=rngs))
        channels = width
      stages.append(nnx.List(blocks))
    self.stages = nnx.List(stages)
    self.out_dim = channels

  def stage_maps(self, images: jax.Array) -> list[jax.Array]:
    """images [N, H, W, C] -> each stage's output, [N, H / 4, W / 4, 256] to [N, H / 32, W / 32,
    2048] (4 maps)."""
    layers.check_images(images, self.in_channels, "ResNeXt")
    x = images.astype(self.dtype)
    for conv in self.stem:
      x = conv(x)
    x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=_PAD1)
    maps = []
    for stage in self.stages:
      for block in stage:
        x = block(x)
      maps.append(x)
    return maps
