"""EfficientNet-B0 (Tan & Le 2019) as timm defines it (`efficientnet_b0`), with timm's GroupNorm
variants of the paper's Figure 9: `efficientnet_b0_gn` (GroupNorm of 8 channels per group in place
of every BatchNorm) and `efficientnet_b0_g8_gn` (that, and the depthwise convolutions grouped in 8
channels per group).

A 3x3 stride-2 stem convolution to 32 channels; seven stages of mobile inverted bottlenecks (the
first a depthwise-separable block without expansion), each with squeeze-and-excitation reducing to
a quarter of the block's input width; a 1x1 convolution to 1280 features; SiLU activations; a
residual connection (with stochastic depth) where a block keeps its width and resolution. Every
convolution is bias-free and followed by the norm, but the squeeze-and-excitation's, which have
biases. Variable names follow timm's, so its state_dict maps one to one.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from lejepa_jax.models import layers

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
SE_RATIO = 0.25  # squeeze-and-excitation width, relative to the block's input
# variant -> stages of (block kind, repeats, kernel, stride, expansion, output channels), from
# timm's _gen_efficientnet arch_def ("ds": depthwise separable, "ir": inverted residual)
EFFICIENTNET_STAGES = {
  "b0": (
    ("ds", 1, 3, 1, 1, 16),
    ("ir", 2, 3, 2, 6, 24),
    ("ir", 2, 5, 2, 6, 40),
    ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112),
    ("ir", 4, 5, 2, 6, 192),
    ("ir", 1, 3, 1, 6, 320),
  )
}
GROUP_NORM_SIZE = 8  # channels per group of timm's GroupNorm variants (GroupNormAct(group_size=8))
NORMS = ("batch", "group")


def _norm(channels: int, norm: str, *, dtype, rngs: nnx.Rngs) -> nnx.Module:
  if norm == "batch":
    return layers.batch_norm(channels, dtype=dtype, rngs=rngs)
  return nnx.GroupNorm(
    channels,
    num_groups=channels // GROUP_NORM_SIZE,
    epsilon=1e-5,  # torch's GroupNorm default
    use_fast_variance=False,
    dtype=dtype,
    param_dtype=jnp.float32,
    scale_metadata={"out_sharding": ("norm",)},
    bias_metadata={"out_sharding": ("norm",)},
    rngs=rngs,
  )


def _conv(in_ch: int, out_ch: int, kernel: int, *, strides: int = 1, groups: int = 1, dtype, rngs):
  """timm's create_conv2d with its default padding: symmetric, ((stride - 1) + kernel - 1) // 2."""
  pad = (strides - 1 + kernel - 1) // 2
  return layers.conv(
    in_ch, out_ch, kernel, strides=strides, padding=((pad, pad), (pad, pad)), groups=groups,
    dtype=dtype, rngs=rngs,
  )  # fmt: skip


class SqueezeExcite(nnx.Module):
  """x * sigmoid(expand(silu(reduce(mean over space of x)))): 1x1 convolutions with biases."""

  def __init__(self, channels: int, reduced: int, *, dtype, rngs: nnx.Rngs):
    conv = functools.partial(layers.conv, use_bias=True, dtype=dtype, rngs=rngs)
    self.conv_reduce = conv(channels, reduced, 1)
    self.conv_expand = conv(reduced, channels, 1)

  def __call__(self, x: jax.Array) -> jax.Array:
    squeezed = jnp.mean(x, axis=(1, 2), keepdims=True)
    return x * jax.nn.sigmoid(self.conv_expand(jax.nn.silu(self.conv_reduce(squeezed))))


class DepthwiseSeparable(nnx.Module):
  """kxk depthwise (or grouped) convolution, norm, SiLU, squeeze-and-excitation, 1x1 convolution,
  norm; added to the input where the shape allows."""

  def __init__(self, in_ch, out_ch, kernel, stride, group_size, norm, drop_path, *, dtype, rngs):
    self.conv_dw = _conv(
      in_ch, in_ch, kernel, strides=stride, groups=in_ch // group_size, dtype=dtype, rngs=rngs
    )
    self.bn1 = _norm(in_ch, norm, dtype=dtype, rngs=rngs)
    self.se = SqueezeExcite(in_ch, round(in_ch * SE_RATIO), dtype=dtype, rngs=rngs)
    self.conv_pw = _conv(in_ch, out_ch, 1, dtype=dtype, rngs=rngs)
    self.bn2 = _norm(out_ch, norm, dtype=dtype, rngs=rngs)
    self.residual = stride == 1 and in_ch == out_ch
    self.drop_path = layers.DropPath(drop_path, rngs=rngs)
    self.drop_rate = drop_path

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.bn2(self.conv_pw(self.se(jax.nn.silu(self.bn1(self.conv_dw(x))))))
    return x + self.drop_path(y, self.drop_rate) if self.residual else y


