"""ConvNeXt-V2 (Woo et al. 2023): ConvNeXt blocks with Global Response Normalisation (GRN); and the
first ConvNeXt (Liu et al. 2022): the same blocks without GRN, with a learned per-channel scale of
each residual branch (layer scale, initialised at 1e-6), as timm's `convnext_*`.

Both take timm's other stems and norms (its `convnext_*_ols` and `*_rms` models): `stem="overlap"`
(two 3x3 stride-2 convolutions), `"overlap_tiered"` (the first of half the channels, rounded up to
a multiple of 8) or `"overlap_act"` (with a GELU between them) instead of the 4x4 patch
convolution; `norm="rms"` (RMSNorm) or `"simple"` (timm's SimpleNorm) instead of LayerNorm,
everywhere a LayerNorm stands.
"""

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
# The first ConvNeXt's sizes: the same, and timm's smallest (`convnext_zepto_rms`).
CONVNEXT_SIZES = {**CONVNEXT_V2_SIZES, "zepto": ((2, 2, 4, 2), (32, 64, 128, 256))}
STEMS = ("patch", "overlap", "overlap_tiered", "overlap_act")
NORMS = {"layer": layers.layer_norm, "rms": layers.rms_norm, "simple": layers.simple_norm}


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

  def __init__(
    self,
    channels: int,
    drop_path: float,
    version: int = 2,
    norm: str = "layer",
    *,
    dtype,
    rngs: nnx.Rngs,
  ):
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
    self.norm = NORMS[norm](channels, dtype=dtype, rngs=rngs)
    self.pwconv1 = layers.dense(channels, 4 * channels, ("embed", "mlp"), dtype=dtype, rngs=rngs)
    self.grn = GRN(4 * channels) if version == 2 else None
    self.pwconv2 = layers.dense(4 * channels, channels, ("mlp", "embed"), dtype=dtype, rngs=rngs)
    self.layer_scale = (
      nnx.Param(jnp.full((channels,), LAYER_SCALE_INIT), out_sharding=("norm",))
      if version == 1
      else None
    )
    self.drop_path = layers.DropPath(drop_path, rngs=rngs)

  def __call__(self, x: jax.Array, drop_rate: float | jax.Array) -> jax.Array:
    """x [N, H, W, C] -> [N, H, W, C]; `drop_rate` is the block's stochastic-depth rate (the rate it
    was built for: given here, not held, so the blocks of a stage share one graph)."""
    y = jax.nn.gelu(self.pwconv1(self.norm(self.dwconv(x))), approximate=False)
    y = self.pwconv2(y if self.grn is None else self.grn(y))
    if self.layer_scale is not None:
      y = y * self.layer_scale[...].astype(y.dtype)
    return x + self.drop_path(y, drop_rate)


class _Downsample(nnx.Module):
  def __init__(self, in_ch: int, out_ch: int, norm: str, *, dtype, rngs: nnx.Rngs):
    self.norm = NORMS[norm](in_ch, dtype=dtype, rngs=rngs)
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


class OverlapStem(nnx.Module):
  """timm's overlapping ConvNeXt stems: 3x3 stride-2 convolution (to `mid` channels), a GELU where
  `act`, 3x3 stride-2 convolution; both with biases, as the patch stem."""

  def __init__(self, in_ch: int, mid: int, out_ch: int, act: bool, *, dtype, rngs: nnx.Rngs):
    pad = ((1, 1), (1, 1))
    options = dict(strides=2, padding=pad, use_bias=True, dtype=dtype, rngs=rngs)
    self.conv1 = layers.conv(in_ch, mid, 3, kernel_init=layers.TRUNC_NORMAL, **options)
    self.conv2 = layers.conv(mid, out_ch, 3, kernel_init=layers.TRUNC_NORMAL, **options)
    self.act = act

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv1(x)
    return self.conv2(jax.nn.gelu(x, approximate=False) if self.act else x)


