"""Independent float64 NumPy transcriptions of the paper's formulas (PAPER_NOTES.md), for the tests.

Nothing here imports lejepa_jax: these are written from the formulas, not from the code under test.
"""

import numpy as np


def trapezoid_knots(t_max: float, num_knots: int):
  """Knots on [0, t_max] and doubled trapezoid weights times exp(-t^2/2)."""
  dt = t_max / (num_knots - 1)
  t = dt * np.arange(num_knots)
  w = np.array([dt] + [2 * dt] * (num_knots - 2) + [dt]) * np.exp(-t**2 / 2)
  return t, w


def epps_pulley(x: np.ndarray, t_max: float = 3.0, num_knots: int = 17) -> np.ndarray:
  """x [N, M] -> [M]: N * sum_k w_k |mean_n exp(i t_k x) - exp(-t_k^2/2)|^2, one knot at a time."""
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  t, w = trapezoid_knots(t_max, num_knots)
  total = np.zeros(x.shape[1])
  for t_k, w_k in zip(t, w):
    ecf = np.mean(np.exp(1j * t_k * x), axis=0)
    total += w_k * np.abs(ecf - np.exp(-t_k**2 / 2))**2
  return n * total


def epps_pulley_closed_form(x: np.ndarray) -> np.ndarray:
  """x [N, M] -> [M]: the same statistic integrated over the whole real line (O(N^2))."""
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  diff = x[:, None, :] - x[None, :, :]
  return (np.sqrt(2 * np.pi) / n * np.exp(-diff**2 / 2).sum((0, 1))
          - 2 * np.sqrt(np.pi) * np.exp(-x**2 / 4).sum(0) + n * np.sqrt(2 * np.pi / 3))


def gaussian_expectation(t_max: float = 3.0, num_knots: int = 17) -> float:
  """E[EP] per slice for i.i.d. N(0, 1) samples: sum_k w_k (1 - exp(-t_k^2)), for every N."""
  t, w = trapezoid_knots(t_max, num_knots)
  return float(np.sum(w * (1 - np.exp(-t**2))))


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
      total += float(np.sum((center - z[i, j])**2))
  return total / (n * v * k)


def sigreg(z: np.ndarray, directions: np.ndarray, t_max=3.0, num_knots=17) -> float:
  """z [N, D], directions [D, M] -> mean over slices of the Epps-Pulley statistic."""
  return float(np.mean(epps_pulley(np.asarray(z, np.float64) @ directions, t_max, num_knots)))