class InvertedResidual(nnx.Module):
  """1x1 expansion, norm, SiLU; kxk depthwise (or grouped) convolution, norm, SiLU;
  squeeze-and-excitation to a quarter of the input width; 1x1 projection, norm; added to the input
  where the shape allows."""

  def __init__(
    self, in_ch, out_ch, kernel, stride, expansion, group_size, norm, drop_path, *, dtype, rngs
  ):
    mid = in_ch * expansion
    self.conv_pw = _conv(in_ch, mid, 1, dtype=dtype, rngs=rngs)
    self.bn1 = _norm(mid, norm, dtype=dtype, rngs=rngs)
    self.conv_dw = _conv(
      mid, mid, kernel, strides=stride, groups=mid // group_size, dtype=dtype, rngs=rngs
    )
    self.bn2 = _norm(mid, norm, dtype=dtype, rngs=rngs)
    self.se = SqueezeExcite(mid, round(in_ch * SE_RATIO), dtype=dtype, rngs=rngs)
    self.conv_pwl = _conv(mid, out_ch, 1, dtype=dtype, rngs=rngs)
    self.bn3 = _norm(out_ch, norm, dtype=dtype, rngs=rngs)
    self.residual = stride == 1 and in_ch == out_ch
    self.drop_path = layers.DropPath(drop_path, rngs=rngs)
    self.drop_rate = drop_path

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.nn.silu(self.bn1(self.conv_pw(x)))
    y = self.se(jax.nn.silu(self.bn2(self.conv_dw(y))))
    y = self.bn3(self.conv_pwl(y))
    return x + self.drop_path(y, self.drop_rate) if self.residual else y


class EfficientNet(layers.PooledConvNet):
  """EfficientNet backbone returning globally average-pooled head features (1280).

  Args:
    variant: 'b0'.
    in_channels: image channels.
    norm: "batch" (BatchNorm: timm's efficientnet_b0) or "group" (GroupNorm of 8 channels per
      group: efficientnet_b0_gn).
    group_size: channels per group of the blocks' kxk convolutions: 1 (depthwise, the default) or
      8 (efficientnet_b0_g8_gn).
    drop_path: stochastic-depth rate of the last block (rising linearly from 0 at the first).
    dtype: computation dtype (parameters stay float32).
  """

  @layers.lazily_sharded
  def __init__(
    self,
    variant: str = "b0",
    *,
    in_channels: int = 3,
    norm: str = "batch",
    group_size: int = 1,
    drop_path: float = 0.0,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    if variant not in EFFICIENTNET_STAGES:
      raise ValueError(
        f"Unknown EfficientNet variant {variant!r}: expected one of {list(EFFICIENTNET_STAGES)}."
      )
    if norm not in NORMS:
      raise ValueError(f"model.norm must be one of {list(NORMS)} for EfficientNet, got {norm!r}.")
    self.variant, self.in_channels, self.dtype = variant, in_channels, dtype
    self.norm_type, self.group_size = norm, group_size
    stages = EFFICIENTNET_STAGES[variant]
    self.conv_stem = _conv(in_channels, STEM_CHANNELS, 3, strides=2, dtype=dtype, rngs=rngs)
    self.bn1 = _norm(STEM_CHANNELS, norm, dtype=dtype, rngs=rngs)
    total = sum(stage[1] for stage in stages)
    channels, index, blocks = STEM_CHANNELS, 0, []
    for kind, repeats, kernel, stride, expansion, out_ch in stages:
      stage = []
      for i in range(repeats):
        # timm's rate: the last block's drop_path times the block's index over the block count
        rate, s = drop_path * index / total, stride if i == 0 else 1
        if channels % group_size:
          raise ValueError(f"EfficientNet group_size {group_size} does not divide {channels} channels.")
        if kind == "ds":
          block = DepthwiseSeparable(
            channels, out_ch, kernel, s, group_size, norm, rate, dtype=dtype, rngs=rngs
          )
        else:
          block = InvertedResidual(
            channels, out_ch, kernel, s, expansion, group_size, norm, rate, dtype=dtype, rngs=rngs
          )
        stage.append(block)
        channels, index = out_ch, index + 1
      blocks.append(nnx.List(stage))
    self.blocks = nnx.List(blocks)
    # the stages that end a resolution (the next one strides), past the stride-2 stem's
    strides = [stage[3] for stage in stages] + [2]
    self.map_stages = tuple(i for i in range(1, len(stages)) if strides[i + 1] == 2)
    self.conv_head = _conv(channels, HEAD_CHANNELS, 1, dtype=dtype, rngs=rngs)
    self.bn2 = _norm(HEAD_CHANNELS, norm, dtype=dtype, rngs=rngs)
    self.out_dim = HEAD_CHANNELS

  def stage_maps(self, images: jax.Array) -> list[jax.Array]:
    """images [N, H, W, C] -> the output of each stage of stride 4, 8, 16 and 32 ([N, H / 4, W / 4,
    24] ... [N, H / 32, W / 32, 1280], the last after the head convolution: 4 maps)."""
    layers.check_images(images, self.in_channels, "EfficientNet")
    x = jax.nn.silu(self.bn1(self.conv_stem(images.astype(self.dtype))))
    maps = []
    for stage_index, stage in enumerate(self.blocks):
      for block in stage:
        x = block(x)
      if stage_index in self.map_stages:
        maps.append(x)
    maps[-1] = jax.nn.silu(self.bn2(self.conv_head(x)))
    return maps
