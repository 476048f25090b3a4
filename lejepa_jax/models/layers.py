"""Building blocks shared by the encoders: layers annotated with logical axis names, drop-path, checks.

Every parameter carries logical axis names in its `out_sharding` metadata ("embed", "mlp", "heads",
"conv_in", "conv_out", "norm", ...). `lejepa_jax.sharding` maps them to mesh axes with rules from the
config, so one model definition serves data parallel, FSDP and tensor parallel layouts.
"""

from __future__ import annotations

import functools
from typing import Any
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from lejepa_jax.models import members

Dtype = Any
TRUNC_NORMAL = nnx.initializers.truncated_normal(stddev=0.02)


def lazily_sharded(init):
  """Decorates a module's __init__ so its variables are created unsharded, wherever it is built.

  The logical axis names stay in each variable's metadata; `lejepa_jax.sharding.create_sharded` lays
  the variables out on a mesh (inside one jit), so building a model never needs a mesh in scope.
  """
  @functools.wraps(init)
  def wrapper(*args, **kwargs):
    with nnx.use_eager_sharding(False):
      init(*args, **kwargs)
  return wrapper


LOW_PRECISION = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def _accumulate(a: jax.Array, b: jax.Array, contracting: tuple[int, int],
                dtype: jnp.dtype) -> jax.Array:
  """dot_general of two matrices contracting the given dims, float32 accumulation, in `dtype`."""
  out = jax.lax.dot_general(a, b, (((contracting[0],), (contracting[1],)), ((), ())),
                            preferred_element_type=jnp.float32)
  return out.astype(dtype)


def _transposed(a: jax.Array) -> jax.Array:
  """[M, K] -> [K, M] as the product identity_K x a^T, a form XLA's CPU matrix library takes (a
  transpose op leaves a layout it does not). Exact for finite values (one nonzero term per output);
  an inf or NaN in a row of `a` turns that whole column of the result NaN."""
  return _accumulate(jnp.eye(a.shape[1], dtype=a.dtype), a, (1, 1), a.dtype)


@jax.custom_vjp
def accumulating_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  """`a @ b` ([M, K] x [K, N] -> [M, N]) of bfloat16/float16 matrices with float32 accumulation and
  the result in the operands' dtype (what TPUs and GPUs do); its gradients are products of the same
  kind. Reverse mode only (a custom VJP: `jax.jvp` does not apply).

  Why spelled out: XLA's CPU backend runs bfloat16 products with float32 accumulation through its
  matrix library (AMX on CPUs that have it: 3-7x the float32 rate on the development CPU), but only
  for row-major operands with the lhs contracted on its last dimension; a bfloat16 result, or
  autodiff's gradients of the float32-accumulating product (float32 x bfloat16 operands, a
  transposed lhs), run as float32 products. Here the input gradient contracts `g` and `b` on their
  last dims, and the weight gradient transposes the narrower of `a` and `g` with an identity product
  (`_transposed`) before a plain product.
  """
  if a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype or a.dtype not in LOW_PRECISION:
    raise ValueError(f"accumulating_matmul takes two bfloat16/float16 matrices of one dtype, got "
                     f"{a.dtype}{list(a.shape)} and {b.dtype}{list(b.shape)}.")
  return _accumulate(a, b, (1, 0), a.dtype)


def _accumulating_matmul_forward(a, b):
  return accumulating_matmul(a, b), (a, b)


def _accumulating_matmul_backward(residuals, g):
  """Cotangent g [M, N] -> (grad a [M, K], grad b [K, N]), in the operands' dtype."""
  a, b = residuals  # g has the forward's output dtype, a's
  grad_a = _accumulate(g, b, (1, 1), a.dtype)  # g [M, N] . b [K, N] over N
  if a.shape[1] <= g.shape[1]:
    grad_b = _accumulate(_transposed(a), g, (1, 0), b.dtype)  # a^T [K, M] x g [M, N]
  else:
    grad_b = _accumulate(_transposed(g), a, (1, 0), b.dtype).T  # (g^T [N, M] x a [M, K])^T
  return grad_a, grad_b


