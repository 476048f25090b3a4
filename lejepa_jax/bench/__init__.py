"""Benchmarks users can run on their own hardware: `python -m lejepa_jax.bench <name> [flags]`."""
