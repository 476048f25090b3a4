"""Frozen-feature evaluators against NumPy references, and the evaluation of a real checkpoint."""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import warnings

import cv2
import jax
import numpy as np
import pytest
from flax import nnx

from lejepa_jax import config_lib, data, plots
from lejepa_jax import evaluate as evaluate_entry
from lejepa_jax.data import prepare
from lejepa_jax.evaluation import eval_records, evaluators, extraction, restore
from lejepa_jax.evaluation import job as evaluation_job
from lejepa_jax.scale import sharding
from lejepa_jax.training import checkpointing, loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _knn_reference(train_x, train_y, test_x, num_classes, k, temperature):
  """Brute force, one query at a time, in float64."""
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
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
  got = evaluators.knn(evaluators.FeatureSet(train_x, train_y, test_x, test_y, 5))["top1"]
  assert got == pytest.approx(np.mean(want == test_y))


@pytest.mark.slow
def test_evaluators_pass_features_as_arguments_not_constants():
  """Features closed over by a jitted function become constants of the program: gigabytes of copies
  for large feature maps. With a 1 KB threshold JAX warns about any such capture."""
  rng = np.random.default_rng(0)
  fs = evaluators.FeatureSet(
    rng.normal(size=(300, 12)),
    rng.integers(0, 5, 300),
    rng.normal(size=(50, 12)),
    rng.integers(0, 5, 50),
    5,
  )
  previous = jax.config.jax_captured_constants_warn_bytes
  jax.config.update("jax_captured_constants_warn_bytes", 1024)
  try:
    with warnings.catch_warnings():
      warnings.filterwarnings("error", message=".*constants were captured.*")
      evaluators.knn(fs)
      evaluators.linear(fs, epochs=1, batch_size=64)
  finally:
    jax.config.update("jax_captured_constants_warn_bytes", previous)


def test_linear_probe_separates_gaussian_blobs():
  rng = np.random.default_rng(1)
  centers = rng.normal(size=(8, 16)) * 4
  make = lambda n: (lambda y: (centers[y] + rng.normal(size=(n, 16)), y))(rng.integers(0, 8, n))
  (train_x, train_y), (test_x, test_y) = make(2000), make(500)
  fs = evaluators.FeatureSet(train_x.astype(np.float32), train_y, test_x.astype(np.float32), test_y, 8)
  result = evaluators.linear(fs, epochs=20, batch_size=64, lr=1e-2)
  assert result["top1"] > 0.95 and result["top5"] >= result["top1"]


def _blobs(rng, n, centers):
  y = rng.integers(0, len(centers), n)
  return centers[y] + rng.normal(size=(n, centers.shape[1])), y


