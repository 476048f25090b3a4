"""ResNet-18/34/50 (He et al. 2016), with an optional small-image stem for 28-32 px inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lejepa_jax.models import layers

# variant -> (block type, blocks per stage)
RESNET_DEPTHS = {
  "18": ("basic", (2, 2, 2, 2)),
  "34": ("basic", (3, 4, 6, 3)),
  "50": ("bottleneck", (3, 4, 6, 3)),
}
STAGE_MULTIPLES = (1, 2, 4, 8)  # stage widths relative to the stem width


class BasicBlock(nnx.Module):
  expansion = 1

  def __init__(self, in_ch: int, width: int, stride: int, *, dtype, rngs: nnx.Rngs):
    out_ch = width * self.expansion
    self.conv1 = layers.conv(
      in_ch, width, 3, strides=stride, padding=((1, 1), (1, 1)), dtype=dtype, rngs=rngs
    )
    self.bn1 = layers.batch_norm(width, dtype=dtype, rngs=rngs)
    self.conv2 = layers.conv(width, out_ch, 3, padding=((1, 1), (1, 1)), dtype=dtype, rngs=rngs)
    self.bn2 = layers.batch_norm(out_ch, dtype=dtype, rngs=rngs)
    self.shortcut = _Shortcut(in_ch, out_ch, stride, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    return jax.nn.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class Bottleneck(nnx.Module):
  expansion = 4

  def __init__(self, in_ch: int, width: int, stride: int, *, dtype, rngs: nnx.Rngs):
    out_ch = width * self.expansion
    self.conv1 = layers.conv(in_ch, width, 1, dtype=dtype, rngs=rngs)
    self.bn1 = layers.batch_norm(width, dtype=dtype, rngs=rngs)
    self.conv2 = layers.conv(
      width, width, 3, strides=stride, padding=((1, 1), (1, 1)), dtype=dtype, rngs=rngs
    )
    self.bn2 = layers.batch_norm(width, dtype=dtype, rngs=rngs)
    self.conv3 = layers.conv(width, out_ch, 1, dtype=dtype, rngs=rngs)
    self.bn3 = layers.batch_norm(out_ch, dtype=dtype, rngs=rngs)
    self.shortcut = _Shortcut(in_ch, out_ch, stride, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = jax.nn.relu(self.bn2(self.conv2(y)))
    return jax.nn.relu(self.bn3(self.conv3(y)) + self.shortcut(x))


class _Shortcut(nnx.Module):
  """Identity, or a strided 1x1 conv + BN where the shape changes."""

  def __init__(self, in_ch: int, out_ch: int, stride: int, *, dtype, rngs: nnx.Rngs):
    self.project = stride != 1 or in_ch != out_ch
    if self.project:
      self.conv = layers.conv(in_ch, out_ch, 1, strides=stride, dtype=dtype, rngs=rngs)
      self.bn = layers.batch_norm(out_ch, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.bn(self.conv(x)) if self.project else x


class ResNet(layers.PooledConvNet):
  """ResNet backbone returning globally average-pooled final features.

  Args:
    variant: '18', '34' or '50'.
    in_channels: image channels.
    small_stem: 3x3 stride-1 stem without max-pooling, for 28-32 px images (CIFAR, Fashion-MNIST);
      the default is the ImageNet stem (7x7 stride 2 and a 3x3 stride-2 max-pool).
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
    width: int = 64,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    if variant not in RESNET_DEPTHS:
      raise ValueError(f"Unknown ResNet variant {variant!r}: expected one of {list(RESNET_DEPTHS)}.")
    kind, depths = RESNET_DEPTHS[variant]
    block_cls = BasicBlock if kind == "basic" else Bottleneck
    self.variant, self.in_channels, self.small_stem, self.dtype = variant, in_channels, small_stem, dtype
    if small_stem:
      self.stem = layers.conv(in_channels, width, 3, padding=((1, 1), (1, 1)), dtype=dtype, rngs=rngs)
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
        blocks.append(block_cls(channels, width, stride, dtype=dtype, rngs=rngs))
        channels = width * block_cls.expansion
    self.blocks = nnx.List(blocks)
    self.depths = tuple(depths)
    self.out_dim = channels

  def stage_maps(self, images: jax.Array) -> list[jax.Array]:
    """images [N, H, W, C] -> each stage's output [N, H_s, W_s, C_s], first to last (4 maps)."""
    layers.check_images(images, self.in_channels, "ResNet")
    x = jax.nn.relu(self.stem_bn(self.stem(images.astype(self.dtype))))
    if not self.small_stem:
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    maps, blocks = [], iter(self.blocks)
    for depth in self.depths:
      for _ in range(depth):
        x = next(blocks)(x)
      maps.append(x)
    return maps