accumulating_matmul.defvjp(_accumulating_matmul_forward, _accumulating_matmul_backward)


def _cpu_product_rewrites_apply() -> bool:
  """Whether the CPU-only product forms apply: on the CPU, outside explicit-sharding meshes (where
  products of sharded operands need output shardings these forms do not carry)."""
  if jax.default_backend() != "cpu":
    return False
  mesh = jax.sharding.get_abstract_mesh()
  return mesh.empty or not any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types)


def matrix_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None,
                       preferred_element_type=None, out_sharding=None) -> jax.Array:
  """`lax.dot_general` for Linear layers: on the CPU, inputs [..., K] x kernel [K, M] run as one
  [prod(...), K] x [K, M] matrix product, bfloat16/float16 ones with float32 accumulation
  (`accumulating_matmul`).

  XLA's CPU backend lays out the weight gradient of a 3-D input ([N, T, K]: ViT tokens) with a
  transposed copy of the activations; as 2-D products the forward and backward of a ViT-S MLP layer
  ran 1.8x faster on the development CPU (`python -m lejepa_jax.bench train` shows the whole step).
  """
  kwargs = dict(precision=precision, preferred_element_type=preferred_element_type,
                out_sharding=out_sharding)
  (lhs_contract, rhs_contract), batch = dimension_numbers
  plain_product = (lhs.ndim >= 2 and rhs.ndim == 2 and out_sharding is None and batch == ((), ())
                   and tuple(lhs_contract) == (lhs.ndim - 1,) and tuple(rhs_contract) == (0,))
  if not plain_product or not _cpu_product_rewrites_apply():
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, **kwargs)
  matrix = lhs.reshape(-1, lhs.shape[-1])
  if (lhs.dtype == rhs.dtype and lhs.dtype in LOW_PRECISION and preferred_element_type is None
      and precision is None):
    out = accumulating_matmul(matrix, rhs)
  else:
    out = jax.lax.dot_general(matrix, rhs, (((1,), (0,)), ((), ())), **kwargs)
  return out.reshape(lhs.shape[:-1] + rhs.shape[1:])


@jax.custom_vjp
def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  """`y + bias` ([..., N] + [N], one dtype) whose bias gradient, the sum of the output gradient's
  rows, is a product with a row of ones: XLA's CPU backend sums bfloat16 rows through a
  reduce-window ~50x slower than the matrix library runs the product (a ViT-S/16 step spent a fifth
  of its time there). Reverse mode only (a custom VJP).
  """
  if bias.shape != y.shape[-1:] or bias.dtype != y.dtype:
    raise ValueError(f"add_bias takes y [..., N] and a bias [N] of y's dtype, got "
                     f"{y.dtype}{list(y.shape)} and {bias.dtype}{list(bias.shape)}.")
  return y + bias


def _add_bias_forward(y, bias):
  return add_bias(y, bias), None


def _add_bias_backward(_, g):
  """Cotangent g [..., N] -> (grad y = g, grad bias [N] = the float32-accumulated sum of g's rows)."""
  rows = g.reshape(-1, g.shape[-1])
  ones = jnp.ones((1, rows.shape[0]), g.dtype)
  return g, _accumulate(ones, rows, (1, 0), g.dtype)[0]


add_bias.defvjp(_add_bias_forward, _add_bias_backward)


class Dense(nnx.Linear):
  """`nnx.Linear` (same parameters) whose bias add, in bfloat16/float16 on the CPU, is `add_bias`."""

  def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
    low_precision = self.dtype is not None and jnp.dtype(self.dtype) in LOW_PRECISION
    if (self.bias is None or out_sharding is not None or self.preferred_element_type is not None
        or not low_precision or not _cpu_product_rewrites_apply()):
      return super().__call__(inputs, out_sharding)
    inputs, kernel, bias = self.promote_dtype((inputs, self.kernel[...], self.bias[...]),
                                              dtype=self.dtype)
    y = self.dot_general(inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())),
                         precision=self.precision)
    return add_bias(y, bias)


