"""The LeJEPA objective: prediction term plus SIGReg, one hyperparameter (the SIGReg weight lambda)."""

from __future__ import annotations

import numbers
from typing import Literal

import jax
import jax.numpy as jnp

from lejepa_jax.losses import _checks, normality
from lejepa_jax.losses import prediction as prediction_lib
from lejepa_jax.losses import sliced_epps_pulley as sigreg_lib

Combine = Literal["convex", "sum"]
SigregViews = Literal["per_view", "pooled"]


def _check_options(sigreg_weight, combine: str, sigreg_views: str, test: str) -> None:
  normality.get_test(test)  # raises a ValueError listing the names
  if combine not in ("convex", "sum"):
    raise ValueError(f"`combine` must be 'convex' or 'sum', got {combine!r}.")
  if sigreg_views not in ("per_view", "pooled"):
    raise ValueError(f"`sigreg_views` must be 'per_view' or 'pooled', got {sigreg_views!r}.")
  if isinstance(sigreg_weight, numbers.Real):  # traced weights (e.g. under vmap) are checked by
    check_sigreg_weight(sigreg_weight, combine)  # whoever makes them (ablation.sweep_plan)


def check_sigreg_weight(sigreg_weight: float, combine: str) -> None:
  """ValueError unless lambda is in [0, 1] (combine="convex") or [0, inf) (combine="sum")."""
  upper = 1.0 if combine == "convex" else float("inf")
  if not 0.0 <= sigreg_weight <= upper:
    raise ValueError(
      f"`sigreg_weight` must be in [0, {upper}] for combine={combine!r}, got {sigreg_weight!r}."
    )


def lejepa_loss(
  z: jax.typing.ArrayLike,
  key: jax.Array,
  *,
  num_global: int,
  sigreg_weight: float | jax.Array,
  num_slices: int = sigreg_lib.DEFAULT_NUM_SLICES,
  t_max: float = sigreg_lib.DEFAULT_T_MAX,
  num_knots: int = sigreg_lib.DEFAULT_NUM_KNOTS,
  combine: Combine = "convex",
  sigreg_views: SigregViews = "per_view",
  test: str = "epps_pulley",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """LeJEPA loss = (1 - lambda) * prediction + lambda * mean over views of SIGReg(view).

  SIGReg is applied to each view separately over the batch axis, all views sharing one set of random
  directions drawn from `key`, then averaged over views.

  Args:
    z: [N, V, K] projector outputs, the `num_global` global views first. Shard N across devices.
    key: PRNG key for the SIGReg directions; derive it per step, e.g. `jax.random.fold_in(key, step)`.
    num_global: number of global views V_g.
    sigreg_weight: lambda, a Python float or a traced scalar (so it can be vmapped over).
    num_slices: number of SIGReg directions M.
    t_max: Epps-Pulley integration range [0, t_max].
    num_knots: Epps-Pulley quadrature knots.
    combine: "convex" (default, the paper's): (1 - lambda) * pred + lambda * sigreg;
      "sum": pred + lambda * sigreg, as some other codebases write it.
    sigreg_views: "per_view" (default, the paper's): SIGReg of each view over N, averaged over views;
      "pooled": one SIGReg over all N * V embeddings, as some other codebases do.
    test: the univariate normality test SIGReg slices, a name from `normality.TESTS`
      ("<name>@official": the authors' code's conventions, docs/normality_tests.md): "epps_pulley"
      (default, the paper's) or one of the alternatives it compares, for ablations (`t_max` and
      `num_knots` only apply to Epps-Pulley). The "sigreg" part reports that sliced statistic.

  Returns:
    `(loss, {"pred": ..., "sigreg": ...})`, scalars in float32 (float64 for float64 input).

  Example:
    >>> import jax
    >>> z = jax.random.normal(jax.random.key(0), (64, 4, 32))
    >>> loss, parts = lejepa_loss(z, jax.random.key(1), num_global=2, sigreg_weight=0.05)
    >>> sorted(parts)
    ['pred', 'sigreg']
    >>> bool(abs(loss - (0.95 * parts["pred"] + 0.05 * parts["sigreg"])) < 1e-6)
    True

  References:
    Balestriero & LeCun, LeJEPA, arXiv 2511.08544, 2025 (the LeJEPA objective, sections 4-5).
  """
  _check_options(sigreg_weight, combine, sigreg_views, test)
  z = _checks.as_float32_or_wider("z", z)
  _checks.check_rank("z", z, 3, "[N, V, K]")
  pred = prediction_lib.prediction_loss(z, num_global)
  if sigreg_views == "per_view":
    per_view = jnp.swapaxes(z, 0, 1)  # [V, N, K]: views become a leading axis sharing directions
  else:
    per_view = z.reshape(-1, z.shape[-1])  # [N * V, K]
  if test == "epps_pulley":  # the fused, memory-lean path
    reg = sigreg_lib.sigreg(per_view, key, num_slices=num_slices, t_max=t_max, num_knots=num_knots)
  else:
    reg = normality.sliced(normality.get_test(test))(per_view, key, num_slices)
  weight = jnp.asarray(sigreg_weight, z.dtype)
  pred_weight = 1.0 - weight if combine == "convex" else jnp.ones((), z.dtype)
  return pred_weight * pred + weight * reg, {"pred": pred, "sigreg": reg}
