"""Frozen-feature evaluators against NumPy references, and the evaluation of a real checkpoint."""

import json
import os

import cv2
import jax
import numpy as np
import pytest

from lejepa_jax import config_lib, evaluate, sharding, train
from lejepa_jax.data import prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _knn_reference(train_x, train_y, test_x, num_classes, k, temperature):
  """Brute force, one query at a time, in float64."""
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
  bank, queries = unit(train_x.astype(np.float64)), unit(test_x.astype(np.float64))
  predictions = []
  for q in queries:
    sims = bank @ q
    nearest = np.argsort(-sims)[:k]
    votes = np.zeros(num_classes)
    for i in nearest:
      votes[train_y[i]] += np.exp(sims[i] / temperature)
    predictions.append(np.argmax(votes))
  return np.array(predictions)


def test_knn_matches_brute_force_reference():
  rng = np.random.default_rng(0)
  train_x, test_x = rng.normal(size=(300, 12)), rng.normal(size=(50, 12))
  train_y, test_y = rng.integers(0, 5, 300), rng.integers(0, 5, 50)
  want = _knn_reference(train_x, train_y, test_x, 5, k=20, temperature=0.07)
  got = evaluate.knn(train_x, train_y, test_x, test_y, 5)["top1"]
  assert got == pytest.approx(np.mean(want == test_y))


def test_linear_probe_separates_gaussian_blobs():
  rng = np.random.default_rng(1)
  centers = rng.normal(size=(8, 16)) * 4
  make = lambda n: (lambda y: (centers[y] + rng.normal(size=(n, 16)), y))(  # noqa: E731
      rng.integers(0, 8, n))
  (train_x, train_y), (test_x, test_y) = make(2000), make(500)
  result = evaluate.linear_probe(train_x.astype(np.float32), train_y, test_x.astype(np.float32),
                                 test_y, 8, epochs=20, batch_size=64, lr=1e-2)
  assert result["top1"] > 0.95 and result["top5"] >= result["top1"]


@pytest.fixture(scope="module")
def structured_data(tmp_path_factory):
  """Four classes that differ in brightness and colour: learnable from any reasonable features."""
  root = tmp_path_factory.mktemp("structured")
  rng = np.random.default_rng(0)
  for i in range(64):
    label = i % 4
    (root / f"c{label}").mkdir(exist_ok=True)
    base = np.zeros((20, 20, 3)) + 40 + 50 * label
    base[..., label % 3] += 30
    image = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(root / f"c{label}" / f"{i}.png"), image)
  out = str(tmp_path_factory.mktemp("tfds"))
  prepare.prepare_image_folder("unit_train", str(root), out)
  return out


def _tiny_config(data_dir):
  return config_lib.load_config_file(os.path.join(ROOT, "tests", "tiny_config.py"), data_dir)


def test_evaluating_a_checkpoint_beats_chance_on_any_mesh(devices, structured_data, tmp_path):
  workdir = str(tmp_path / "run")
  config = _tiny_config(structured_data)
  config.total_steps = 3
  train.run(config, workdir)
  results = evaluate.evaluate(workdir)
  assert results["linear"]["top1"] > 0.6 and results["knn"]["top1"] > 0.6  # chance: 0.25
  rows = [json.loads(line) for line in open(os.path.join(workdir, "eval", "linear.jsonl"))]
  assert rows[-1]["step"] == 3
  # Written on 8 devices (data 4 x fsdp 2), restored onto 1 and 4: the same features.
  features = []
  for count in (1, 4):
    mesh = sharding.make_mesh({"data": count}, devices=jax.devices()[:count])
    encoder, restored_config, _ = evaluate.restore_encoder(workdir, mesh=mesh)
    features.append(evaluate.extract_features(encoder, restored_config, "train", limit=16)[0])
  np.testing.assert_allclose(features[0], features[1], rtol=1e-5, atol=1e-5)
