"""Pure-JAX LeJEPA objective: SIGReg (`sliced_epps_pulley`) and the prediction term (`prediction`),
combined in `lejepa`; `normality`: the alternative normality tests SIGReg can slice instead, for
ablations."""

from lejepa_jax.losses import normality
from lejepa_jax.losses.lejepa import lejepa_loss
from lejepa_jax.losses.prediction import prediction_loss
from lejepa_jax.losses.sliced_epps_pulley import (
  epps_pulley,
  project,
  quadrature,
  random_directions,
  sigreg,
)

__all__ = [
  "epps_pulley",
  "lejepa_loss",
  "prediction_loss",
  "project",
  "quadrature",
  "random_directions",
  "normality",
  "sigreg",
]
