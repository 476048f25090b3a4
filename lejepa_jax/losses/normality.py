"""Normality tests the LeJEPA paper compares for SIGReg, as pure, differentiable JAX statistics.

Every statistic here is used as a loss: larger means "less like N(0, 1)" (or, for the multivariate
tests, less like N(0, I)), and each is jit-able, vmap-able and differentiable.

Univariate tests take x [..., N, M] and test each of the M columns over its N samples, returning
[..., M] (leading axes are batch axes):
* characteristic function: :func:`epps_pulley` (the statistic of SIGReg, from `sliced_epps_pulley`);
* moments: :func:`jarque_bera` (the paper's extended form by default) and :func:`vcreg` (mean and
  variance only: the sliced form of VICReg-style variance/covariance matching);
* CDF (need the samples sorted): :func:`cramer_von_mises`, :func:`anderson_darling`, :func:`watson`,
  and :func:`shapiro_wilk` (Royston's approximation, as the loss 1 - W).
Multivariate ECF tests take z [N, D]: :func:`bhep`, :func:`henze_zirkler` (O(N^2); the reason to slice).

:func:`sliced` turns a univariate test into SIGReg with that test (the mean over random 1-D projections),
and :data:`TESTS` / :func:`get_test` choose a univariate test by name (the trainer's `config.loss.test`).

Conventions: every statistic defined here takes `convention=`, one of :data:`CONVENTIONS` (and
:func:`get_test` / :func:`sliced` take it for Epps-Pulley too). "lejepa_jax" (the default) is the
textbook scale documented on each function; "official" gives the definitions and scales of the
authors' PyTorch code (github.com/rbalestr-lab/lejepa). They differ for Cramer-von Mises and Watson
(a mean over samples, without 1 / (12 N)), Jarque-Bera (skewness and kurtosis standardised by the
unbiased variance), Shapiro-Wilk (a Shapiro-Francia cosine on uncentred samples) and BHEP /
Henze-Zirkler (beta 0.1, no factor N, no whitening). Epps-Pulley, VCReg and Anderson-Darling are the
same in both; Anderson-Darling takes the exact log Phi in both (the authors' asymptotic tail formula
is off by up to 0.53). A name such as "cramer_von_mises@official" selects the official definition,
so `config.loss.test` alone can choose it. docs/normality_tests.md lists the exact mappings.

Sharding: Epps-Pulley and the moment tests only reduce over N, so under a batch-sharded `jax.jit` they
cross devices with [..., M]-sized all-reduces. The sorting tests need each column whole on one device.
Under Explicit sharding they move the N-sharding onto the columns: an all-to-all that sends and
receives about N * M / P floats per device (P devices along N), after which each device sorts only
its own columns; when M is not a multiple of P they all-gather instead (N * M floats per device, and
every device sorts every column). Gradients travel back the same way. Under Auto sharding XLA's
partitioner decides; with jax 0.10 it adds [N, M]-sized all-gathers and an [N, M] all-reduce for the
gradient, so prefer Explicit meshes and M a multiple of the device count. The multivariate tests
all-gather the [N, D] embeddings.

References: Balestriero & LeCun, "LeJEPA", arXiv 2511.08544, 2025, section 4.2 (the comparison).
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import special
from jax.sharding import PartitionSpec as P

from lejepa_jax.losses import _checks, sliced_epps_pulley

epps_pulley = sliced_epps_pulley.epps_pulley

UnivariateTest = Callable[..., jax.Array]
Convention = Literal["lejepa_jax", "official"]

# "lejepa_jax": this package's (textbook) definitions; "official": the authors' PyTorch code's.
CONVENTIONS: tuple[str, ...] = ("lejepa_jax", "official")
DEFAULT_CONVENTION = "lejepa_jax"
OFFICIAL_BHEP_BETA = 0.1  # the authors' BHEP default bandwidth
# torch.nn.functional.cosine_similarity's default eps, the floor of the norm in the official
# Shapiro-Wilk: it only matters for columns with a norm below 1e-5.
_OFFICIAL_COSINE_EPS = 1e-5


def _is_official(convention: str) -> bool:
  """True for "official", False for "lejepa_jax"; ValueError for anything else."""
  if convention not in CONVENTIONS:
    raise ValueError(f"`convention` must be one of {CONVENTIONS}, got {convention!r}.")
  return convention == "official"


def _samples(x: jax.typing.ArrayLike, min_samples: int = 2) -> jax.Array:
  """Validates x [..., N, M] and returns it in float32 at least."""
  x = _checks.as_float32_or_wider("x", x)
  _checks.check_min_rank("x", x, 2, "[..., N, M]")
  _checks.check_num_samples("x", x.shape[-2])
  if x.shape[-2] < min_samples:
    raise ValueError(f"`x` needs at least {min_samples} samples, got {x.shape[-2]}.")
  return x


def _variance_floor(dtype) -> float:
  # Floor for variances in denominators: 0/0 on constant columns would make NaN losses and gradients.
  # eps^2 (a standard deviation of eps) only clips degenerate columns, and floor^-1.5 (in gradients)
  # is far from overflowing.
  return float(jnp.finfo(dtype).eps) ** 2


def _spec(x: jax.Array) -> tuple:
  """The mesh axes each dimension of x is explicitly sharded over, one tuple per dimension."""
  spec = tuple(jax.typeof(x).sharding.spec)
  spec += (None,) * (x.ndim - len(spec))
  return tuple(
    () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes) for axes in spec
  )


def _gather_samples(x: jax.Array) -> jax.Array:
  """Makes the sample axis (-2) whole on every device (an all-gather), as pairwise distances need.

  Only Explicit sharding is visible here (and must be resharded by hand: XLA will not choose);
  under Auto sharding XLA's partitioner inserts the communication by itself.
  """
  spec = _spec(x)
  if not spec[-2]:
    return x
  return jax.sharding.reshard(x, P(*(axes or None for axes in spec[:-2]), None, spec[-1] or None))


def _whole_columns(x: jax.Array) -> jax.Array:
  """Lays x [..., N, M] out so that each column is whole on one device, as sorting needs.

  When the devices sharing N can take an equal share of the M columns, the N-sharding moves onto M
  (an all-to-all: each device ends up with N * M / P values and sorts only its own columns);
  otherwise N is all-gathered (N * M values per device, every device sorting every column).
  """
  spec = _spec(x)
  if not spec[-2]:
    return x
  mesh = jax.typeof(x).sharding.mesh
  column_axes = spec[-1] + spec[-2]
  if x.shape[-1] % math.prod(mesh.shape[axis] for axis in column_axes):
    return _gather_samples(x)
  return jax.sharding.reshard(x, P(*(axes or None for axes in spec[:-2]), None, column_axes))


def _sort_samples(x: jax.Array) -> jax.Array:
  """Each column of x [..., N, M] sorted ascending, differentiable, on whole columns.

  The permutation is found without gradient and applied by a gather, whose gradient is a local
  scatter: `jnp.sort`'s own derivative builds an unsharded index array that Explicit sharding rejects.
  """
  x = _whole_columns(x)
  order = jnp.argsort(jax.lax.stop_gradient(x), axis=-2)
  return jnp.take_along_axis(x, order, axis=-2)


# ------------------------------------------------------------------------------------------------
# Moment tests.


def vcreg(x: jax.typing.ArrayLike, *, convention: Convention = DEFAULT_CONVENTION) -> jax.Array:
  """Mean-and-variance test against N(0, 1): the first two terms of the extended Jarque-Bera test.

  VC_m = N mu^2 / s^2 + (N - 1) (s^2 - 1)^2 / 2, with mu the sample mean and s^2 the unbiased sample
  variance of column m. Each term is asymptotically chi^2(1) under N(0, 1), so VC is about 2 for
  Gaussian columns. Sliced over random directions, it matches the embeddings' mean to 0 and covariance
  to the identity (VICReg's variance/covariance terms), and it is blind to everything else: any
  distribution with zero mean and identity covariance scores like a Gaussian.

  Args:
    x: [..., N, M] samples, tested column by column over N.
    convention: "lejepa_jax" or "official": the same statistic (the authors' VCReg is this formula).

  Returns:
    [..., M] statistic (>= 0; larger = further from N(0, 1)). Unbounded, and so are its gradients.

  References:
    Balestriero & LeCun, LeJEPA, arXiv 2511.08544, 2025, section 4.2.1 (Extended Jarque-Bera).
  """
  _is_official(convention)  # validates only: nothing to map
  x = _samples(x)
  n = x.shape[-2]
  mean = jnp.mean(x, axis=-2)
  var = jnp.var(x, axis=-2, ddof=1)
  return n * mean**2 / jnp.maximum(var, _variance_floor(x.dtype)) + (n - 1) * (var - 1) ** 2 / 2


def jarque_bera(
  x: jax.typing.ArrayLike, *, extended: bool = True, convention: Convention = DEFAULT_CONVENTION
) -> jax.Array:
  """Jarque-Bera moment test; by default the paper's extended form, which tests against N(0, 1).

  JB_m = N / 6 * (skew^2 + (kurt - 3)^2 / 4), with the biased sample skewness m3 / m2^1.5 and kurtosis
  m4 / m2^2 (m_k the k-th central sample moment). JB is location- and scale-invariant: it tests for
  *a* Gaussian. The extended form adds the mean and variance terms of :func:`vcreg`,
  EJB = VC + JB, about chi^2(4) (mean 4) for N(0, 1) columns and large N.

  Args:
    x: [..., N, M] samples, tested column by column over N.
    extended: add the mean and variance terms (default); False gives the classic statistic.
    convention: "lejepa_jax" (default; SciPy's JB) or "official": the authors' code standardises
      skewness and kurtosis by the unbiased variance s^2 = N m2 / (N - 1), i.e. multiplies skew^2 by
      ((N - 1) / N)^3 and kurt by ((N - 1) / N)^2. The VCReg terms are the same in both.

  Returns:
    [..., M] statistic (>= 0; larger = less Gaussian). Unbounded, and so are its gradients.

  References:
    Jarque & Bera, Economics Letters 6(3), 1980. LeJEPA, arXiv 2511.08544, section 4.2.1.
  """
  official = _is_official(convention)
  x = _samples(x)
  n = x.shape[-2]
  centred = x - jnp.mean(x, axis=-2, keepdims=True)
  if official:  # the authors' code divides by the unbiased standard deviation
    variance = jnp.sum(centred**2, axis=-2, keepdims=True) / (n - 1)
  else:
    variance = jnp.mean(centred**2, axis=-2, keepdims=True)
  variance = jnp.maximum(variance, _variance_floor(x.dtype))
  # Standardised before the powers: m4 / m2^2 would put m2^3 (underflowing) in the gradient.
  standard = centred / jnp.sqrt(variance)
  skew = jnp.mean(standard**3, axis=-2)
  kurt = jnp.mean(standard**4, axis=-2)
  statistic = n / 6 * (skew**2 + (kurt - 3) ** 2 / 4)
  return statistic + vcreg(x) if extended else statistic


# ------------------------------------------------------------------------------------------------
# CDF tests: all sort each column, so each gathers the full columns on every device.


def _sorted_cdf(x: jax.Array) -> jax.Array:
  """Phi of each column sorted ascending: [..., N, M] -> [..., N, M]."""
  return special.ndtr(_sort_samples(x))


def _plotting_positions(n: int, dtype) -> jax.Array:
  """(2i - 1) / (2N) for i = 1 .. N, as [N, 1] to broadcast over columns."""
  return jnp.asarray((2 * np.arange(1, n + 1) - 1) / (2 * n), dtype)[:, None]


def _cramer_von_mises_of_cdf(cdf: jax.Array, official: bool = False) -> jax.Array:
  """W^2 from the sorted Phi(x_(i)) [..., N, M] -> [..., M]; `official`: the authors' scale."""
  n = cdf.shape[-2]
  squares = (cdf - _plotting_positions(n, cdf.dtype)) ** 2
  if official:  # the authors' code: the mean, without the 1 / (12 N) of the exact integral
    return jnp.mean(squares, axis=-2)
  return 1 / (12 * n) + jnp.sum(squares, axis=-2)


def cramer_von_mises(
  x: jax.typing.ArrayLike, *, convention: Convention = DEFAULT_CONVENTION
) -> jax.Array:
  """Cramer-von Mises W^2 of each column against the fully specified N(0, 1).

  W^2 = N * integral (F_N - Phi)^2 dPhi = 1 / (12 N) + sum_i ((2i - 1) / (2N) - Phi(x_(i)))^2, with
  x_(i) the i-th smallest sample. For N(0, 1) columns E[W^2] = 1/6 for every N; it grows like N under a
  fixed alternative. Sorts whole columns (the cost under sharding: see the module docstring).

  Args:
    x: [..., N, M] samples, tested column by column over N.
    convention: "lejepa_jax" (default; W^2 as above) or "official", the authors' code's
      mean_i ((2i - 1) / (2N) - Phi(x_(i)))^2 = (W^2 - 1 / (12 N)) / N (E = 1 / (6N) - 1 / (12N^2)).

  Returns:
    [..., M] statistic (larger = further from N(0, 1)): W^2 in [1 / (12 N), N / 3]; official in
    [0, 1/3).

  References:
    Cramer (1928), von Mises (1931); scipy.stats.cramervonmises(x, "norm") is the same statistic.
  """
  official = _is_official(convention)
  return _cramer_von_mises_of_cdf(_sorted_cdf(_samples(x)), official)


def watson(x: jax.typing.ArrayLike, *, convention: Convention = DEFAULT_CONVENTION) -> jax.Array:
  """Watson U^2 of each column against the fully specified N(0, 1).

  U^2 = W^2 - N (mean_n Phi(x_n) - 1/2)^2, with W^2 the Cramer-von Mises statistic: the part of W^2
  that a uniform shift of the probability-integral transforms does not explain (the statistic was made
  for circular data). For N(0, 1) columns E[U^2] = 1/12 for every N. Sorts whole columns (the cost
  under sharding: see the module docstring).

  Args:
    x: [..., N, M] samples, tested column by column over N.
    convention: "lejepa_jax" (default; U^2 as above) or "official", the authors' code's
      official CvM - (mean_n Phi(x_n) - 1/2)^2 = (U^2 - 1 / (12 N)) / N.

  Returns:
    [..., M] statistic (larger = further from N(0, 1)).

  References:
    Watson, "Goodness-of-fit tests on a circle", Biometrika 48, 1961.
  """
  official = _is_official(convention)
  cdf = _sorted_cdf(_samples(x))
  n = cdf.shape[-2]
  shift = (jnp.mean(cdf, axis=-2) - 0.5) ** 2
  if official:  # both terms on the per-sample scale of the official Cramer-von Mises
    return _cramer_von_mises_of_cdf(cdf, official=True) - shift
  return _cramer_von_mises_of_cdf(cdf) - n * shift


def anderson_darling(
  x: jax.typing.ArrayLike, *, convention: Convention = DEFAULT_CONVENTION
) -> jax.Array:
  """Anderson-Darling A^2 of each column against the fully specified N(0, 1).

  A^2 = -N - (1/N) sum_i (2i - 1) [log Phi(x_(i)) + log(1 - Phi(x_(N+1-i)))]: Cramer-von Mises with the
  weight 1 / (Phi (1 - Phi)), which stresses the tails. Both logs are taken with `log_ndtr`, which stays
  accurate (and its gradient finite) far in the tails. For N(0, 1) columns E[A^2] = 1 for every N.
  In float32 the sum cancels against -N, leaving an absolute error of about N * 1e-7.
  Standardising a column first (mean 0, unbiased std 1) gives the statistic of
  scipy.stats.anderson(x, "norm"), which estimates the mean and scale. Sorts whole columns (the cost
  under sharding: see the module docstring).

  The authors' code has this formula and scale, but computes log Phi beyond |x| > 3 with an
  asymptotic tail formula that is off by 0.018 at x = -3, 0.35 at x = -8 and up to 0.53 as
  x -> -inf; the i-th most extreme sample's error enters A^2 with the weight (2i - 1) / N, so
  columns with many samples beyond 3 move by 0.1 to 1.2 (Student t or N(0, 9) columns of 200).
  Here both conventions use the exact `log_ndtr`: "official" is the authors' statistic with the
  exact log Phi, the same function as the default.

  Args:
    x: [..., N, M] samples, tested column by column over N.
    convention: "lejepa_jax" or "official": the same statistic (see above).

  Returns:
    [..., M] statistic (larger = further from N(0, 1)). Unbounded: it grows like x^2 for outliers.

  References:
    Anderson & Darling, JASA 49, 1954.
  """
  _is_official(convention)  # validates only: the exact log Phi in both conventions
  x = _samples(x)
  n = x.shape[-2]
  ordered = _sort_samples(x)
  log_cdf = special.log_ndtr(ordered)
  log_sf_reversed = jnp.flip(special.log_ndtr(-ordered), axis=-2)
  weights = 2 * _plotting_positions(n, x.dtype)  # (2i - 1) / N
  return -n - jnp.sum(weights * (log_cdf + log_sf_reversed), axis=-2)


@functools.lru_cache(maxsize=64)
def shapiro_wilk_coefficients(n: int) -> np.ndarray:
  """Royston's approximation of the Shapiro-Wilk coefficients for sorted samples, float64 [n].

  The expected normal order statistics are approximated by Blom's scores m_i = Phi^-1((i - 3/8) /
  (n + 1/4)); the two most extreme coefficients get Royston's polynomial corrections in 1 / sqrt(n)
  (one for n <= 5) and the rest are m_i rescaled so that sum a_i^2 = 1. Antisymmetric: a_i = -a_{n+1-i}.
  """
  if n == 3:
    return np.array([-math.sqrt(0.5), 0.0, math.sqrt(0.5)])
  normal = statistics.NormalDist()
  m = np.array([normal.inv_cdf((i - 0.375) / (n + 0.25)) for i in range(1, n + 1)])
  sum_m2 = float(np.sum(m**2))
  u = 1 / math.sqrt(n)
  corrections = [
    (0.221157, -0.147981, -2.071190, 4.434685, -2.706056),
    (0.042981, -0.293762, -1.752461, 5.682633, -3.582633),
  ]
  num_corrected = 2 if n > 5 else 1
  a = np.zeros(n)
  for k in range(num_corrected):  # a[-1 - k]: the k-th largest sample's coefficient
    polynomial = sum(c * u ** (p + 1) for p, c in enumerate(corrections[k]))
    a[-1 - k] = m[-1 - k] / math.sqrt(sum_m2) + polynomial
  extremes = slice(n - num_corrected, n)
  scale = math.sqrt((sum_m2 - 2 * np.sum(m[extremes] ** 2)) / (1 - 2 * np.sum(a[extremes] ** 2)))
  a[num_corrected : n - num_corrected] = m[num_corrected : n - num_corrected] / scale
  a[:num_corrected] = -a[: n - num_corrected - 1 : -1]
  return a


@functools.lru_cache(maxsize=64)
def official_shapiro_wilk_weights(n: int) -> np.ndarray:
  """The authors' code's Shapiro-Wilk weights [n] (float64): Phi^-1((i - pi/8) / (n + 1/4)) / norm.

  Their "Elfving" positions put Elfving's pi/8 over Blom's denominator n + 1/4 (Elfving's own is
  n + 1/2 - pi/4), so they are not symmetric about 1/2 and the weights not exactly antisymmetric.
  The authors compute them in float32; float64 here.
  """
  normal = statistics.NormalDist()
  m = np.array([normal.inv_cdf((i - math.pi / 8) / (n + 0.25)) for i in range(1, n + 1)])
  return m / np.linalg.norm(m)


def _official_shapiro_wilk(x: jax.Array) -> jax.Array:
  """1 - |cos(weights, x sorted)| per column of x [..., N, M] -> [..., M], on the raw samples."""
  weights = jnp.asarray(official_shapiro_wilk_weights(x.shape[-2]), x.dtype)[:, None]
  ordered = _sort_samples(x)
  # Not centred (the authors' code is not): a shift of the column changes the statistic.
  norm = jnp.sqrt(jnp.maximum(jnp.sum(ordered**2, axis=-2), _OFFICIAL_COSINE_EPS**2))
  return 1 - jnp.abs(jnp.sum(weights * ordered, axis=-2)) / norm


def shapiro_wilk(x: jax.typing.ArrayLike, *, convention: Convention = DEFAULT_CONVENTION) -> jax.Array:
  """Shapiro-Wilk test of each column as the loss 1 - W (Royston's approximation of the coefficients).

  W = (sum_i a_i x_(i))^2 / sum_n (x_n - mean)^2 lies in (0, 1] and is 1 for perfectly Gaussian-shaped
  samples, so 1 - W is the loss (about 1 / N for Gaussian columns). W is location- and
  scale-invariant: it tests for *a* Gaussian, not N(0, 1), so as a loss it shapes the distribution but
  leaves its mean and scale free (combine with :func:`vcreg` to pin them). Coefficients come from
  :func:`shapiro_wilk_coefficients` at trace time; it is the approximation scipy.stats.shapiro uses
  too, and W agrees with it to rounding (1e-9 in float64, 1e-6 in float32). Sorts whole columns (the
  cost under sharding: see the module docstring).

  Args:
    x: [..., N, M] samples (N >= 3), tested column by column over N.
    convention: "lejepa_jax" (default; Royston's 1 - W, as SciPy) or "official", the authors' code's
      Shapiro-Francia form 1 - |cos(m, x_sorted)|: the cosine between the sorted raw (uncentred)
      samples and :func:`official_shapiro_wilk_weights`, the norm floored at 1e-5 (Shapiro-Francia's
      W' is the squared correlation of the sorted samples with such scores). Scale-invariant but,
      uncentred, not location-invariant.

  Returns:
    [..., M] 1 - W in [0, 1) (larger = less Gaussian; 1 for constant columns). Official: in [0, 1].

  References:
    Shapiro & Wilk, Biometrika 52, 1965. Royston, Statistics and Computing 2, 1992 and Applied
    Statistics 44, 1995 (algorithm AS R94).
  """
  official = _is_official(convention)
  x = _samples(x, min_samples=3)
  if official:
    return _official_shapiro_wilk(x)
  coefficients = jnp.asarray(shapiro_wilk_coefficients(x.shape[-2]), x.dtype)[:, None]
  # Centred first, so a constant column gives 0 / floor (loss 1) and not rounding noise / floor.
  centred = x - jnp.mean(x, axis=-2, keepdims=True)
  ordered = _sort_samples(centred)
  numerator = jnp.sum(coefficients * ordered, axis=-2) ** 2
  total = jnp.maximum(jnp.sum(centred**2, axis=-2), _variance_floor(x.dtype))
  return 1 - numerator / total


# ------------------------------------------------------------------------------------------------
# Multivariate ECF tests (O(N^2) in time and memory).


def _squared_distances(z: jax.Array) -> jax.Array:
  """|z_j - z_k|^2 for z [N, D] -> [N, N], from the Gram matrix.

  Rounding leaves the diagonal slightly off zero (with a spurious gradient) and can push entries
  below zero: the diagonal is set to exactly 0 and the rest clipped at 0.
  """
  norms = jnp.sum(z**2, axis=-1)
  gram = jnp.einsum("nd,md->nm", z, z, precision="highest")
  distances = jnp.maximum(norms[:, None] + norms[None, :] - 2 * gram, 0.0)
  return jnp.where(jnp.eye(z.shape[0], dtype=bool), 0.0, distances)


def bhep(
  z: jax.typing.ArrayLike, *, beta: float | None = None, convention: Convention = DEFAULT_CONVENTION
) -> jax.Array:
  """BHEP statistic of z against the fully specified N(0, I_D), in closed form.

  T = N * integral |ecf(t) - exp(-|t|^2/2)|^2 phi_beta(t) dt with the Gaussian weight phi_beta of
  covariance beta^2 I:
    T = (1/N) sum_{j,k} exp(-beta^2 |z_j - z_k|^2 / 2)
        - 2 (1 + beta^2)^(-D/2) sum_j exp(-beta^2 |z_j|^2 / (2 (1 + beta^2))) + N (1 + 2 beta^2)^(-D/2).
  For D = 1 and beta = 1 it is the Epps-Pulley statistic over the whole line divided by sqrt(2 pi).
  In high dimension every pairwise term exp(-beta^2 |z_j - z_k|^2 / 2) underflows (|z_j - z_k|^2 is
  about 2D for Gaussian z), so the statistic and its gradient lose all signal: slice instead.
  Under a batch-sharded `jax.jit` the [N, D] embeddings are all-gathered (N * D floats per device).

  Args:
    z: [N, D] samples.
    beta: bandwidth of the weight (> 0); by default 1.0 ("lejepa_jax") or :data:`OFFICIAL_BHEP_BETA`
      = 0.1 ("official").
    convention: "lejepa_jax" (default; T as above) or "official", the authors' code's T / N (the
      integral without the factor N) at their default beta 0.1.

  Returns:
    Scalar statistic (>= 0; larger = further from N(0, I)).

  References:
    Baringhaus & Henze, Metrika 35, 1988; Epps & Pulley, Biometrika 70, 1983.
  """
  official = _is_official(convention)
  if beta is None:
    beta = OFFICIAL_BHEP_BETA if official else 1.0
  z = _checks.as_float32_or_wider("z", z)
  _checks.check_rank("z", z, 2, "[N, D]")
  _checks.check_num_samples("z", z.shape[0])
  if not beta > 0:
    raise ValueError(f"`beta` must be positive, got {beta!r}.")
  z = _gather_samples(z)
  n, d = z.shape
  b2 = beta**2
  pairs = jnp.sum(jnp.exp(-b2 / 2 * _squared_distances(z))) / n
  to_target = jnp.sum(jnp.exp(-b2 / (2 * (1 + b2)) * jnp.sum(z**2, axis=-1)))
  statistic = pairs - 2 * (1 + b2) ** (-d / 2) * to_target + n * (1 + 2 * b2) ** (-d / 2)
  # The authors' code keeps the weighted L2 distance itself, without the N that makes it O(1).
  return statistic / n if official else statistic


def henze_zirkler_beta(num_samples: int, dim: int) -> float:
  """Henze and Zirkler's bandwidth: (1 / sqrt 2) ((2D + 1) N / 4)^(1 / (D + 4))."""
  return ((2 * dim + 1) * num_samples / 4) ** (1 / (dim + 4)) / math.sqrt(2)


def henze_zirkler(z: jax.typing.ArrayLike, *, convention: Convention = DEFAULT_CONVENTION) -> jax.Array:
  """Henze-Zirkler statistic: BHEP of the Mahalanobis-standardised samples, at the HZ bandwidth.

  The samples are whitened with the biased sample covariance S (divisor N) through its Cholesky factor,
  so the statistic tests for *a* Gaussian (any mean and full-rank covariance), not N(0, I). S must be
  invertible: N > D, well conditioned. Cost O(N^2 D + N D^2 + D^3); all-gathers z under sharding.

  Args:
    z: [N, D] samples, N > D.
    convention: "lejepa_jax" (default; as above) or "official", the authors' code's BHEP of z as it
      is (not whitened: it tests for N(0, I), like :func:`bhep`) at the HZ bandwidth, without the
      factor N: bhep(z, beta=henze_zirkler_beta(N, D)) / N. Any N >= 1 then.

  Returns:
    Scalar statistic (larger = less Gaussian; official: larger = further from N(0, I)).

  References:
    Henze & Zirkler, Communications in Statistics - Theory and Methods 19(10), 1990.
  """
  official = _is_official(convention)
  z = _checks.as_float32_or_wider("z", z)
  _checks.check_rank("z", z, 2, "[N, D]")
  n, d = z.shape
  if official:  # no covariance to estimate, so no N > D requirement
    return bhep(z, beta=henze_zirkler_beta(n, d), convention="official")
  if n <= d:
    raise ValueError(
      f"`z` needs more samples than dimensions to estimate its covariance, got shape {z.shape}."
    )
  centred = z - jnp.mean(z, axis=0)
  covariance = jnp.einsum("nd,ne->de", centred, centred, precision="highest") / n
  cholesky = jnp.linalg.cholesky(covariance)
  whitened = jax.scipy.linalg.solve_triangular(cholesky, centred.T, lower=True).T
  return bhep(whitened, beta=henze_zirkler_beta(n, d))


# ------------------------------------------------------------------------------------------------
# Slicing and the registry.


def sliced(test: UnivariateTest | str, **test_kwargs) -> Callable[..., jax.Array]:
  """Turns a univariate test into its sliced multivariate version (SIGReg with that test).

  sliced(test)(z, key, num_slices) = mean over M random unit directions a_m of test(z @ a_m); with
  `epps_pulley` it is :func:`sliced_epps_pulley.sigreg` exactly. Leading axes of z (e.g. views) share the
  directions and are averaged too.

  Args:
    test: a univariate statistic [..., N, M] -> [..., M], e.g. one of :data:`TESTS`, or a name for
      :func:`get_test` (e.g. "watson" or "watson@official").
    **test_kwargs: keyword arguments bound to every call of `test`, e.g. `convention="official"`
      (with a name, `convention` goes to :func:`get_test`, so it works for Epps-Pulley too).

  Returns:
    `fn(z [..., N, D], key, num_slices=1024) -> scalar`.

  Example:
    >>> import jax
    >>> z = jax.random.normal(jax.random.key(0), (256, 64))
    >>> loss = sliced(cramer_von_mises)(z, jax.random.key(1), num_slices=128)  # about 1/6
    >>> round(float(loss), 2)
    0.14
    >>> official = sliced("cramer_von_mises", convention="official")  # (loss - 1/3072) / 256
    >>> bool(abs(official(z, jax.random.key(1), num_slices=128) - (loss - 1 / 3072) / 256) < 1e-7)
    True
  """
  if isinstance(test, str):
    test = get_test(test, test_kwargs.pop("convention", None))

  def sliced_test(
    z: jax.typing.ArrayLike, key: jax.Array, num_slices: int = sliced_epps_pulley.DEFAULT_NUM_SLICES
  ) -> jax.Array:
    z = _checks.as_float32_or_wider("z", z)
    _checks.check_min_rank("z", z, 2, "[..., N, D]")
    directions = sliced_epps_pulley.random_directions(key, z.shape[-1], num_slices, z.dtype)
    return jnp.mean(test(sliced_epps_pulley.project(z, directions), **test_kwargs))

  sliced_test.__name__ = f"sliced_{getattr(test, '__name__', 'test')}"
  return sliced_test


TESTS: dict[str, UnivariateTest] = {
  "epps_pulley": epps_pulley,
  "jarque_bera": jarque_bera,  # the extended form, against N(0, 1)
  "vcreg": vcreg,
  "cramer_von_mises": cramer_von_mises,
  "anderson_darling": anderson_darling,
  "watson": watson,
  "shapiro_wilk": shapiro_wilk,  # as 1 - W
}


# The tests whose official definition differs; the others are the same function in both conventions.
_CONVENTION_DEPENDENT = ("jarque_bera", "cramer_von_mises", "watson", "shapiro_wilk")


def get_test(name: str, convention: Convention | None = None) -> UnivariateTest:
  """The univariate statistic registered under `name` in :data:`TESTS`, in a convention.

  Args:
    name: a key of :data:`TESTS`, optionally qualified by a convention as "<test>@<convention>"
      (e.g. "shapiro_wilk@official"), so that a config string alone can choose it.
    convention: one of :data:`CONVENTIONS`; None: the one in `name`, else "lejepa_jax".

  Returns:
    The statistic x [..., N, M] -> [..., M]. For "lejepa_jax", and for the tests that are the same
    in both conventions (Epps-Pulley, VCReg, Anderson-Darling), the function in :data:`TESTS`
    itself; otherwise that function with `convention` bound, named "<test>_official".

  Raises:
    ValueError: an unknown test or convention, or a `convention` contradicting the one in `name`.
  """
  base, separator, qualifier = name.partition("@")
  if base not in TESTS:
    raise ValueError(
      f"Unknown normality test {name!r}; choose one of: {', '.join(TESTS)}, each "
      f"optionally as <test>@<convention> with a convention from {CONVENTIONS}."
    )
  if separator:
    _is_official(qualifier)
    if convention is not None and convention != qualifier:
      raise ValueError(f"Test {name!r} contradicts convention={convention!r}.")
    convention = qualifier
  convention = DEFAULT_CONVENTION if convention is None else convention
  if not _is_official(convention) or base not in _CONVENTION_DEPENDENT:
    return TESTS[base]
  test = functools.partial(TESTS[base], convention=convention)
  test.__name__ = f"{base}_{convention}"
  return test
