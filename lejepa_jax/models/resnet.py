"""ResNet-14/18/26/34/50 (He et al. 2016), with an optional small-image stem for 28-32 px inputs,
the "bag of tricks" stems and shortcuts of timm's resnet*d / resnet*t (He et al. 2019): a deep
3-conv stem and average-pooled projection shortcuts, and the anti-aliased downsampling of timm's
resnetblur* (Zhang 2019): blur pooling in place of each strided 3x3 convolution's stride and of
the stem max-pool's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lejepa_jax.models import layers

# variant -> (block type, blocks per stage)
RESNET_DEPTHS = {
  "14": ("bottleneck", (1, 1, 1, 1)),
  "18": ("basic", (2, 2, 2, 2)),
  "26": ("bottleneck", (2, 2, 2, 2)),
  "34": ("basic", (3, 4, 6, 3)),
  "50": ("bottleneck", (3, 4, 6, 3)),
}
STAGE_MULTIPLES = (1, 2, 4, 8)  # stage widths relative to the stem width
# stem -> the channels of its 3x3 convolutions before the last, as fractions of `width` (timm's
# stem_width = width / 2): "plain" is the single 7x7 convolution.
STEMS = {"plain": (), "deep": (1 / 2, 1 / 2), "deep_tiered": (3 / 8, 1 / 2)}


class BasicBlock(nnx.Module):
  expansion = 1

  def __init__(
    self, in_ch: int, width: int, stride: int, avg_down: bool, blur: bool, *, dtype, rngs: nnx.Rngs
  ):
    out_ch = width * self.expansion
    self.blur = blur and stride != 1  # the 3x3 convolution unstrided, blur-pooled after its ReLU
    self.conv1 = layers.conv(
      in_ch, width, 3, strides=1 if self.blur else stride, padding=((1, 1), (1, 1)), dtype=dtype,
      rngs=rngs,
    )  # fmt: skip
    self.bn1 = layers.batch_norm(width, dtype=dtype, rngs=rngs)
    self.conv2 = layers.conv(width, out_ch, 3, padding=((1, 1), (1, 1)), dtype=dtype, rngs=rngs)
    self.bn2 = layers.batch_norm(out_ch, dtype=dtype, rngs=rngs)
    self.shortcut = _Shortcut(in_ch, out_ch, stride, avg_down, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = layers.blur_pool(y) if self.blur else y
    return jax.nn.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class Bottleneck(nnx.Module):
  expansion = 4

  def __init__(
    self, in_ch: int, width: int, stride: int, avg_down: bool, blur: bool, *, dtype, rngs: nnx.Rngs
  ):
    out_ch = width * self.expansion
    self.blur = blur and stride != 1  # the 3x3 convolution unstrided, blur-pooled after its ReLU
    self.conv1 = layers.conv(in_ch, width, 1, dtype=dtype, rngs=rngs)
    self.bn1 = layers.batch_norm(width, dtype=dtype, rngs=rngs)
    self.conv2 = layers.conv(
      width, width, 3, strides=1 if self.blur else stride, padding=((1, 1), (1, 1)), dtype=dtype,
      rngs=rngs,
    )  # fmt: skip
    self.bn2 = layers.batch_norm(width, dtype=dtype, rngs=rngs)
    self.conv3 = layers.conv(width, out_ch, 1, dtype=dtype, rngs=rngs)
    self.bn3 = layers.batch_norm(out_ch, dtype=dtype, rngs=rngs)
    self.shortcut = _Shortcut(in_ch, out_ch, stride, avg_down, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = jax.nn.relu(self.bn2(self.conv2(y)))
    y = layers.blur_pool(y) if self.blur else y
    return jax.nn.relu(self.bn3(self.conv3(y)) + self.shortcut(x))


class _Shortcut(nnx.Module):
  """Identity, or where the shape changes a 1x1 conv + BN: strided, or (`avg_down`) after a 2x2
  average pool (partial windows at odd edges averaged over what they hold, as PyTorch's ceil_mode
  with count_include_pad=False)."""

  def __init__(self, in_ch: int, out_ch: int, stride: int, avg_down: bool, *, dtype, rngs: nnx.Rngs):
    self.project = stride != 1 or in_ch != out_ch
    self.pool = avg_down and stride != 1
    if self.project:
      conv_stride = 1 if avg_down else stride
      self.conv = layers.conv(in_ch, out_ch, 1, strides=conv_stride, dtype=dtype, rngs=rngs)
      self.bn = layers.batch_norm(out_ch, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    if not self.project:
      return x
    if self.pool:
      odd = ((0, x.shape[1] % 2), (0, x.shape[2] % 2))
      x = nnx.avg_pool(x, (2, 2), strides=(2, 2), padding=odd, count_include_pad=False)
    return self.bn(self.conv(x))


class ResNet(layers.PooledConvNet):
  """ResNet backbone returning globally average-pooled final features.

  Args:
    variant: '18', '34' or '50'.
    in_channels: image channels.
    small_stem: 3x3 stride-1 stem without max-pooling, for 28-32 px images (CIFAR, Fashion-MNIST);
      the default is the ImageNet stem (7x7 stride 2 and a 3x3 stride-2 max-pool).
    stem: the ImageNet stem's convolutions: "plain" (one 7x7, stride 2), "deep" (3x3 convolutions
      to width/2, width/2, width; the first strided: timm's resnet*d) or "deep_tiered" (to 3 width/8,
      width/2, width: resnet*t); each but the last followed by BatchNorm + ReLU.
    avg_down: projection shortcuts average-pool 2x2 before an unstrided 1x1 convolution (timm's
      resnet*d / *t) instead of striding the 1x1 convolution.
    blur: anti-aliased downsampling (timm's resnetblur*): the strided 3x3 convolutions of the
      blocks run unstrided and their activations are blur-pooled at stride 2; the stem's max-pool
      pools at stride 1 and is blur-pooled at stride 2. Projection shortcuts are unchanged.
    width: channels of the stem and first stage (64 in the standard ResNets); the stages use
      width x (1, 2, 4, 8). Narrower networks are for small images on small machines.
    dtype: computation dtype (parameters stay float32).
  """

  @layers.lazily_sharded
  def __init__(
    self,
    variant: str = "50",
    *,
    in_channels: int = 3,
    small_stem: bool = False,
    stem: str = "plain",
    avg_down: bool = False,
    blur: bool = False,
    width: int = 64,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    if variant not in RESNET_DEPTHS:
      raise ValueError(f"Unknown ResNet variant {variant!r}: expected one of {list(RESNET_DEPTHS)}.")
    if stem not in STEMS or (small_stem and stem != "plain"):
      raise ValueError(
        f"model.stem must be one of {list(STEMS)} ('plain' with small_stem=True), got {stem!r}."
      )
    kind, depths = RESNET_DEPTHS[variant]
    block_cls = BasicBlock if kind == "basic" else Bottleneck
    self.variant, self.in_channels, self.small_stem, self.dtype = variant, in_channels, small_stem, dtype
    self.stem_type, self.avg_down, self.blur = stem, avg_down, blur
    pad1 = ((1, 1), (1, 1))
    deep, channels = [], in_channels
    for i, fraction in enumerate(STEMS[stem]):  # the deep stems' leading 3x3 conv + BN (+ ReLU)
      stride = 2 if i == 0 else 1
      deep.append(
        layers.ConvBN(
          channels, int(width * fraction), 3, strides=stride, act=jax.nn.relu, dtype=dtype, rngs=rngs
        )
      )
      channels = int(width * fraction)
    # None for the plain stems: their variables (and so every checkpoint written before) unchanged
    self.deep_stem = nnx.List(deep) if deep else None
    if small_stem or deep:  # the last 3x3 convolution, unstrided
      self.stem = layers.conv(channels, width, 3, padding=pad1, dtype=dtype, rngs=rngs)
    else:
      self.stem = layers.conv(
        in_channels, width, 7, strides=2, padding=((3, 3), (3, 3)), dtype=dtype, rngs=rngs
      )
    self.stem_bn = layers.batch_norm(width, dtype=dtype, rngs=rngs)
    blocks, channels = [], width
    stage_widths = [width * multiple for multiple in STAGE_MULTIPLES]
    for stage, (width, depth) in enumerate(zip(stage_widths, depths)):
      for i in range(depth):
        stride = 2 if stage > 0 and i == 0 else 1
        blocks.append(block_cls(channels, width, stride, avg_down, blur, dtype=dtype, rngs=rngs))
        channels = width * block_cls.expansion
    self.blocks = nnx.List(blocks)
    self.depths = tuple(depths)
    self.out_dim = channels

  def stage_maps(self, images: jax.Array) -> list[jax.Array]:
    """images [N, H, W, C] -> each stage's output [N, H_s, W_s, C_s], first to last (4 maps)."""
    layers.check_images(images, self.in_channels, "ResNet")
    x = images.astype(self.dtype)
    for layer in self.deep_stem or ():
      x = layer(x)
    x = jax.nn.relu(self.stem_bn(self.stem(x)))
    if not self.small_stem:  # the max-pool; with blur unstrided, then blur-pooled
      stride = (1, 1) if self.blur else (2, 2)
      x = nnx.max_pool(x, (3, 3), strides=stride, padding=((1, 1), (1, 1)))
      x = layers.blur_pool(x) if self.blur else x
    maps, blocks = [], iter(self.blocks)
    for depth in self.depths:
      for _ in range(depth):
        x = next(blocks)(x)
      maps.append(x)
    return maps
