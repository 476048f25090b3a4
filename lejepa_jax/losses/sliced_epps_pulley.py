"""SIGReg: the sliced Epps-Pulley test of LeJEPA, as pure, shardable JAX functions.

For embeddings Z [N, D], SIGReg projects onto M random unit directions and measures, for every 1-D
projection x, how far its empirical characteristic function (ECF) is from that of N(0, 1):

  EP(x) = N * integral_R |mean_n exp(i t x_n) - exp(-t^2/2)|^2 exp(-t^2/2) dt,

with the integral taken by the trapezoid rule on [0, t_max] (the integrand is even, so the weights are
doubled). See Balestriero & LeCun, "LeJEPA: Provable and Scalable Self-Supervised Learning Without the
Heuristics", arXiv 2511.08544, section 4.

How it is computed (and why it is fast):
* Knots are equally spaced, t_k = k dt, so cos(t_k x) and sin(t_k x) follow from the single pair
  cos(dt x), sin(dt x) by the angle-addition recurrence: two transcendentals per sample and slice instead
  of 2 * num_knots. Float32 rounding grows only linearly in k along the recurrence (a rotation).
* The [N, M, num_knots] cos/sin tensors are never materialised: each knot's [N, M] values are reduced
  over N as soon as they are made, and a custom VJP recomputes them in the backward pass instead of
  storing them, so temporary memory is O(N * M) whatever num_knots is.
* Under a batch-sharded `jax.jit`, the only cross-device traffic is the reduction over N of the
  [..., M, num_knots] ECF sums; embeddings are never gathered, and the backward pass is local per sample.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from lejepa_jax.losses import _checks

DEFAULT_T_MAX = 3.0
DEFAULT_NUM_KNOTS = 17
DEFAULT_NUM_SLICES = 1024


def quadrature(
  t_max: float = DEFAULT_T_MAX, num_knots: int = DEFAULT_NUM_KNOTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Knots, weights and target characteristic function of the Epps-Pulley quadrature.

  Args:
    t_max: right end of the integration interval [0, t_max].
    num_knots: number of equally spaced knots, including both ends.

  Returns:
    `(t, w, phi)`, each float64 [num_knots]: knots t_k = k * dt with dt = t_max / (num_knots - 1);
    trapezoid weights doubled for the even integrand and multiplied by exp(-t^2/2),
    w = [dt, 2dt, ..., 2dt, dt] * exp(-t_k^2/2); and phi = exp(-t_k^2/2), the N(0, 1) CF.
  """
  _checks.check_quadrature(t_max, num_knots)
  t = np.linspace(0.0, float(t_max), num_knots)
  dt = float(t_max) / (num_knots - 1)
  phi = np.exp(-0.5 * t**2)
  trapezoid = np.full(num_knots, 2.0 * dt)
  trapezoid[[0, -1]] = dt
  return t, trapezoid * phi, phi


def _rotations(x: jax.Array, dt: float, num_knots: int):
  """Yields (k, cos(k dt x), sin(k dt x)) for k = 1 .. num_knots - 1 by angle addition."""
  cos_step, sin_step = jnp.cos(dt * x), jnp.sin(dt * x)
  cos_k, sin_k = cos_step, sin_step
  yield 1, cos_k, sin_k
  for k in range(2, num_knots):
    cos_k, sin_k = (cos_k * cos_step - sin_k * sin_step, sin_k * cos_step + cos_k * sin_step)
    yield k, cos_k, sin_k


# The sums over N are split into B contiguous blocks of samples, each block's partial sums of the
# 2 * (K - 1) terms added at the end; B is chosen so that the B * 2 * (K - 1) partials number at most
# this many, so they take the same memory whatever num_knots is.
_PARTIAL_SUMS_BUDGET = 1024


