"""lejepa_jax: LeJEPA self-supervised pretraining in JAX/Flax NNX."""

from lejepa_jax import losses

__version__ = "0.1.0"
__all__ = ["losses"]
