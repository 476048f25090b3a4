"""Small, self-contained experiments that run on a CPU: `python -m lejepa_jax.examples.<name>`."""
