"""timm's bottleneck ResNets of `byobnet.py` with a tiered stem and SiLU: ResNeXt-26-TS
(`resnext26ts`, 8.2M parameters, the paper's Table 5 row) and ResNet-32-TS / 33-TS (`resnet32ts`,
`resnet33ts`, Figure 9), defined as timm defines them.

A stem of three 3x3 convolutions (24, 32 and 64 channels, the first of stride 2) followed, for
26ts, by a 3x3 stride-2 max-pool, and for 32ts/33ts by nothing, the third convolution striding
instead; four stages of bottlenecks (1x1 -> 3x3 -> 1x1; the 3x3 a quarter of the output width,
strided in the first block of stages 2-4, and for 26ts grouped in groups of 32 channels); a 1x1
convolution + BatchNorm shortcut where the shape changes; SiLU activations; the last BatchNorm of
every residual branch starts at zero (timm's `zero_init_last`); for 33ts a final 1x1 convolution to
1280 features. Every convolution is bias-free and followed by BatchNorm.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from lejepa_jax.models import layers

STEM_CHANNELS = (24, 32, 64)


@dataclasses.dataclass(frozen=True)
class TieredSize:
  depths: tuple[int, ...]  # bottlenecks per stage
  widths: tuple[int, ...]  # output channels per stage
  group_width: int | None  # channels per group of the 3x3 convolutions (None: not grouped)
  stem_pool: bool  # a max-pool ends the stem (else its third convolution strides)
  final_features: int | None  # a final 1x1 convolution + BN + SiLU to this width


# variant -> its size, from timm's byobnet.py model configs of the same names
RESNEXT_SIZES = {
  "26ts": TieredSize((2, 2, 2, 2), (256, 512, 1024, 2048), 32, True, None),
  "32ts": TieredSize((2, 3, 3, 2), (256, 512, 1536, 1536), None, False, None),
  "33ts": TieredSize((2, 3, 3, 2), (256, 512, 1536, 1536), None, False, 1280),
}
BOTTLENECK_RATIO = 0.25  # the 3x3 convolution's width, relative to the block's output

_PAD1 = ((1, 1), (1, 1))


class GroupedBottleneck(nnx.Module):
  """1x1 -> 3x3 (strided; grouped in groups of `group_width` channels) -> 1x1, added to the
  (projected) input, then SiLU."""

  def __init__(
    self, in_ch: int, out_ch: int, stride: int, group_width: int | None, *, dtype, rngs: nnx.Rngs
  ):
    mid = int(out_ch * BOTTLENECK_RATIO)
    self.shortcut = (
      layers.ConvBN(in_ch, out_ch, 1, strides=stride, dtype=dtype, rngs=rngs)
      if stride != 1 or in_ch != out_ch
      else None
    )
    self.conv1_1x1 = layers.ConvBN(in_ch, mid, 1, act=jax.nn.silu, dtype=dtype, rngs=rngs)
    self.conv2_kxk = layers.ConvBN(
      mid,
      mid,
      3,
      strides=stride,
      groups=mid // group_width if group_width else 1,
      act=jax.nn.silu,
      dtype=dtype,
      rngs=rngs,
    )
    self.conv3_1x1 = layers.ConvBN(mid, out_ch, 1, zero_scale=True, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    shortcut = x if self.shortcut is None else self.shortcut(x)
    y = self.conv3_1x1(self.conv2_kxk(self.conv1_1x1(x)))
    return jax.nn.silu(y + shortcut)


class ResNeXt(layers.PooledConvNet):
  """A tiered-stem bottleneck ResNet of RESNEXT_SIZES returning globally average-pooled final
  features (2048 for 26ts, 1536 for 32ts, 1280 for 33ts).

  Args:
    variant: '26ts' (ResNeXt-26-TS), '32ts' or '33ts' (ResNet-32-TS / 33-TS).
    in_channels: image channels.
    dtype: computation dtype (parameters stay float32).
  """

  @layers.lazily_sharded
  def __init__(self, variant: str = "26ts", *, in_channels: int = 3, dtype=jnp.float32, rngs: nnx.Rngs):
    if variant not in RESNEXT_SIZES:
      raise ValueError(f"Unknown ResNeXt variant {variant!r}: expected one of {list(RESNEXT_SIZES)}.")
    size = RESNEXT_SIZES[variant]
    self.variant, self.in_channels, self.dtype = variant, in_channels, dtype
    self.stem_pool = size.stem_pool
    stem_strides = (2, 1, 1 if size.stem_pool else 2)
    channels, stem = in_channels, []
    for out_ch, stride in zip(STEM_CHANNELS, stem_strides):
      stem.append(
        layers.ConvBN(channels, out_ch, 3, strides=stride, act=jax.nn.silu, dtype=dtype, rngs=rngs)
      )
      channels = out_ch
    self.stem = nnx.List(stem)
    stages = []
    for stage, (depth, width) in enumerate(zip(size.depths, size.widths)):
      blocks = []
      for i in range(depth):
        stride = 2 if stage > 0 and i == 0 else 1
        blocks.append(
          GroupedBottleneck(channels, width, stride, size.group_width, dtype=dtype, rngs=rngs)
        )
        channels = width
      stages.append(nnx.List(blocks))
    self.stages = nnx.List(stages)
    final = size.final_features
    self.final_conv = (
      layers.ConvBN(channels, final, 1, act=jax.nn.silu, dtype=dtype, rngs=rngs) if final else None
    )
    self.out_dim = final or channels

  def stage_maps(self, images: jax.Array) -> list[jax.Array]:
    """images [N, H, W, C] -> each stage's output, [N, H / 4, W / 4, 256] to [N, H / 32, W / 32,
    out_dim] (4 maps; the last after the final convolution, where there is one)."""
    layers.check_images(images, self.in_channels, "ResNeXt")
    x = images.astype(self.dtype)
    for conv in self.stem:
      x = conv(x)
    if self.stem_pool:
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=_PAD1)
    maps = []
    for stage in self.stages:
      for block in stage:
        x = block(x)
      maps.append(x)
    if self.final_conv is not None:
      maps[-1] = self.final_conv(x)
    return maps
