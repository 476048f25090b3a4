"""Independent float64 NumPy transcriptions of the paper's formulas (docs/method.md), for the tests.

Nothing here imports lejepa_jax: these are written from the formulas, not from the code under test.
"""

import numpy as np


def trapezoid_knots(t_max: float, num_knots: int):
  """Knots on [0, t_max] and doubled trapezoid weights times exp(-t^2/2)."""
  dt = t_max / (num_knots - 1)
  t = dt * np.arange(num_knots)
  w = np.array([dt] + [2 * dt] * (num_knots - 2) + [dt]) * np.exp(-(t**2) / 2)
  return t, w


def epps_pulley(x: np.ndarray, t_max: float = 3.0, num_knots: int = 17) -> np.ndarray:
  """x [N, M] -> [M]: N * sum_k w_k |mean_n exp(i t_k x) - exp(-t_k^2/2)|^2, one knot at a time."""
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  t, w = trapezoid_knots(t_max, num_knots)
  total = np.zeros(x.shape[1])
  for t_k, w_k in zip(t, w):
    ecf = np.mean(np.exp(1j * t_k * x), axis=0)
    total += w_k * np.abs(ecf - np.exp(-(t_k**2) / 2)) ** 2
  return n * total


def epps_pulley_closed_form(x: np.ndarray) -> np.ndarray:
  """x [N, M] -> [M]: the same statistic integrated over the whole real line (O(N^2))."""
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  diff = x[:, None, :] - x[None, :, :]
  return (
    np.sqrt(2 * np.pi) / n * np.exp(-(diff**2) / 2).sum((0, 1))
    - 2 * np.sqrt(np.pi) * np.exp(-(x**2) / 4).sum(0)
    + n * np.sqrt(2 * np.pi / 3)
  )


def gaussian_expectation(t_max: float = 3.0, num_knots: int = 17) -> float:
  """E[EP] per slice for i.i.d. N(0, 1) samples: sum_k w_k (1 - exp(-t_k^2)), for every N."""
  t, w = trapezoid_knots(t_max, num_knots)
  return float(np.sum(w * (1 - np.exp(-(t**2)))))


def numerical_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
  """Central finite differences of a scalar float64 function."""
  x = np.asarray(x, np.float64)
  grad = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    step = np.zeros_like(x)
    step[idx] = eps
    grad[idx] = (f(x + step) - f(x - step)) / (2 * eps)
  return grad


def prediction_loss(z: np.ndarray, num_global: int) -> float:
  """z [N, V, K]: mean over (n, v, k) of (mean of the global views - z)^2, with explicit loops."""
  z = np.asarray(z, np.float64)
  n, v, k = z.shape
  total = 0.0
  for i in range(n):
    center = sum(z[i, j] for j in range(num_global)) / num_global
    for j in range(v):
      total += float(np.sum((center - z[i, j]) ** 2))
  return total / (n * v * k)


def sigreg(z: np.ndarray, directions: np.ndarray, t_max=3.0, num_knots=17) -> float:
  """z [N, D], directions [D, M] -> mean over slices of the Epps-Pulley statistic."""
  return float(np.mean(epps_pulley(np.asarray(z, np.float64) @ directions, t_max, num_knots)))


# Normality tests other than Epps-Pulley (lejepa_jax.losses.normality), from their textbook definitions.


def cdf_statistic_by_integration(x: np.ndarray, watson: bool = False) -> np.ndarray:
  """x [N, M] -> [M]: N * int_0^1 (F_N(u) - u - c)^2 du over u = Phi(x), integrated piece by piece.

  c = 0 is Cramer-von Mises W^2; c = int_0^1 (F_N(u) - u) du is Watson's U^2. F_N is constant (k / N)
  between consecutive order statistics, so each piece integrates exactly.
  """
  from scipy import stats

  u = np.sort(stats.norm.cdf(np.asarray(x, np.float64)), axis=0)
  n = u.shape[0]
  edges = np.concatenate([np.zeros((1,) + u.shape[1:]), u, np.ones((1,) + u.shape[1:])])
  level = np.arange(n + 1)[:, None] / n  # F_N on [edges[k], edges[k + 1])
  lo, hi = edges[:-1], edges[1:]
  shift = np.sum(level * (hi - lo) - (hi**2 - lo**2) / 2, axis=0) if watson else 0.0
  return n * np.sum(((level - shift - lo) ** 3 - (level - shift - hi) ** 3) / 3, axis=0)


def anderson_darling(x: np.ndarray) -> np.ndarray:
  """x [N, M] -> [M]: A^2 against N(0, 1), -N - mean_i (2i - 1)(log F(x_(i)) + log S(x_(N+1-i)))."""
  from scipy import stats

  x = np.sort(np.asarray(x, np.float64), axis=0)
  n = x.shape[0]
  i = np.arange(1, n + 1)[:, None]
  return -n - np.mean((2 * i - 1) * (stats.norm.logcdf(x) + stats.norm.logsf(x[::-1])), axis=0)


def extended_jarque_bera(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """x [N, M] -> (VC, EJB), each [M], from LeJEPA's formula with scipy's Jarque-Bera statistic.

  VC = N mu^2 / s^2 + (N - 1)(s^2 - 1)^2 / 2 (s^2 unbiased); EJB = VC + JB.
  """
  from scipy import stats

  x = np.asarray(x, np.float64)
  n = x.shape[0]
  mean, var = x.mean(0), x.var(0, ddof=1)
  vc = n * mean**2 / var + (n - 1) * (var - 1) ** 2 / 2
  return vc, vc + np.array([stats.jarque_bera(col).statistic for col in x.T])


def _bhep_from_squared_norms(pair_sq: np.ndarray, own_sq: np.ndarray, d: int, beta: float) -> float:
  """BHEP from |z_j - z_k|^2 [N, N] and |z_j|^2 [N] (either Euclidean or Mahalanobis)."""
  n, b2 = own_sq.shape[0], beta**2
  return float(
    np.exp(-b2 / 2 * pair_sq).sum() / n
    - 2 * (1 + b2) ** (-d / 2) * np.exp(-b2 / (2 * (1 + b2)) * own_sq).sum()
    + n * (1 + 2 * b2) ** (-d / 2)
  )


def bhep(z: np.ndarray, beta: float = 1.0) -> float:
  """z [N, D]: the BHEP statistic against N(0, I) with explicit pairwise differences."""
  z = np.asarray(z, np.float64)
  pair_sq = np.sum((z[:, None, :] - z[None, :, :]) ** 2, axis=-1)
  return _bhep_from_squared_norms(pair_sq, np.sum(z**2, -1), z.shape[1], beta)


def henze_zirkler(z: np.ndarray) -> float:
  """z [N, D]: Henze-Zirkler from Mahalanobis distances with the inverse biased covariance."""
  z = np.asarray(z, np.float64)
  n, d = z.shape
  beta = ((2 * d + 1) * n / 4) ** (1 / (d + 4)) / np.sqrt(2)
  centred = z - z.mean(0)
  precision = np.linalg.inv(centred.T @ centred / n)
  diffs = centred[:, None, :] - centred[None, :, :]
  pair_sq = np.einsum("jkd,de,jke->jk", diffs, precision, diffs)
  own_sq = np.einsum("jd,de,je->j", centred, precision, centred)
  return _bhep_from_squared_norms(pair_sq, own_sq, d, beta)
