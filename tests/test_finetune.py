"""Fine-tuning evaluation: the whole encoder learns what its frozen features do not show."""

import cv2
import jax
import numpy as np
import pytest
from helpers import TraceCounter, tiny_config

from lejepa_jax.data import prepare
from lejepa_jax.evaluation import evaluators, extraction, finetune
from lejepa_jax.evaluation import job as evaluation_job
from lejepa_jax.training import loop, train_state


@pytest.fixture(scope="module")
def quadrant_data(tmp_path_factory):
  """Four classes: which quadrant of a noisy 20 px image holds a faint square. A linear map of the
  pooled features of a random network barely sees it; a network trained on it does."""
  root = tmp_path_factory.mktemp("quadrants")
  rng = np.random.default_rng(0)
  for i in range(128):
    label = i % 4
    (root / f"c{label}").mkdir(exist_ok=True)
    image = rng.normal(110, 30, (20, 20, 3))
    top, left = 10 * (label // 2), 10 * (label % 2)
    image[top + 2 : top + 8, left + 2 : left + 8] += 70
    cv2.imwrite(str(root / f"c{label}" / f"{i}.png"), np.clip(image, 0, 255).astype(np.uint8))
  out = str(tmp_path_factory.mktemp("tfds"))
  prepare.prepare_image_folder("unit_train", str(root), out)
  return out


@pytest.mark.slow
def test_finetuning_lowers_the_loss_and_beats_the_frozen_linear_probe(devices, quadrant_data):
  config = tiny_config(quadrant_data)
  config.data.global_views = dict(count=2, size=16, scale=(0.9, 1.0))
  encoder = train_state.build_train_objects(config).model
  encoder.eval()
  x, y, _ = extraction.extract_features(encoder, config, config.data.eval_split)
  frozen = evaluators.linear(evaluators.FeatureSet(x, y, x, y, 4), epochs=30)["top1"]
  results = finetune.finetune(
    encoder.backbone,
    config,
    extraction.eval_batches(config, config.data.eval_split),
    num_classes=4,
    epochs=40,
    batch_size=32,
    lr=5e-3,
    crop_scale=(0.9, 1.0),
    layer_decay=0.9,
  )
  assert results["loss_end"] < 0.7 * results["loss_start"], results
  assert results["top1"] > frozen + 0.2, (results, frozen)
  assert results["steps"] == 40 * 128 // 32


def test_layer_wise_decay_scales_each_vit_block_by_its_depth():
  def path(*names):
    return tuple(jax.tree_util.DictKey(n) for n in names)

  assert finetune.layer_scale(path("head", "kernel"), 4, 0.5) == 1.0
  assert finetune.layer_scale(path("backbone", "norm", "scale"), 4, 0.5) == 1.0
  assert finetune.layer_scale(path("backbone", "blocks", 3, "mlp", "fc1", "kernel"), 4, 0.5) == 0.5
  assert finetune.layer_scale(path("backbone", "blocks", 0, "attn", "qkv", "kernel"), 4, 0.5) == 0.5**4
  assert finetune.layer_scale(path("backbone", "pos_embed"), 4, 0.5) == 0.5**5
  assert finetune.layer_scale(path("backbone", "stem", "kernel"), None, 0.5) == 1.0


@pytest.mark.slow
def test_the_evaluation_job_fine_tunes_a_checkpoint_beside_the_frozen_probes(
  devices, quadrant_data, tmp_path
):
  import json
  import os

  from lejepa_jax import config_lib

  workdir = str(tmp_path / "run")
  loop.run(tiny_config(quadrant_data, 2), workdir)
  probe = config_lib.probe_config()
  probe.evaluators = "finetune"
  probe.finetune = dict(probe.finetune, epochs=1.0, batch_size=32)
  results = evaluation_job.evaluate(workdir, probe=probe)
  assert set(results) == {"finetune"} and results["finetune"]["steps"] == 128 // 32
  rows = [json.loads(line) for line in open(os.path.join(workdir, "eval", "finetune.jsonl"))]
  assert rows[-1]["step"] == 2 and rows[-1]["top1"] == results["finetune"]["top1"]


def test_chosen_records_are_k_of_each_class_read_from_the_source(quadrant_data):
  from lejepa_jax import data

  source = data.open_source("unit_train", "train", quadrant_data)
  labels = data.record_labels(source, chunk=48)  # chunks that do not divide the 128 records
  assert labels.shape == (128,) and np.bincount(labels).tolist() == [32] * 4  # as the fixture wrote
  for seed in (0, 1):
    indices = evaluators.per_class_sample(labels, 3, 4, seed)
    chosen = data.ChosenRecords(source, indices)
    records = [chosen[i] for i in range(len(chosen))]
    assert np.bincount([r["label"] for r in records]).tolist() == [3] * 4
    for record, index in zip(records, indices):
      assert record["image"] == source[int(index)]["image"]
    assert chosen.__getitems__([0, 5]) == [records[0], records[5]]
  draws = [set(evaluators.per_class_sample(labels, 3, 4, seed).tolist()) for seed in (0, 1)]
  assert draws[0] != draws[1]


@pytest.mark.slow
def test_k_shot_fine_tuning_trains_each_draw_on_k_examples_per_class(devices, quadrant_data):
  config = tiny_config(quadrant_data)
  encoder = train_state.build_train_objects(config).model
  with TraceCounter("_train_step") as traced, TraceCounter("_predict") as predicted:
    results = finetune.evaluate(
      encoder.backbone,
      config,
      lambda: extraction.eval_batches(config, config.data.eval_split),
      num_classes=4,
      train_examples=32,
      shots=(1, 2),
      seeds=2,
      epochs=24.0,
      batch_size=32,
      min_steps=4,
    )
  # 5 runs, 3 run lengths: the two draws of each k share one traced step, and every run one
  # predictor (fewer traces where another test of this process already traced one of them).
  assert traced.count <= 3 and predicted.count <= 1
  # Steps: max(2, ceil(epochs x examples / batch), min_steps), so they tell how many examples ran.
  assert results["steps"] == 24  # the full run on its first 32 examples
  assert results["1shot_steps"] == 4  # 4 examples: 3 steps, raised to min_steps
  assert results["2shot_steps"] == 6  # 8 examples: 24 x 8 / 32
  for k in (1, 2):
    assert 0 <= results[f"{k}shot"] <= 1 and results[f"{k}shot_std"] >= 0
