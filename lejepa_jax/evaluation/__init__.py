"""The evaluation job: restored encoders, frozen features, the evaluators by name (registry.py)."""
