"""lejepa_jax: LeJEPA self-supervised pretraining in JAX/Flax NNX.

Importing the package imports nothing else: each subsystem (`lejepa_jax.losses`, `.models`, `.data`,
`.training`, ...) is imported where it is used, so lifting one out takes only the layers below it.
"""

__version__ = "0.1.0"
__all__ = ["losses"]


def __getattr__(name: str):
  """`lejepa_jax.losses` after a bare `import lejepa_jax` (the objective is the package's API)."""
  if name == "losses":
    import importlib

    return importlib.import_module("lejepa_jax.losses")
  raise AttributeError(f"module 'lejepa_jax' has no attribute {name!r}")
