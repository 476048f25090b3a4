"""Batched ablations: sweep plans, stacked members trained under jax.vmap, the report."""