def _num_partial_sums(num_samples: int, num_knots: int) -> int:
  """Partial sums per ECF term: a power of two dividing N, about 1024 / (2 (K - 1))."""
  target = max(1, _PARTIAL_SUMS_BUDGET // (2 * (num_knots - 1)))
  return math.gcd(num_samples, 1 << (target.bit_length() - 1))


def _ecf(x: jax.Array, dt: float, phi: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """ECF at every knot minus the N(0, 1) CF: x [..., N, M] -> (real - phi, imag), each [..., M, K].

  All 2 * (K - 1) sums over N are one variadic `lax.reduce`, which XLA emits as a single fused loop:
  x is read once, the recurrence stays in registers, and no [N, M] intermediate is written (separate
  `jnp.mean` calls would materialise every knot's cos/sin values).

  Float32 accuracy: the fused loop accumulates in sample order, so (1) N is split into B contiguous
  blocks whose partial sums are added at the end, and (2) the summands are centred on phi_k, which keeps
  partial sums near zero for near-Gaussian data. Under sharding the blocks stay device-local whenever B
  is a multiple of the device count along N, and only [..., B, M]-sized partials are reduced across
  devices.
  """
  num_samples, num_knots = x.shape[-2], len(phi)
  blocks = _num_partial_sums(num_samples, num_knots)
  x = x.reshape(x.shape[:-2] + (blocks, num_samples // blocks, x.shape[-1]))
  terms = []
  for k, cos_k, sin_k in _rotations(x, dt, num_knots):
    terms += [cos_k - np.asarray(phi[k], x.dtype), sin_k]
  zero = jnp.zeros((), x.dtype)
  partials = jax.lax.reduce(
    terms, [zero] * len(terms), lambda acc, new: [a + b for a, b in zip(acc, new)], (x.ndim - 2,)
  )
  # Reduce the blocks before stacking: stacking the [..., B, M] partials along a new minor axis is a
  # strided copy B times larger (an ablation's 8 vmapped ViT-Mi/7 members on the CPU: 107 -> 93 ms
  # per step).
  sums = jnp.stack([jnp.sum(p, axis=-2) for p in partials], axis=-1) / num_samples  # [..., M, 2 (K - 1)]
  zeros = jnp.zeros(sums.shape[:-1] + (1,), x.dtype)  # knot t_0 = 0: ecf = phi = 1 exactly
  # The summands were centred on phi_k rounded to x.dtype; add that rounding back, or it would bias
  # every sample's deviation the same way.
  phi_rounding = np.asarray(phi[1:].astype(x.dtype).astype(np.float64) - phi[1:], x.dtype)
  real_dev = jnp.concatenate([zeros, sums[..., 0::2] + phi_rounding], axis=-1)
  imag = jnp.concatenate([zeros, sums[..., 1::2]], axis=-1)
  return real_dev, imag


def _statistic(real_dev, imag, num_samples, weights):
  """N * sum_k w_k |ecf_k - phi_k|^2 from the ECF deviation parts [..., M, K] -> [..., M]."""
  return num_samples * jnp.sum(weights * (real_dev**2 + imag**2), axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _epps_pulley(x: jax.Array, t_max: float, num_knots: int) -> jax.Array:
  return _epps_pulley_fwd(x, t_max, num_knots)[0]


def _epps_pulley_fwd(x, t_max, num_knots):
  t, w, phi = quadrature(t_max, num_knots)
  real_dev, imag = _ecf(x, float(t[1]), phi)
  statistic = _statistic(real_dev, imag, x.shape[-2], jnp.asarray(w, x.dtype))
  return statistic, (x, real_dev, imag)


def _epps_pulley_bwd(t_max, num_knots, residuals, cotangent):
  # d EP_m / d x_nm = sum_k 2 w_k t_k (imag_mk cos(t_k x_nm) - (real_mk - phi_k) sin(t_k x_nm)):
  # the factor N of the statistic cancels the 1/N of the ECF mean, so per-sample gradients are bounded.
  # The barrier stops XLA from merging this recomputation with the forward pass's identical cos/sin
  # (common-subexpression elimination would then keep all [N, M] knot values alive between the two).
  x, real_dev, imag = jax.lax.optimization_barrier(residuals)
  t, w, _ = quadrature(t_max, num_knots)
  scale = jnp.asarray(2.0 * w * t, x.dtype) * cotangent[..., None]  # [..., M, K]
  cos_coef = scale * imag
  sin_coef = -scale * real_dev
  grad = jnp.zeros_like(x)
  for k, cos_k, sin_k in _rotations(x, float(t[1]), num_knots):
    grad = grad + cos_coef[..., None, :, k] * cos_k + sin_coef[..., None, :, k] * sin_k
  return (grad,)


_epps_pulley.defvjp(_epps_pulley_fwd, _epps_pulley_bwd)


def epps_pulley(
  x: jax.typing.ArrayLike, *, t_max: float = DEFAULT_T_MAX, num_knots: int = DEFAULT_NUM_KNOTS
) -> jax.Array:
  """Epps-Pulley statistic of each column of `x` against N(0, 1), scaled by the sample size.

  EP_m = N * sum_k w_k |mean_n exp(i t_k x[n, m]) - exp(-t_k^2/2)|^2, with knots and weights from
  :func:`quadrature` (trapezoid on [0, t_max], doubled, weighted by exp(-t^2/2)). For N(0, 1) samples
  its expectation is sum_k w_k (1 - exp(-t_k^2)), about 1.05 at the defaults, for every N.

  Computed in float32 (float64 input stays float64). Differentiable by a custom VJP that recomputes the
  cos/sin values instead of storing them (forward-mode differentiation is not supported).

  Args:
    x: [..., N, M] samples; each of the M columns is tested separately over the N axis. Leading axes
      are batch axes. Under `jax.jit` with N sharded, N is the global sample count.
    t_max: right end of the integration interval [0, t_max].
    num_knots: number of quadrature knots (>= 2).

  Returns:
    [..., M] statistic of each column.

  Example:
    >>> import jax
    >>> x = jax.random.normal(jax.random.key(0), (1024, 512))
    >>> stats = epps_pulley(x)  # [512]; for Gaussian columns each has mean about 1.05
    >>> stats.shape, round(float(stats.mean()), 2)
    ((512,), 0.99)

  References:
    Epps & Pulley, "A test for normality based on the empirical characteristic function",
    Biometrika 70(3), 1983. Balestriero & LeCun, LeJEPA, arXiv 2511.08544, 2025.
  """
  _checks.check_quadrature(t_max, num_knots)
  x = _checks.as_float32_or_wider("x", x)
  _checks.check_min_rank("x", x, 2, "[..., N, M]")
  _checks.check_num_samples("x", x.shape[-2])
  return _epps_pulley(x, float(t_max), int(num_knots))


def random_directions(
  key: jax.Array, dim: int, num_slices: int = DEFAULT_NUM_SLICES, dtype: jnp.dtype = jnp.float32
) -> jax.Array:
  """Random unit directions for slicing: Gaussian vectors normalised to unit length.

  Depends on `key` alone, so every device that holds the same key draws the same directions without
  communicating (derive the key per step with `jax.random.fold_in(key, step)`).

  Args:
    key: a PRNG key.
    dim: embedding dimension D.
    num_slices: number of directions M.
    dtype: floating dtype of the result.

  Returns:
    [dim, num_slices] matrix with unit-norm columns.
  """
  _checks.check_positive_int("dim", dim)
  _checks.check_positive_int("num_slices", num_slices)
  directions = jax.random.normal(key, (dim, num_slices), dtype)
  return directions / jnp.linalg.norm(directions, axis=0, keepdims=True)


def project(z: jax.Array, directions: jax.Array) -> jax.Array:
  """Projects embeddings onto directions in full float32 precision: [..., N, D] x [D, M] -> [..., N, M].

  `precision="highest"` keeps the projection exact on TPUs, whose default float32 matmul rounds inputs
  to bfloat16; its cost (N * D * M) is small next to the encoder's.
  """
  return jnp.einsum("...nd,dm->...nm", z, directions.astype(z.dtype), precision="highest")


def sigreg(
  z: jax.typing.ArrayLike,
  key: jax.Array,
  *,
  num_slices: int = DEFAULT_NUM_SLICES,
  t_max: float = DEFAULT_T_MAX,
  num_knots: int = DEFAULT_NUM_KNOTS,
) -> jax.Array:
  """SIGReg: Epps-Pulley statistic averaged over random 1-D projections of the embeddings.

  sigreg(z, key) == epps_pulley(z @ random_directions(key, D, num_slices)).mean(); all leading axes of
  `z` (e.g. views) share the same directions and the mean runs over them too.

  Args:
    z: [..., N, D] embeddings; N is the sample axis (shard it across devices under `jax.jit`).
    key: PRNG key for the directions; draw a fresh one per step (`jax.random.fold_in(key, step)`).
    num_slices: number of random directions M.
    t_max: right end of the integration interval.
    num_knots: number of quadrature knots.

  Returns:
    Scalar float32 (float64 for float64 input).

  Example:
    >>> import jax
    >>> z = jax.random.normal(jax.random.key(0), (1024, 64))
    >>> round(float(sigreg(z, jax.random.key(1))), 2)  # about 1.05 for Gaussian z
    1.13
    >>> round(float(sigreg(3 * z, jax.random.key(1))))  # far from N(0, I): large
    526

  References:
    Balestriero & LeCun, LeJEPA, arXiv 2511.08544, 2025, section 4 (SIGReg).
  """
  _checks.check_quadrature(t_max, num_knots)
  z = _checks.as_float32_or_wider("z", z)
  _checks.check_min_rank("z", z, 2, "[..., N, D]")
  _checks.check_num_samples("z", z.shape[-2])
  directions = random_directions(key, z.shape[-1], num_slices, z.dtype)
  return jnp.mean(epps_pulley(project(z, directions), t_max=t_max, num_knots=num_knots))
