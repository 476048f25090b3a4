"""Runs and exports written by earlier lejepa_jax code stay readable (tests/data/written_by_043f0af,
made by the code before the subsystem layout; its README says how)."""

import os
import shutil

import helpers
import jax
import numpy as np
import pytest

from lejepa_jax import export
from lejepa_jax.evaluation import restore
from lejepa_jax.training import loop

SAVED = os.path.join(helpers.ROOT, "tests", "data", "written_by_043f0af")


def _images(seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(4, 16, 16, 3)).astype(np.float32)


def _flat_variables(encoder) -> dict[str, np.ndarray]:
  flat = {}

  def visit(prefix, node):
    for key, value in node.items():
      name = f"{prefix}.{key}" if prefix else key
      if isinstance(value, dict):
        visit(name, value)
      else:
        flat[name] = np.asarray(value)

  visit("", export.variables_tree(encoder))
  return flat


@pytest.mark.slow
def test_saved_checkpoint_and_export_hold_the_same_encoder():
  from safetensors.numpy import load_file

  encoder, config, step = restore.restore_encoder(os.path.join(SAVED, "run"))
  assert step == 3 and config.model.name == "vit" and config.model.variant == "Mi/8"
  exported = export.load_encoder(os.path.join(SAVED, "export"))
  tensors = load_file(os.path.join(SAVED, "export", "model.safetensors"))  # an independent reader
  # The export is the backbone alone (no --with_projector): every one of its arrays, and only those,
  # in the safetensors file, equal to the checkpoint's.
  ours, loaded = _flat_variables(encoder), _flat_variables(exported)
  assert set(loaded) == set(tensors) and set(tensors) < set(ours)
  assert any(name.startswith("params.projector") for name in set(ours) - set(tensors))
  for name, value in tensors.items():
    np.testing.assert_array_equal(ours[name], value, err_msg=name)
    np.testing.assert_array_equal(loaded[name], value, err_msg=name)
  x = _images()
  # The checkpoint's model also carries the projector: compare the features probes read.
  features = jax.jit(lambda model, v: model(v)[0])
  np.testing.assert_allclose(
    np.asarray(features(encoder, x)), np.asarray(features(exported, x)), rtol=1e-6
  )


@pytest.mark.slow
def test_saved_run_resumes(data_dir, tmp_path):
  """The saved train state, data iterator and config restore and train on (same tiny dataset)."""
  workdir = str(tmp_path / "run")
  shutil.copytree(os.path.join(SAVED, "run"), workdir)
  config = helpers.tiny_config(data_dir, total_steps=4)
  config.keep_checkpoints = 1
  loop.run(config, workdir, allow_config_change=True)
  rows = helpers.read_metrics(workdir)
  assert 4 in rows and np.isfinite(rows[4]["loss"])
  assert restore.restore_encoder(workdir)[2] == 4