def _stem(stem: str, in_ch: int, out_ch: int, *, dtype, rngs: nnx.Rngs) -> nnx.Module:
  if stem not in STEMS:
    raise ValueError(f"Unknown ConvNeXt stem {stem!r}: expected one of {list(STEMS)}.")
  if stem == "patch":
    return layers.conv(
      in_ch, out_ch, 4, strides=4, padding="VALID", use_bias=True, dtype=dtype, rngs=rngs,
      kernel_init=layers.TRUNC_NORMAL,
    )  # fmt: skip
  # timm's make_divisible(out_ch / 2, 8): the nearest multiple of 8, never 10% below the half
  half = out_ch // 2
  mid = max(8, (half + 4) // 8 * 8)
  mid = mid + 8 if mid < 0.9 * half else mid
  return OverlapStem(
    in_ch, mid if stem == "overlap_tiered" else out_ch, out_ch, stem == "overlap_act",
    dtype=dtype, rngs=rngs,
  )  # fmt: skip


class ConvNeXtV2(layers.PooledConvNet):
  """ConvNeXt-V2 backbone returning the LayerNorm of globally pooled final features.

  Args:
    variant: one of atto, femto, pico, nano, tiny, base, large, huge.
    in_channels: image channels.
    drop_path: stochastic-depth rate of the last block (linearly increasing from 0).
    remat: activation rematerialisation per block, a key of `layers.REMAT_POLICIES` ("none",
      "full", ...): what the forward pass keeps for the backward pass.
    stem: one of STEMS: the 4x4 patch convolution ("patch") or timm's overlapping stems.
    norm: one of NORMS: "layer" (LayerNorm), "rms" (RMSNorm) or "simple" (timm's SimpleNorm).
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
    stem: str = "patch",
    norm: str = "layer",
    dtype=jnp.float32,
    rngs: nnx.Rngs,
    version: int = 2,
  ):
    layers.check_remat(remat)
    self.remat, self.version, self.stem_type, self.norm_type = remat, version, stem, norm
    sizes = CONVNEXT_V2_SIZES if version == 2 else CONVNEXT_SIZES
    if variant not in sizes:
      raise ValueError(
        f"Unknown ConvNeXt{'-V2' if version == 2 else ''} variant {variant!r}: expected one of "
        f"{list(sizes)}."
      )
    if norm not in NORMS:
      raise ValueError(f"Unknown ConvNeXt norm {norm!r}: expected one of {list(NORMS)}.")
    depths, dims = sizes[variant]
    self.variant, self.in_channels, self.dtype, self.out_dim = variant, in_channels, dtype, dims[-1]
    self.stem = _stem(stem, in_channels, dims[0], dtype=dtype, rngs=rngs)
    self.stem_norm = NORMS[norm](dims[0], dtype=dtype, rngs=rngs)
    self.drop_rates = tuple(layers.drop_path_rates(drop_path, sum(depths)))
    rates = iter(self.drop_rates)
    stages = []
    for i, (depth, dim) in enumerate(zip(depths, dims)):
      down = [_Downsample(dims[i - 1], dim, norm, dtype=dtype, rngs=rngs)] if i else []
      blocks = [
        ConvNeXtBlock(dim, next(rates), version, norm, dtype=dtype, rngs=rngs) for _ in range(depth)
      ]
      stages.append(nnx.List(down + blocks))
    self.stages = nnx.List(stages)
    self.head_norm = NORMS[norm](dims[-1], dtype=dtype, rngs=rngs)

  def stage_maps(self, images: jax.Array) -> list[jax.Array]:
    """images [N, H, W, C] -> each stage's output, [N, H / 4, W / 4, dims[0]] to
    [N, H / 32, W / 32, out_dim] (4 maps)."""
    layers.check_images(images, self.in_channels, "ConvNeXtV2")
    x = self.stem_norm(self.stem(images.astype(self.dtype)))
    maps, rates = [], iter(self.drop_rates)
    for stage in self.stages:
      for module in stage:
        if isinstance(module, ConvNeXtBlock):
          x = layers.remat_call(module, x, self.remat, next(rates))
        else:
          x = module(x)
      maps.append(x)
    return maps

  def pool(self, feature_map: jax.Array) -> jax.Array:
    """The norm (LayerNorm by default) of the global average over space: [N, H, W, C] -> [N, C]."""
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
    stem: str = "patch",
    norm: str = "layer",
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    super().__init__(
      variant, in_channels=in_channels, drop_path=drop_path, remat=remat, stem=stem, norm=norm,
      dtype=dtype, rngs=rngs, version=1,
    )  # fmt: skip