def test_ridge_classifier_matches_primal_normal_equations():
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(30, 50)), rng.integers(0, 3, 30)
  weights, bias = evaluators.ridge_classifier(x, y, 3, ridge=0.5)
  # Primal form (an independent derivation): (Xc^T Xc + r I) W = Xc^T Tc, b = mean(T) - mean(X) W.
  targets = np.eye(3)[y]
  xc, tc = x - x.mean(0), targets - targets.mean(0)
  want = np.linalg.solve(xc.T @ xc + 0.5 * np.eye(50), xc.T @ tc)
  np.testing.assert_allclose(weights, want, rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose(bias, targets.mean(0) - x.mean(0) @ want, atol=1e-10)


def test_fewshot_separable_classes_and_seed_spread():
  rng = np.random.default_rng(3)
  centers = rng.normal(size=(5, 32)) * 3
  (train_x, train_y), (test_x, test_y) = _blobs(rng, 1000, centers), _blobs(rng, 300, centers)
  result = evaluators.fewshot(
    evaluators.FeatureSet(train_x, train_y, test_x, test_y, 5), shots=(1, 10), seeds=4
  )
  assert result["10shot"] > 0.95 and result["1shot"] > 0.5
  assert result["10shot"] >= result["1shot"] - 0.02
  assert set(result) == {"1shot", "1shot_std", "10shot", "10shot_std"}
  # Structureless features: chance level (1/5), whatever the shots.
  noise = evaluators.FeatureSet(
    rng.normal(size=(1000, 32)), train_y, rng.normal(size=(300, 32)), test_y, 5
  )
  assert evaluators.fewshot(noise, shots=(10,), seeds=4)["10shot"] < 0.35


@pytest.mark.parametrize("rank", [1, 4, 17])
def test_rankme_of_equal_singular_values_is_the_rank(rank):
  rng = np.random.default_rng(rank)
  u, _ = np.linalg.qr(rng.normal(size=(200, rank)))
  v, _ = np.linalg.qr(rng.normal(size=(64, rank)))
  x = 3.0 * u @ v.T  # `rank` singular values, all equal: entropy log(rank)
  assert evaluators.rankme(x) == pytest.approx(rank, rel=1e-3)


@pytest.mark.slow
def test_label_free_tells_collapse_from_gaussian_embeddings():
  rng = np.random.default_rng(4)
  gaussian = rng.normal(size=(2000, 16)).astype(np.float32)
  collapsed = (rng.normal(size=(2000, 1)) * np.ones((1, 16))).astype(np.float32)
  metrics = {
    name: evaluators.label_free(evaluators.FeatureSet(z, None, z, None, 2, test_z=z), num_slices=256)
    for name, z in (("gaussian", gaussian), ("collapsed", collapsed))
  }
  assert (
    metrics["gaussian"]["rankme_projections"] > 15 > 1.1 > metrics["collapsed"]["rankme_projections"]
  )
  assert metrics["collapsed"]["sigreg"] > 20 * metrics["gaussian"]["sigreg"]
  # A diverged encoder's features: reported as NaN, not an exception that blocks a report.
  nan = np.full((50, 16), np.nan, np.float32)
  diverged = evaluators.label_free(evaluators.FeatureSet(nan, None, nan, None, 2, test_z=nan))
  assert all(np.isnan(v) for v in diverged.values()), diverged


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


@pytest.fixture(scope="module")
def trained_run(structured_data, tmp_path_factory):
  """The tiny config trained for 6 steps on 8 devices (data 4 x fsdp 2): checkpoints at 3 and 6."""
  workdir = str(tmp_path_factory.mktemp("trained") / "run")
  loop.run(_tiny_config(structured_data), workdir)
  return workdir


def _copy_run(trained_run, tmp_path):
  """A private copy of the trained run (tests write eval results into, or damage, their copy)."""
  workdir = str(tmp_path / "run")
  shutil.copytree(trained_run, workdir)
  return workdir


@pytest.mark.slow
def test_evaluating_a_checkpoint_beats_chance_on_any_mesh(devices, trained_run, tmp_path):
  workdir = _copy_run(trained_run, tmp_path)
  results = evaluation_job.evaluate(workdir, step=3)
  assert results["linear"]["top1"] > 0.6 and results["knn"]["top1"] > 0.6  # chance: 0.25
  rows = [json.loads(line) for line in open(os.path.join(workdir, "eval", "linear.jsonl"))]
  assert rows[-1]["step"] == 3
  # Written on 8 devices (data 4 x fsdp 2), restored onto 1 and 4: the same features.
  features = []
  for count in (1, 4):
    mesh = sharding.make_mesh({"data": count}, devices=jax.devices()[:count])
    encoder, restored_config, _ = restore.restore_encoder(workdir, mesh=mesh)
    features.append(extraction.extract_features(encoder, restored_config, "train", limit=16)[0])
  np.testing.assert_allclose(features[0], features[1], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_feature_map_probe_reads_the_last_stages_concatenated(devices, trained_run):
  mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  encoder, config, _ = restore.restore_encoder(trained_run, mesh=mesh)
  features, labels, _ = extraction.extract_features(
    encoder, config, "train", limit=8, kind="feature_map", stages=2
  )
  # Reference: the backbone's last two block maps of the same normalised centre crops, flattened.
  images = next(extraction.eval_batches(config, "train", limit=8))["image"][:8]
  normalised = data.normalize(images, tuple(config.data.mean), tuple(config.data.std))
  maps = encoder.backbone.stage_maps(normalised)
  want = np.concatenate([np.asarray(m).reshape(8, -1) for m in maps[-2:]], axis=1)
  assert features.shape == (8, 2 * 4 * 64) and len(labels) == 8
  np.testing.assert_allclose(features, want, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="feature_stages"):
    extraction.extract_features(
      encoder, config, "train", limit=8, kind="feature_map", stages=len(maps) + 1
    )
  with pytest.raises(ValueError, match="applies to features='feature_map' only"):
    extraction.extract_features(encoder, config, "train", limit=8, kind="embed", stages=2)


def _fast_probe(**changes):
  probe = config_lib.probe_config()
  probe.evaluators, probe.linear = (
    "linear,knn",
    dict(epochs=5, batch_size=32, lr=1e-2, weight_decay=1e-6),
  )
  probe.poll_seconds = 0.05
  probe.update(changes)
  return probe


def _rows(workdir, name="linear"):
  return [json.loads(line) for line in open(os.path.join(workdir, "eval", f"{name}.jsonl"))]


@pytest.mark.slow
def test_follow_evaluates_each_checkpoint_once_and_skips_unreadable_ones(
  devices, trained_run, tmp_path, caplog, monkeypatch
):
  workdir = _copy_run(trained_run, tmp_path)  # checkpoints at steps 3 and 6 (the last)
  # Step 4 is listed, then gone before its turn (the run's checkpoint rotation deleted it).
  listed = restore.checkpoint_steps
  with monkeypatch.context() as m, caplog.at_level("INFO", logger="lejepa_jax"):
    m.setattr(restore, "checkpoint_steps", lambda w: sorted(listed(w) + [4]))
    evaluation_job.run(workdir, _fast_probe(), follow_run=True)
  assert "checkpoint step 4 was removed" in caplog.text
  assert [r["step"] for r in _rows(workdir)] == [3, 6]
  assert eval_records.EvalRecord(workdir, "default").data["skipped"] == {}  # not recorded as damaged
  evaluation_job.run(workdir, _fast_probe(), follow_run=True)  # a restarted job: nothing twice
  assert [r["step"] for r in _rows(workdir)] == [3, 6]

  # Damage step 3 (every file of its state rewritten with garbage) and leave a half-written save.
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints", "3", "state")):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"not a checkpoint")
  os.makedirs(os.path.join(workdir, "checkpoints", "9.orbax-checkpoint-tmp-1", "state"))
  with caplog.at_level("WARNING", logger="lejepa_jax"):
    evaluation_job.run(workdir, _fast_probe(name="second"), follow_run=True)
  assert "Checkpoint step 3" in caplog.text and "Skipping it" in caplog.text
  second = [r["step"] for r in _rows(workdir) if r["probe_config"] == "second"]
  assert second == [6]
  record = eval_records.EvalRecord(workdir, "second").data
  assert record["done"] == [6] and list(record["skipped"]) == ["3"]
  assert "is damaged" in record["skipped"]["3"] and "were written" in record["skipped"]["3"]
  assert "delete" not in record["skipped"]["3"].lower()  # advice that never risks saved work


@pytest.mark.slow
def test_baselines_and_pictures_are_written(devices, trained_run, tmp_path):
  workdir = _copy_run(trained_run, tmp_path)
  probe = _fast_probe(evaluators="linear,fewshot,label_free,pictures", baselines="pixels,random_init")
  probe.fewshot = dict(shots=(1, 5), seeds=2, ridge=1e-2)
  rows = evaluation_job.run(workdir, probe)
  by = {(r["encoder"], r["evaluator"]): r for r in rows}
  assert by[("pixels", "linear")]["top1"] > 0.6  # colour/brightness classes: pixels suffice
  assert ("pixels", "label_free") not in by  # no projector for raw pixels
  assert 1.0 <= by[("random_init", "label_free")]["rankme_features"] <= 64
  assert {"1shot", "5shot"} <= set(by[("checkpoint", "fewshot")])
  pictures = os.listdir(os.path.join(workdir, "eval", "pictures"))
  assert sorted(pictures) == ["default_step6_embedding.png", "default_step6_patch_pca.png"]
  assert any(
    name.startswith("events.out.tfevents")
    for name in os.listdir(os.path.join(workdir, "eval", "tensorboard"))
  )
  assert "random_init" in eval_records.format_table(rows)
  # Accuracy against minutes of training, with the run's clock from metrics.jsonl.
  assert cv2.imread(os.path.join(workdir, "eval", "time_to_accuracy_default.png")) is not None
  evaluation_job.run(workdir, probe)  # baselines are evaluated once per workdir
  assert [r["encoder"] for r in _rows(workdir)].count("pixels") == 1


def test_time_to_accuracy_places_checkpoints_at_their_training_minutes(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  assert not eval_records.plot_time_to_accuracy(workdir, "default", str(tmp_path / "none.png"))
  with open(tmp_path / "metrics.jsonl", "w") as f:
    for step in (10, 20, 30):
      f.write(json.dumps({"step": step, "probe_accuracy": 0.5, "train_seconds": 6.0 * step}) + "\n")
  os.makedirs(tmp_path / "eval")
  with open(tmp_path / "eval" / "linear.jsonl", "w") as f:
    for encoder, step, top1 in (
      ("random_init", 0, 0.6),
      ("checkpoint", 15, 0.7),
      ("checkpoint", 30, 0.8),
    ):
      f.write(
        json.dumps({"step": step, "encoder": encoder, "probe_config": "default", "top1": top1}) + "\n"
      )
  drawn = {}
  original = plots.pyplot().Axes.plot

  def record(ax, x, y, *args, **kwargs):
    drawn[kwargs.get("label")] = (list(x), list(y))
    return original(ax, x, y, *args, **kwargs)

  monkeypatch.setattr(plots.pyplot().Axes, "plot", record)
  path = str(tmp_path / "tta.png")
  assert eval_records.plot_time_to_accuracy(workdir, "default", path)
  # The random-init encoder is minute 0; step 15 lies halfway between the logged steps 10 (1 min)
  # and 20 (2 min); step 30 at 3 min.
  x, y = drawn["linear probe, test set (minute 0: random init)"]
  np.testing.assert_allclose(x, [0.0, 1.5, 3.0])
  np.testing.assert_allclose(y, [60.0, 70.0, 80.0])
  assert cv2.imread(path) is not None


def _snapshot(directory):
  """{path: (size, mtime)} of every file and directory under `directory`."""
  out = {}
  for root, dirs, files in os.walk(directory):
    for name in dirs + files:
      path = os.path.join(root, name)
      out[os.path.relpath(path, directory)] = (os.path.getsize(path), os.stat(path).st_mtime_ns)
  return out


@pytest.mark.slow
def test_a_missing_step_lists_the_steps_there_are_and_changes_nothing(trained_run, tmp_path):
  workdir = _copy_run(trained_run, tmp_path)
  before = _snapshot(workdir)
  message = "has no checkpoint step 4; it has steps 3, 6"
  with pytest.raises(restore.StepNotFoundError, match=message):
    evaluation_job.run(workdir, _fast_probe(), step=4)
  # The command line: the same message, an error exit, and still nothing written.
  done = subprocess.run(
    [sys.executable, "-m", "lejepa_jax.evaluate", f"--workdir={workdir}", "--step=4"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert done.returncode == 1 and message in done.stderr
  assert _snapshot(workdir) == before
  assert "<training workdir> \\\n        [--step=N" in evaluate_entry.__doc__  # --help keeps the usage


@pytest.mark.slow
def test_no_checkpoints_is_a_clear_error_and_creates_nothing(trained_run, tmp_path, caplog):
  typo = tmp_path / "typo"
  with pytest.raises(FileNotFoundError, match=re.escape(f"{typo}/checkpoints does not exist")):
    evaluation_job.run(str(typo), _fast_probe())
  assert not typo.exists()
  fresh = tmp_path / "fresh"  # a run that has not saved yet
  fresh.mkdir()
  with pytest.raises(FileNotFoundError, match="does not exist"):
    restore.restore_encoder(str(fresh))
  with pytest.raises(FileNotFoundError, match="No checkpoint appeared"):
    evaluation_job.wait_for_checkpoints(str(fresh), _fast_probe(idle_timeout=0.1))
  assert os.listdir(fresh) == []

  def first_save():  # as orbax finalises a save: a rename
    time.sleep(0.3)
    shutil.copytree(os.path.join(trained_run, "checkpoints"), tmp_path / "staging")
    os.rename(tmp_path / "staging", fresh / "checkpoints")

  saver = threading.Thread(target=first_save)
  saver.start()
  with caplog.at_level("INFO", logger="lejepa_jax"):
    assert evaluation_job.wait_for_checkpoints(str(fresh), _fast_probe(idle_timeout=60)) == [3, 6]
  saver.join()
  assert "waiting for the first checkpoint" in caplog.text


def _flat(tree):
  return {
    "/".join(str(k.key) for k in path): np.asarray(x)
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


@pytest.mark.slow
def test_restore_reads_the_model_and_no_optimizer_state(devices, trained_run, monkeypatch):
  reads = []
  real = checkpointing.training_manager

  def spying_manager(*args, **kwargs):  # a real manager that keeps what its restores return
    manager = real(*args, **kwargs)
    restore = manager.restore
    manager.restore = lambda *a, **k: reads.append(restore(*a, **k)) or reads[-1]
    return manager

  monkeypatch.setattr(checkpointing, "training_manager", spying_manager)
  mesh = sharding.make_mesh({"data": 2}, devices=jax.devices()[:2])
  encoder, _, step = restore.restore_encoder(trained_run, mesh=mesh)
  monkeypatch.undo()

  read = [_flat(r["state"]) for r in reads if "state" in r.keys()]
  manager = real(os.path.join(trained_run, "checkpoints"))
  saved = _flat(checkpointing.restore_state_only(manager, step))  # everything the step holds
  manager.close()
  assert any("opt_state/0/mu" in k for k in saved)  # on disk: AdamW moments next to the model
  model = {k[2:]: v for k, v in saved.items() if k.startswith("0/")}
  assert len(read) == 1 and set(read[0]) == {"0/" + k for k in model}
  assert sum(v.nbytes for v in read[0].values()) < sum(v.nbytes for v in saved.values()) / 2
  restored = _flat(nnx.to_pure_dict(nnx.state(encoder)))
  assert restored.keys() == model.keys()
  for key, value in model.items():
    np.testing.assert_array_equal(restored[key], value)


@pytest.mark.slow
def test_export_command_writes_the_checkpoints_backbone(devices, trained_run, tmp_path, capsys):
  from safetensors.numpy import load_file

  from lejepa_jax import export

  out = str(tmp_path / "exported")
  export.main([f"--workdir={trained_run}", f"--out={out}", "--step=3", "--safetensors"])
  assert out in capsys.readouterr().out
  loaded = export.load_encoder(out)
  assert loaded.projector is None  # the backbone alone by default
  trained, _, _ = restore.restore_encoder(trained_run, step=3)
  for path, want in nnx.to_flat_state(nnx.state(trained.backbone, nnx.Param)):
    got = dict(nnx.to_flat_state(nnx.state(loaded.backbone, nnx.Param)))[path]
    np.testing.assert_array_equal(np.asarray(got[...]), np.asarray(want[...]))
  tensors = load_file(os.path.join(out, "model.safetensors"))
  assert tensors and not any("projector" in key for key in tensors)
  with pytest.raises(SystemExit, match="already holds an exported encoder"):
    export.main([f"--workdir={trained_run}", f"--out={out}"])


@pytest.mark.slow
def test_evaluation_crops_follow_the_configs_eval_crop_fraction(structured_data):
  from lejepa_jax import data
  from lejepa_jax.data import augment

  config = _tiny_config(structured_data)
  source = data.open_source(config.data.name, "train", config.data.data_dir)
  size, crops = config.data.global_views["size"], []
  for fraction in (1.0, 0.5):
    config.data.eval_crop_fraction = fraction
    got = next(extraction.eval_batches(config, "train", limit=4))["image"][:4]
    want = np.stack(
      [augment.CenterCrop(size, 3, crop_fraction=fraction).map(source[i])["image"] for i in range(4)]
    )
    np.testing.assert_array_equal(got, want)
    crops.append(got)
  assert not np.array_equal(*crops)  # the whole image vs its central half


def test_per_class_sample_draws_k_of_each_class_and_a_new_draw_per_seed():
  labels = np.repeat(np.arange(5), 20)
  labels[20:38] = 0  # class 1 keeps only 2 examples
  idx = evaluators.per_class_sample(labels, 3, 5, seed=0)
  counts = np.bincount(labels[idx], minlength=5)
  assert counts.tolist() == [3, 2, 3, 3, 3]  # a class with fewer than k gives all it has
  assert len(set(idx.tolist())) == len(idx)
  assert not np.array_equal(np.sort(idx), np.sort(evaluators.per_class_sample(labels, 3, 5, seed=1)))


@pytest.mark.slow
def test_linear_shots_learns_separable_classes_from_few_examples():
  """Four Gaussian blobs 8 standard deviations apart: 1 example per class already separates them,
  and the minimum step count trains the probe although an epoch of 4 examples is one step."""
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(4, 16)) * 8
  train_y, test_y = rng.integers(0, 4, 400), rng.integers(0, 4, 200)
  fs = evaluators.FeatureSet(
    (centres[train_y] + rng.normal(size=(400, 16))).astype(np.float32),
    train_y,
    (centres[test_y] + rng.normal(size=(200, 16))).astype(np.float32),
    test_y,
    4,
  )
  result = evaluators.linear_shots(fs, shots=(1, 5), seeds=2, min_steps=200, lr=1e-2)
  assert set(result) == {"1shot", "1shot_std", "5shot", "5shot_std"}
  assert result["1shot"] > 0.9 and result["5shot"] > 0.95
  # With no training to speak of, the probe stays near chance: the step floor is what trains it.
  assert evaluators.linear_shots(fs, shots=(1,), seeds=1, min_steps=1, epochs=1, lr=1e-6)["1shot"] < 0.6


def test_every_evaluator_is_found_by_name_through_one_registry():
  """One registry, one signature `run(subject, **options)`; the job names no evaluator itself."""
  import inspect

  from lejepa_jax.evaluation import registry

  assert set(registry.EVALUATORS) == {
    "linear", "knn", "fewshot", "linear_shots", "label_free", "pictures", "finetune"
  }  # fmt: skip
  for name, evaluator in registry.EVALUATORS.items():
    assert evaluator.needs in registry.SERVES_ALL, name
    assert next(iter(inspect.signature(evaluator.run).parameters)) == "subject", name
  source = inspect.getsource(evaluation_job)
  for name in registry.EVALUATORS:  # no comparison with, or tuple of, an evaluator's name
    assert not re.search(rf'(==|!=)\s*"{name}"|\bin\s*[(\[{{][^)\]}}]*"{name}"', source), name
  assert not re.search(r"^[A-Z_]+ = \(\s*\"", source, re.M)  # no module-level tuple of names
  with pytest.raises(ValueError, match="finetune"):  # the error lists every evaluator
    registry.get("linaer")


def test_a_subject_runs_the_evaluators_it_serves_and_extracts_features_once():
  from lejepa_jax.evaluation import registry

  rng = np.random.default_rng(0)
  fs = evaluators.FeatureSet(
    rng.normal(size=(40, 8)), rng.integers(0, 2, 40), rng.normal(size=(20, 8)), rng.integers(0, 2, 20), 2
  )
  calls = []
  probe = config_lib.probe_config()
  subject = registry.Subject(
    "pixels", None, probe, lambda: calls.append(1) or fs, serves=frozenset({registry.FEATURES})
  )
  results = evaluation_job.run_evaluators(subject, ["knn", "label_free", "fewshot", "finetune"])
  assert set(results) == {"knn", "fewshot"} and len(calls) == 1
  assert results["knn"] == evaluators.knn(fs, **probe.knn)