def dense(in_features: int, out_features: int, axes: tuple[str | None, str | None], *,
          dtype: Dtype, rngs: nnx.Rngs, use_bias: bool = True,
          kernel_init=TRUNC_NORMAL) -> Dense:
  """A Linear layer whose kernel [in, out] carries logical axes `axes` (bias: `axes[1]`)."""
  return Dense(in_features, out_features, use_bias=use_bias, dtype=dtype,
               param_dtype=jnp.float32, kernel_init=kernel_init,
               kernel_metadata={"out_sharding": axes},
               bias_metadata={"out_sharding": (axes[1],)}, dot_general=matrix_dot_general,
               rngs=rngs)


def _small_input_conv(lhs, rhs, strides, pads, precision):
  """NHWC x HWIO convolution as shifted slices and one matmul (im2col), for tiny feature maps."""
  kh, kw = rhs.shape[:2]
  x = jnp.pad(lhs, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
  out_h = (x.shape[1] - kh) // strides[0] + 1
  out_w = (x.shape[2] - kw) // strides[1] + 1
  columns = [x[:, i:i + strides[0] * (out_h - 1) + 1:strides[0],
               j:j + strides[1] * (out_w - 1) + 1:strides[1]] for i in range(kh) for j in range(kw)]
  patches = jnp.concatenate(columns, axis=-1)  # [N, out_h, out_w, kh * kw * C_in], (i, j, c) order
  return jnp.dot(patches, rhs.reshape(-1, rhs.shape[-1]), precision=precision)


def conv_general_dilated(lhs, rhs, *args, **kwargs) -> jax.Array:
  """`lax.conv_general_dilated` for `conv` layers: `_routed_conv`, per member when traced for many
  models at once (`members.per_member_convolutions`, used by lejepa_jax.ablate)."""
  if members.enabled():
    return members.conv(lambda l, r: _routed_conv(l, r, *args, **kwargs), lhs, rhs)
  return _routed_conv(lhs, rhs, *args, **kwargs)


def _routed_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                 dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
  """`lax.conv_general_dilated`, routing convolutions whose kernel exceeds the feature map to im2col.

  XLA's CPU backend falls back to a very slow generic loop when a kernel is larger than its input (a
  3x3 conv on the 2x2 maps of a ResNet's last stage at 28-32 px: about 50x slower, forward and
  backward). The im2col form is exact and uses only slices and one matmul.
  """
  kernel = rhs.shape[:2]
  simple = (feature_group_count == 1 and lhs.ndim == 4
            and all(d == 1 for d in (lhs_dilation or (1, 1)) + tuple(rhs_dilation or (1, 1))))
  if simple and (lhs.shape[1] < kernel[0] or lhs.shape[2] < kernel[1]):
    pads = (jax.lax.padtype_to_pads(lhs.shape[1:3], kernel, window_strides, padding)
            if isinstance(padding, str) else padding)
    return _small_input_conv(lhs, rhs, window_strides, pads, precision)
  return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                      feature_group_count=feature_group_count, precision=precision,
                                      **kwargs)


def conv(in_features: int, out_features: int, kernel_size: int, *, strides: int = 1,
         padding: str | Sequence[tuple[int, int]] = "SAME", groups: int = 1, use_bias: bool = False,
         dtype: Dtype, rngs: nnx.Rngs, kernel_init=None) -> nnx.Conv:
  """A 2-D NHWC convolution with kernel [kh, kw, in/groups, out] on logical axes (conv_in, conv_out)."""
  kernel_init = kernel_init or nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
  return nnx.Conv(in_features, out_features, (kernel_size, kernel_size), strides=strides,
                  padding=padding, feature_group_count=groups, use_bias=use_bias, dtype=dtype,
                  param_dtype=jnp.float32, kernel_init=kernel_init,
                  conv_general_dilated=conv_general_dilated,
                  kernel_metadata={"out_sharding": (None, None, "conv_in", "conv_out")},
                  bias_metadata={"out_sharding": ("conv_out",)}, rngs=rngs)


