"""ConvNeXt-V2 (Woo et al. 2023): ConvNeXt blocks with Global Response Normalisation (GRN); and the
first ConvNeXt (Liu et al. 2022): the same blocks without GRN, with a learned per-channel scale of
each residual branch (layer scale, initialised at 1e-6), as timm's `convnext_*`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lejepa_jax.models import layers

# variant -> (blocks per stage, channels per stage), from the ConvNeXt-V2 paper (Table 1).
CONVNEXT_V2_SIZES = {
  "atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
  "femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
  "pico": ((2, 2, 6, 2), (64, 128, 256, 512)),
  "nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
  "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
  "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
  "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
  "huge": ((3, 3, 27, 3), (352, 704, 1408, 2816)),
}


class GRN(nnx.Module):
  """Global Response Normalisation: x + gamma * (x * N(x)) + beta, N = per-channel L2 over space
  divided by its mean over channels."""

  def __init__(self, channels: int):
    self.gamma = nnx.Param(jnp.zeros((channels,)), out_sharding=("norm",))
    self.beta = nnx.Param(jnp.zeros((channels,)), out_sharding=("norm",))

  def __call__(self, x: jax.Array) -> jax.Array:
    # Norms in float32: squares of bfloat16 activations overflow and lose precision.
    x32 = x.astype(jnp.float32)
    spatial = jnp.sqrt(jnp.sum(jnp.square(x32), axis=(1, 2), keepdims=True))
    normalised = spatial / (jnp.mean(spatial, axis=-1, keepdims=True) + 1e-6)
    out = self.gamma[...] * (x32 * normalised) + self.beta[...] + x32
    return out.astype(x.dtype)


LAYER_SCALE_INIT = 1e-6  # the first ConvNeXt's layer scale at initialisation (timm's ls_init_value)


class ConvNeXtBlock(nnx.Module):
  """Depthwise 7x7 conv, LayerNorm, 4x pointwise MLP with GELU and GRN (V2) or a layer scale of the
  branch (V1), stochastic depth."""

  def __init__(self, channels: int, drop_path: float, version: int = 2, *, dtype, rngs: nnx.Rngs):
    self.dwconv = layers.conv(
      channels,
      channels,
      7,
      padding=((3, 3), (3, 3)),
      groups=channels,
      use_bias=True,
      dtype=dtype,
      rngs=rngs,
      kernel_init=layers.TRUNC_NORMAL,
    )
    self.norm = layers.layer_norm(channels, dtype=dtype, rngs=rngs)
    self.pwconv1 = layers.dense(channels, 4 * channels, ("embed", "mlp"), dtype=dtype, rngs=rngs)
    self.grn = GRN(4 * channels) if version == 2 else None
    self.pwconv2 = layers.dense(4 * channels, channels, ("mlp", "embed"), dtype=dtype, rngs=rngs)
    self.layer_scale = (
      nnx.Param(jnp.full((channels,), LAYER_SCALE_INIT), out_sharding=("norm",))
      if version == 1
      else None
    )
    self.drop_path = layers.DropPath(drop_path, 4, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.nn.gelu(self.pwconv1(self.norm(self.dwconv(x))), approximate=False)
    y = self.pwconv2(y if self.grn is None else self.grn(y))
    if self.layer_scale is not None:
      y = y * self.layer_scale[...].astype(y.dtype)
    return x + self.drop_path(y)


class _Downsample(nnx.Module):
  def __init__(self, in_ch: int, out_ch: int, *, dtype, rngs: nnx.Rngs):
    self.norm = layers.layer_norm(in_ch, dtype=dtype, rngs=rngs)
    self.conv = layers.conv(
      in_ch,
      out_ch,
      2,
      strides=2,
      padding="VALID",
      use_bias=True,
      dtype=dtype,
      rngs=rngs,
      kernel_init=layers.TRUNC_NORMAL,
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(self.norm(x))


class ConvNeXtV2(layers.PooledConvNet):
  """ConvNeXt-V2 backbone returning the LayerNorm of globally pooled final features.

  Args:
    variant: one of atto, femto, pico, nano, tiny, base, large, huge.
    in_channels: image channels.
    drop_path: stochastic-depth rate of the last block (linearly increasing from 0).
    remat: activation rematerialisation per block, a key of `layers.REMAT_POLICIES` ("none",
      "full", ...): what the forward pass keeps for the backward pass.
    dtype: computation dtype (parameters stay float32).
  """

  @layers.lazily_sharded
  def __init__(
    self,
    variant: str = "tiny",
    *,
    in_channels: int = 3,
    drop_path: float = 0.0,
    remat: str = "none",
    dtype=jnp.float32,
    rngs: nnx.Rngs,
    version: int = 2,
  ):
    layers.check_remat(remat)
    self.remat, self.version = remat, version
    if variant not in CONVNEXT_V2_SIZES:
      raise ValueError(
        f"Unknown ConvNeXt{'-V2' if version == 2 else ''} variant {variant!r}: expected one of "
        f"{list(CONVNEXT_V2_SIZES)}."
      )
    depths, dims = CONVNEXT_V2_SIZES[variant]
    self.variant, self.in_channels, self.dtype, self.out_dim = variant, in_channels, dtype, dims[-1]
    self.stem = layers.conv(
      in_channels,
      dims[0],
      4,
      strides=4,
      padding="VALID",
      use_bias=True,
      dtype=dtype,
      rngs=rngs,
      kernel_init=layers.TRUNC_NORMAL,
    )
    self.stem_norm = layers.layer_norm(dims[0], dtype=dtype, rngs=rngs)
    rates = iter(layers.drop_path_rates(drop_path, sum(depths)))
    stages = []
    for i, (depth, dim) in enumerate(zip(depths, dims)):
      down = [_Downsample(dims[i - 1], dim, dtype=dtype, rngs=rngs)] if i else []
      blocks = [ConvNeXtBlock(dim, next(rates), version, dtype=dtype, rngs=rngs) for _ in range(depth)]
      stages.append(nnx.List(down + blocks))
    self.stages = nnx.List(stages)
    self.head_norm = layers.layer_norm(dims[-1], dtype=dtype, rngs=rngs)

  def stage_maps(self, images: jax.Array) -> list[jax.Array]:
    """images [N, H, W, C] -> each stage's output, [N, H / 4, W / 4, dims[0]] to
    [N, H / 32, W / 32, out_dim] (4 maps)."""
    layers.check_images(images, self.in_channels, "ConvNeXtV2")
    x = self.stem_norm(self.stem(images.astype(self.dtype)))
    maps = []
    for stage in self.stages:
      for module in stage:
        x = layers.remat_call(module, x, self.remat) if isinstance(module, ConvNeXtBlock) else module(x)
      maps.append(x)
    return maps

  def pool(self, feature_map: jax.Array) -> jax.Array:
    """LayerNorm of the global average over space: [N, H, W, C] -> [N, C]."""
    return self.head_norm(jnp.mean(feature_map, axis=(1, 2)))


class ConvNeXt(ConvNeXtV2):
  """The first ConvNeXt (V1), timm's `convnext_<variant>`: ConvNeXtV2's network without GRN, with a
  layer scale on every block's branch. Same arguments as ConvNeXtV2."""

  def __init__(
    self,
    variant: str = "tiny",
    *,
    in_channels: int = 3,
    drop_path: float = 0.0,
    remat: str = "none",
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    super().__init__(
      variant, in_channels=in_channels, drop_path=drop_path, remat=remat, dtype=dtype, rngs=rngs,
      version=1,
    )  # fmt: skip
