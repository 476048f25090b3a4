"""Helpers shared by the test modules (fixtures live in conftest.py)."""

import json
import os

import ml_collections

from lejepa_jax import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir: str, total_steps: int = 6) -> ml_collections.ConfigDict:
  """tests/tiny_config.py (a seconds-long ViT run) on the `data_dir` fixture's images."""
  config = config_lib.load_config_file(os.path.join(ROOT, "tests", "tiny_config.py"), data_dir)
  config.total_steps = total_steps
  return config


def read_metrics(workdir: str) -> dict[int, dict]:
  """A run's metrics.jsonl as {step: row}."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {row["step"]: row for row in map(json.loads, f)}
