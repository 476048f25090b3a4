"""LeJEPA's prediction (invariance) term.

Every view is pulled toward the mean of its image's global views.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

from lejepa_jax.losses import _checks


def check_num_global(num_global: int, num_views: int) -> None:
  """Raises a ValueError unless 1 <= num_global <= num_views."""
  if (
    not isinstance(num_global, numbers.Integral)
    or isinstance(num_global, bool)
    or not 1 <= num_global <= num_views
  ):
    raise ValueError(
      f"`num_global` must be an integer between 1 and the number of views ({num_views}), "
      f"got {num_global!r}."
    )


def prediction_loss(z: jax.typing.ArrayLike, num_global: int) -> jax.Array:
  """Mean squared distance of every view's embedding to the mean of the image's global views.

  mu_n = mean_{v < num_global} z[n, v];  loss = mean over (n, v, k) of (mu_n - z[n, v, k])^2.

  The mean runs over all V views (global views included) and over the K coordinates (the paper's
  formula sums over K, which only rescales the SIGReg weight). There is no stop-gradient: gradients
  flow through mu_n as well.

  Args:
    z: [N, V, K] projector outputs, views ordered with the `num_global` global views first.
    num_global: number of global views V_g (1 <= V_g <= V).

  Returns:
    Scalar float32 (float64 for float64 input).

  Example:
    >>> import jax
    >>> z = jax.random.normal(jax.random.key(0), (8, 4, 16))  # 8 images, 2 global + 2 local views
    >>> loss = prediction_loss(z, num_global=2)
    >>> centre = z[:, :2].mean(axis=1, keepdims=True)  # the mean of each image's global views
    >>> bool(abs(loss - ((z - centre) ** 2).mean()) < 1e-6)
    True

  References:
    Balestriero & LeCun, LeJEPA, arXiv 2511.08544, 2025, section 5 (the prediction term).
  """
  z = _checks.as_float32_or_wider("z", z)
  _checks.check_rank("z", z, 3, "[N, V, K]")
  check_num_global(num_global, z.shape[1])
  centers = jnp.mean(z[:, :num_global], axis=1, keepdims=True)  # [N, 1, K]
  return jnp.mean(jnp.square(centers - z))
