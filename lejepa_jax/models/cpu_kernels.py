"""XLA CPU kernel workarounds behind the layers of `lejepa_jax.models.layers`, and the switch for them.

`use_cpu_kernels()` is the one backend decision: the CPU product forms below run on the CPU backend
outside explicit-sharding meshes, and nowhere else. `layers` looks it up at call time (as
`layers._cpu_product_rewrites_apply`) in its two Linear-layer routing points and otherwise reads as
plain layers; every name moved here is still importable from `layers`.

The workarounds, what each avoids, and the measurement that justified it. "The development CPU" is
the machine of docs/benchmarks.md's "Previous measurements" (an Intel Xeon with AMX bfloat16 units,
2 cores, jax 0.10.2), where these numbers were recorded; whole steps: `python -m lejepa_jax.bench
train`.

- `accumulating_matmul` (with `_accumulate`, `_transposed`), CPU only: bfloat16/float16 `a @ b` with
  float32 accumulation and its gradients, all spelled as row-major products with the lhs contracted
  on its last dimension. Avoids: XLA running a bfloat16 result, or autodiff's gradients of the
  float32-accumulating product (float32 x bfloat16 operands, a transposed lhs), as float32 products.
  Measured: the matrix library's bfloat16 products (AMX) run at 3-7x the float32 rate on the
  development CPU.
- `dot_general_as_matrix_product` (Linear layers' `dot_general`), CPU only: inputs [..., K] x kernel
  [K, M] as one [prod(...), K] x [K, M] product (bfloat16/float16 through `accumulating_matmul`).
  Avoids: a transposed copy of 3-D activations ([N, T, K], ViT tokens) for the weight gradient.
  Measured: forward and backward of a ViT-S MLP layer 1.8x faster on the development CPU.
- `add_bias` (bfloat16/float16 `layers.Dense`), CPU only: the bias gradient as a product with a row
  of ones. Avoids: XLA summing bfloat16 rows through a reduce-window ~50x slower than the matrix
  library runs the product. Measured: that reduction was a fifth of a ViT-S/16 step's time.
- `conv_general_dilated` -> `_routed_conv` -> `_small_input_conv` (`layers.conv`), every backend:
  convolutions whose kernel exceeds the feature map as im2col (shifted slices and one matmul; exact).
  Avoids: XLA's CPU fallback to a very slow generic loop for them. Measured: a 3x3 conv on the 2x2
  maps of a ResNet's last stage at 28-32 px, about 50x slower forward and backward. Not gated by
  `use_cpu_kernels`: it has always applied on every backend, and only to kernels larger than their
  input.
- Per-member convolutions under `jax.vmap` (`members.conv`, ablations only), routed by
  `conv_general_dilated` inside `members.per_member_convolutions()`: the strategy per backend is
  `members.AUTO`, with its measurement in lejepa_jax/models/members.py and docs/benchmarks.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lejepa_jax.models import members

LOW_PRECISION = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def use_cpu_kernels() -> bool:
  """Whether the CPU-only product forms apply: on the CPU, outside explicit-sharding meshes (where
  products of sharded operands need output shardings these forms do not carry)."""
  if jax.default_backend() != "cpu":
    return False
  mesh = jax.sharding.get_abstract_mesh()
  return mesh.empty or not any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types)


def _accumulate(a: jax.Array, b: jax.Array, contracting: tuple[int, int], dtype: jnp.dtype) -> jax.Array:
  """dot_general of two matrices contracting the given dims, float32 accumulation, in `dtype`."""
  out = jax.lax.dot_general(
    a, b, (((contracting[0],), (contracting[1],)), ((), ())), preferred_element_type=jnp.float32
  )
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
    raise ValueError(
      f"accumulating_matmul takes two bfloat16/float16 matrices of one dtype, got "
      f"{a.dtype}{list(a.shape)} and {b.dtype}{list(b.shape)}."
    )
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


def dot_general_as_matrix_product(
  lhs: jax.Array,
  rhs: jax.Array,
  dimension_numbers,
  precision=None,
  preferred_element_type=None,
  out_sharding=None,
) -> jax.Array:
  """`lax.dot_general` in the CPU's form (call it where `use_cpu_kernels()`): inputs [..., K] x
  kernel [K, M] run as one [prod(...), K] x [K, M] matrix product, bfloat16/float16 ones with float32
  accumulation (`accumulating_matmul`); any other product as `lax.dot_general`.

  XLA's CPU backend lays out the weight gradient of a 3-D input ([N, T, K]: ViT tokens) with a
  transposed copy of the activations; as 2-D products the forward and backward of a ViT-S MLP layer
  ran 1.8x faster on the development CPU (`python -m lejepa_jax.bench train` shows the whole step).
  """
  kwargs = dict(
    precision=precision, preferred_element_type=preferred_element_type, out_sharding=out_sharding
  )
  (lhs_contract, rhs_contract), batch = dimension_numbers
  plain_product = (
    lhs.ndim >= 2
    and rhs.ndim == 2
    and out_sharding is None
    and batch == ((), ())
    and tuple(lhs_contract) == (lhs.ndim - 1,)
    and tuple(rhs_contract) == (0,)
  )
  if not plain_product:
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, **kwargs)
  matrix = lhs.reshape(-1, lhs.shape[-1])
  if (
    lhs.dtype == rhs.dtype
    and lhs.dtype in LOW_PRECISION
    and preferred_element_type is None
    and precision is None
  ):
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
    raise ValueError(
      f"add_bias takes y [..., N] and a bias [N] of y's dtype, got "
      f"{y.dtype}{list(y.shape)} and {bias.dtype}{list(bias.shape)}."
    )
  return y + bias


def _add_bias_forward(y, bias):
  return add_bias(y, bias), None


def _add_bias_backward(_, g):
  """Cotangent g [..., N] -> (grad y = g, grad bias [N] = the float32-accumulated sum of g's rows)."""
  rows = g.reshape(-1, g.shape[-1])
  ones = jnp.ones((1, rows.shape[0]), g.dtype)
  return g, _accumulate(ones, rows, (1, 0), g.dtype)[0]


add_bias.defvjp(_add_bias_forward, _add_bias_backward)


def _small_input_conv(lhs, rhs, strides, pads, precision):
  """NHWC x HWIO convolution as shifted slices and one matmul (im2col), for tiny feature maps."""
  kh, kw = rhs.shape[:2]
  x = jnp.pad(lhs, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
  out_h = (x.shape[1] - kh) // strides[0] + 1
  out_w = (x.shape[2] - kw) // strides[1] + 1
  columns = [
    x[
      :,
      i : i + strides[0] * (out_h - 1) + 1 : strides[0],
      j : j + strides[1] * (out_w - 1) + 1 : strides[1],
    ]
    for i in range(kh)
    for j in range(kw)
  ]
  patches = jnp.concatenate(columns, axis=-1)  # [N, out_h, out_w, kh * kw * C_in], (i, j, c) order
  return jnp.dot(patches, rhs.reshape(-1, rhs.shape[-1]), precision=precision)


def conv_general_dilated(lhs, rhs, *args, **kwargs) -> jax.Array:
  """`lax.conv_general_dilated` for `layers.conv` layers: `_routed_conv`, per member when traced for
  many models at once (`members.per_member_convolutions`, used by lejepa_jax.ablate)."""
  if members.enabled():
    return members.conv(lambda l, r: _routed_conv(l, r, *args, **kwargs), lhs, rhs)
  return _routed_conv(lhs, rhs, *args, **kwargs)


def _routed_conv(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  precision=None,
  **kwargs,
):
  """`lax.conv_general_dilated`, routing convolutions whose kernel exceeds the feature map to im2col.

  XLA's CPU backend falls back to a very slow generic loop when a kernel is larger than its input (a
  3x3 conv on the 2x2 maps of a ResNet's last stage at 28-32 px: about 50x slower, forward and
  backward). The im2col form is exact and uses only slices and one matmul.
  """
  kernel = rhs.shape[:2]
  simple = (
    feature_group_count == 1
    and lhs.ndim == 4
    and all(d == 1 for d in (lhs_dilation or (1, 1)) + tuple(rhs_dilation or (1, 1)))
  )
  if simple and (lhs.shape[1] < kernel[0] or lhs.shape[2] < kernel[1]):
    pads = (
      jax.lax.padtype_to_pads(lhs.shape[1:3], kernel, window_strides, padding)
      if isinstance(padding, str)
      else padding
    )
    return _small_input_conv(lhs, rhs, window_strides, pads, precision)
  return jax.lax.conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=lhs_dilation,
    rhs_dilation=rhs_dilation,
    dimension_numbers=dimension_numbers,
    feature_group_count=feature_group_count,
    precision=precision,
    **kwargs,
  )