def layer_norm(features: int, *, dtype: Dtype, rngs: nnx.Rngs, epsilon: float = 1e-6) -> nnx.LayerNorm:
  return nnx.LayerNorm(features, epsilon=epsilon, dtype=dtype, param_dtype=jnp.float32,
                       scale_metadata={"out_sharding": ("norm",)},
                       bias_metadata={"out_sharding": ("norm",)}, rngs=rngs)


def batch_norm(features: int, *, dtype: Dtype, rngs: nnx.Rngs, zero_scale: bool = False
               ) -> nnx.BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.1 there = 0.9 here, eps 1e-5).

  Under a batch-sharded `jax.jit` its statistics are those of the global batch: the mean over the
  sharded axis becomes a cross-device reduction, never a silent per-device estimate.
  """
  return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32,
                       scale_init=nnx.initializers.zeros if zero_scale else nnx.initializers.ones,
                       scale_metadata={"out_sharding": ("norm",)},
                       bias_metadata={"out_sharding": ("norm",)}, rngs=rngs)


class DropPath(nnx.Module):
  """Stochastic depth: drops a residual branch for whole samples, rescaling the kept ones.

  Args:
    rate: probability of dropping the branch of a sample during training.
    ndim: rank of the branch output ([N, T, C] tokens: 3; [N, H, W, C] maps: 4).
  """

  def __init__(self, rate: float, ndim: int, *, rngs: nnx.Rngs):
    # A dropout mask broadcast over every non-batch axis drops whole samples.
    self.dropout = (nnx.Dropout(rate, broadcast_dims=tuple(range(1, ndim)), rngs=rngs)
                    if rate > 0 else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    return x if self.dropout is None else self.dropout(x)


def drop_path_rates(total_rate: float, num_blocks: int) -> list[float]:
  """Linearly increasing drop-path rates over the blocks, from 0 to `total_rate`."""
  if num_blocks == 1:
    return [total_rate]
  return [total_rate * i / (num_blocks - 1) for i in range(num_blocks)]


def check_images(images: jax.Array, in_channels: int, model: str, multiple_of: int = 1) -> None:
  """Raises ValueError unless `images` is [N, H, W, in_channels] with H, W multiples of `multiple_of`."""
  if images.ndim != 4:
    raise ValueError(f"{model} expects images of shape [N, H, W, C], got shape {images.shape}.")
  if images.shape[-1] != in_channels:
    raise ValueError(f"{model} was built for {in_channels} input channels, got images with "
                     f"{images.shape[-1]} (shape {images.shape}); set model.in_channels.")
  height, width = images.shape[1:3]
  if height % multiple_of or width % multiple_of:
    raise ValueError(f"{model}: image size {height}x{width} is not divisible by the patch size "
                     f"{multiple_of}; use crops whose sides are multiples of {multiple_of}.")


class PooledConvNet(nnx.Module):
  """Shared interface of the ConvNets: subclasses define `stage_maps(images)` -> the output map of
  every stage, [[N, H_s, W_s, C_s], ...], and set `out_dim` (the last stage's channels).

  `__call__` returns (pooled, features), both `pool(feature_map(images))` [N, out_dim]: for ConvNets
  the projector and the probes read the same globally pooled features.
  """

  out_dim: int

  @property
  def feature_dim(self) -> int:
    return self.out_dim

  @property
  def pooled_dim(self) -> int:
    return self.out_dim

  def feature_map(self, images: jax.Array) -> jax.Array:
    """images [N, H, W, C] -> the final stage's map [N, H', W', out_dim]."""
    return self.stage_maps(images)[-1]

  def pool(self, feature_map: jax.Array) -> jax.Array:
    """Global average over space: [N, H, W, C] -> [N, C]."""
    return jnp.mean(feature_map, axis=(1, 2))

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    pooled = self.pool(self.feature_map(images))
    return pooled, pooled

  def patch_features(self, images: jax.Array) -> jax.Array:
    """The final feature map [N, H', W', out_dim] (for PCA pictures)."""
    return self.feature_map(images)

