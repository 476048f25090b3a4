"""Trace-time argument validation shared by the loss functions.

Every check runs on static shapes and dtypes, so a bad call fails when it is traced (before anything
compiles) with a ValueError that names the offending argument.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp


def as_float32_or_wider(name: str, x: jax.typing.ArrayLike) -> jax.Array:
  """Returns `x` as an array computed in float32 at least (float64 input stays float64).

  Low-precision inputs (bfloat16, float16) are upcast: the statistics below subtract nearly equal
  numbers and lose everything in 8 mantissa bits.
  """
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"`{name}` must be a floating-point array, got dtype {x.dtype}.")
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def check_min_rank(name: str, x: jax.Array, rank: int, layout: str) -> None:
  if x.ndim < rank:
    raise ValueError(f"`{name}` must have shape {layout} (rank >= {rank}), got shape {x.shape}.")


def check_rank(name: str, x: jax.Array, rank: int, layout: str) -> None:
  if x.ndim != rank:
    raise ValueError(f"`{name}` must have shape {layout} (rank {rank}), got shape {x.shape}.")


def check_num_samples(name: str, num_samples: int) -> None:
  if num_samples < 2:
    raise ValueError(
      f"`{name}` needs at least 2 samples along its batch axis to estimate a distribution, "
      f"got {num_samples}."
    )


def check_quadrature(t_max: float, num_knots: int) -> None:
  if not isinstance(num_knots, numbers.Integral) or isinstance(num_knots, bool) or num_knots < 2:
    raise ValueError(f"`num_knots` must be an integer >= 2, got {num_knots!r}.")
  if not isinstance(t_max, numbers.Real) or isinstance(t_max, bool) or not t_max > 0:
    raise ValueError(f"`t_max` must be a positive number, got {t_max!r}.")


def check_positive_int(name: str, value: int) -> None:
  if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
    raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
