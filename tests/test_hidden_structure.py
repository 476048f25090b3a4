"""The hidden-structure example runs end to end on a small setting and writes its report."""

import json
import os

import jax
import numpy as np
import pytest

from lejepa_jax.examples import hidden_structure


@pytest.mark.slow
def test_hidden_structure_writes_its_report_and_epps_pulley_decreases(tmp_path):
  results = hidden_structure.run(
    str(tmp_path),
    dims=(8,),
    steps=40,
    num_samples=40,
    learning_rate=0.05,
    tests=("epps_pulley", "vcreg"),
  )
  assert os.path.getsize(tmp_path / "hidden_structure.png") > 0
  with open(tmp_path / "results.json") as f:
    assert json.load(f) == json.loads(json.dumps(results))
  runs = results["dims"]["8"]
  assert set(runs["tests"]) == {"epps_pulley", "vcreg"}
  assert runs["start"]["abs_correlation"] > 0.99  # the X: |z_0| == |z_1| exactly
  epps_pulley = runs["tests"]["epps_pulley"]
  assert epps_pulley["final"] < 0.5 * epps_pulley["initial"], epps_pulley
  assert epps_pulley["last_step_loss"] < epps_pulley["first_step_loss"]


def test_x_has_gaussian_marginals_and_identity_covariance():
  z = np.asarray(hidden_structure.hidden_x_data(jax.random.key(0), 20000, 4), np.float64)
  np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(4), atol=0.05)
  np.testing.assert_allclose(np.abs(z[:, 0]), np.abs(z[:, 1]))
  for column in z.T:  # every marginal N(0, 1): quantiles
    np.testing.assert_allclose(np.quantile(column, [0.1, 0.5, 0.9]), [-1.2816, 0, 1.2816], atol=0.05)
