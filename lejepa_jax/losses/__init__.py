"""Pure-JAX LeJEPA objective: SIGReg (sliced Epps-Pulley) and the prediction term; `stats`: the
alternative normality tests SIGReg can slice instead, for ablations."""

from lejepa_jax.losses.lejepa import lejepa_loss
from lejepa_jax.losses.prediction import prediction_loss
from lejepa_jax.losses.characteristic import epps_pulley
from lejepa_jax.losses.characteristic import project
from lejepa_jax.losses.characteristic import quadrature
from lejepa_jax.losses.characteristic import random_directions
from lejepa_jax.losses.characteristic import sigreg
from lejepa_jax.losses import stats

__all__ = [
    "epps_pulley",
    "lejepa_loss",
    "prediction_loss",
    "project",
    "quadrature",
    "random_directions",
    "sigreg",
    "stats",
]
