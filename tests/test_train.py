"""End-to-end training on 8 simulated devices: a few steps, checkpoint, resume, failure handling."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest
from helpers import read_metrics as _metrics
from helpers import start_training, tiny_config

from lejepa_jax.training import checkpointing, loop, optimizers, resume


def _final_params(workdir, step):
  manager = checkpointing.training_manager(os.path.join(workdir, "checkpoints"))
  restored = checkpointing.restore_state_only(manager, step)
  manager.close()
  return jax.tree.leaves(restored)


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(devices, data_dir, tmp_path):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  loop.run(tiny_config(data_dir, 6), straight)
  loop.run(tiny_config(data_dir, 6), resumed, stop_after=3)  # leaves after step 3
  assert os.path.isdir(os.path.join(resumed, "checkpoints", "3"))
  start_training(data_dir, resumed)  # a fresh process resumes and finishes
  a, b = _metrics(straight), _metrics(resumed)
  assert sorted(a) == sorted(b) == list(range(1, 7))
  for step in range(1, 7):
    for key in ("loss", "pred", "sigreg", "probe_loss"):
      assert np.isfinite(a[step][key])
      assert a[step][key] == b[step][key], (step, key)
  for x, y in zip(_final_params(straight, 6), _final_params(resumed, 6)):
    np.testing.assert_array_equal(x, y)
  # The training clock runs forward in every line, and the resumed run's clock continues from the
  # restored step's instead of starting again at zero.
  for run in (a, b):
    seconds = [run[step]["train_seconds"] for step in range(1, 7)]
    assert all(0 < s < t for s, t in zip(seconds, seconds[1:])), seconds
  assert b[4]["train_seconds"] - b[4]["step_time_s"] == pytest.approx(b[3]["train_seconds"], abs=0.05)
  summary = json.load(open(os.path.join(straight, "summary.json")))
  assert summary["final"]["loss"] == a[6]["loss"]
  assert loop.run(tiny_config(data_dir, 6), straight) == {}  # finished: nothing to train
  assert _metrics(straight) == a
  assert os.path.getsize(os.path.join(straight, "curves.png")) > 0


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_cleanly(data_dir, tmp_path):
  workdir = str(tmp_path / "preempted")
  process = start_training(data_dir, workdir, "--config.total_steps=10000", wait=False)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 300
  while time.time() < deadline and not (os.path.exists(metrics) and len(open(metrics).readlines()) >= 2):
    time.sleep(0.5)
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=300)
  assert process.returncode == 0, output
  last_logged = max(json.loads(line)["step"] for line in open(metrics))
  manager = checkpointing.training_manager(os.path.join(workdir, "checkpoints"))
  assert manager.latest_step() == last_logged < 10000
  manager.close()


@pytest.mark.slow
def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(devices, data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  loop.run(tiny_config(data_dir, 6), workdir, stop_after=3)
  broken = tiny_config(data_dir, 6)
  broken.data.std = (0.0, 0.0, 0.0)  # division by zero: infinite inputs, non-finite loss
  # Another config is another experiment: refused, naming the key, unless asked for.
  with pytest.raises(ValueError, match=r"data\.std.*--allow_config_change"):
    loop.run(broken, workdir)
  with pytest.raises(FloatingPointError, match="at step 4"):
    loop.run(broken, workdir, allow_config_change=True)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["data"]["std"] == [0.0, 0.0, 0.0]  # the config of the latest start
  manager = checkpointing.training_manager(os.path.join(workdir, "checkpoints"))
  assert manager.latest_step() == 3
  manager.close()


def test_resume_accepts_changes_to_where_it_runs_not_to_what_it_trains(data_dir):
  saved = json.loads(tiny_config(data_dir, 6).to_json())
  moved = tiny_config(data_dir, 6)
  moved.log_every, moved.mesh.axes = 7, dict(data=2, fsdp=4)
  assert resume.config_changes(saved, moved) == []
  moved.optim.lr *= 2
  moved.data.global_views = dict(moved.data.global_views, count=3)
  changes = resume.config_changes(saved, moved)
  assert [c.split(":")[0] for c in changes] == ["data.global_views.count", "optim.lr"], changes
  # A key the checkpoint predates counts as the model's default (ViT: no register tokens).
  newer = tiny_config(data_dir, 6)
  newer.model.num_registers = 0
  assert resume.config_changes(saved, newer) == []
  newer.model.num_registers = 4
  assert resume.config_changes(saved, newer) == ["model.num_registers: 0 -> 4"]
  newer.model.num_registers, newer.data.num_workers = 0, 2  # the iterator state is per worker
  assert [c.split(":")[0] for c in resume.config_changes(saved, newer)] == ["data.num_workers"]


@pytest.mark.parametrize("clip", [0.0, 0.5, 100.0])
def test_gradient_clipping_scales_the_gradient_before_adamw(data_dir, clip):
  config = tiny_config(data_dir, 6)
  config.optim.clip_grad_norm = clip
  base = {"w": np.arange(1.0, 7.0, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}
  params = jax.tree.map(np.zeros_like, base)
  plain = optax.adamw(optimizers.lr_schedule(config), weight_decay=config.optim.weight_decay)
  tx = optimizers.make_optimizer(config)
  state, reference_state, unclipped_state = tx.init(params), plain.init(params), plain.init(params)
  differs_from_unclipped = False
  for step in range(3):
    # Growing gradients: Adam is invariant to one common scale, not to a scale changing per step.
    grads = jax.tree.map(lambda g: g * 10.0**step, base)
    norm = np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))
    # Reference: the gradient scaled by hand to the clip norm (when above it), then plain AdamW.
    factor = min(1.0, clip / norm) if clip > 0 else 1.0
    updates, state = tx.update(grads, state, params)
    want, reference_state = plain.update(
      jax.tree.map(lambda g: g * factor, grads), reference_state, params
    )
    unclipped, unclipped_state = plain.update(grads, unclipped_state, params)
    for key in base:
      np.testing.assert_allclose(updates[key], want[key], rtol=1e-5, atol=1e-9)
      differs_from_unclipped |= not np.allclose(updates[key], unclipped[key], rtol=1e-3)
  assert differs_from_unclipped == (clip > 0)  # norms 9.6, 96, 960: each clip bites somewhere


def test_a_bucket_url_workdir_is_refused_with_the_mounted_alternative(data_dir):
  with pytest.raises(ValueError, match="Cloud Storage FUSE"):
    loop.run(tiny_config(data_dir, 2), "gs://bucket/run")


@pytest.mark.slow
def test_unknown_model_key_fails_before_compiling(devices, data_dir, tmp_path):
  config = tiny_config(data_dir, 2)
  config.model.patch_size = 4
  with pytest.raises(ValueError, match=r"patch_size"):
    loop.run(config, str(tmp_path / "bad"))


def test_on_device_augmentation_is_applied_in_the_step():
  from lejepa_jax.data.augment import Augment
  from lejepa_jax.training import steps

  views = np.random.default_rng(0).integers(0, 256, (2, 2, 8, 8, 3)).astype(np.uint8)
  solarize_only = Augment(flip=0, color_jitter=0, grayscale=0, blur=0, solarize=1.0)
  got = steps.prepare_views(views, jax.random.key(0), (0.5,) * 3, (0.25,) * 3, solarize_only)
  unit = views / 255.0
  want = (np.where(unit >= 128 / 255, 1 - unit, unit) - 0.5) / 0.25
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  plain = steps.prepare_views(views, jax.random.key(0), (0.5,) * 3, (0.25,) * 3, None)
  np.testing.assert_allclose(plain, (unit - 0.5) / 0.25, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_training_with_on_device_augmentation_runs(devices, data_dir, tmp_path):
  config = tiny_config(data_dir, 2)
  config.data.augment_on_device = True
  metrics = loop.run(config, str(tmp_path / "device_aug"))
  assert np.isfinite(metrics["loss"])


@pytest.mark.slow
def test_gradient_accumulation_runs_and_logs_a_finite_loss(devices, data_dir, tmp_path):
  config = tiny_config(data_dir, 2)
  config.grad_accum_steps = 2
  metrics = loop.run(config, str(tmp_path / "accum"))
  assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])
  config.grad_accum_steps = 3  # does not divide the batch of 8
  with pytest.raises(ValueError, match="grad_accum_steps=3"):
    loop.run(config, str(tmp_path / "accum_bad"))


@pytest.mark.slow
def test_bfloat16_compute_trains_like_float32_on_a_sharded_mesh(devices, data_dir, tmp_path):
  """bfloat16 compute (the accelerator recipes' dtype; on the CPU its products and their gradients go
  through cpu_kernels.accumulating_matmul and cpu_kernels.add_bias) on the data x FSDP mesh: the
  logged losses and gradient norms follow the float32 run's within bfloat16 precision."""
  logged = {}
  for dtype in ("float32", "bfloat16"):
    config = tiny_config(data_dir, 3)
    config.model.dtype = dtype
    loop.run(config, str(tmp_path / dtype))
    logged[dtype] = _metrics(str(tmp_path / dtype))
  assert sorted(logged["float32"]) == sorted(logged["bfloat16"]) and len(logged["float32"]) == 3
  for step, row in logged["bfloat16"].items():
    # bfloat16 noise, measured: losses within 0.05%, gradient norms 3-9% apart (the same for plain
    # autodiff of bfloat16 products: test_models checks the gradients themselves).
    for key, rtol in (("loss", 0.005), ("grad_norm", 0.15)):
      np.testing.assert_allclose(row[key], logged["float32"][step][key], rtol=rtol)


def test_a_finite_loss_with_non_finite_updated_parameters_stops_the_run():
  # The loss is computed before the update: the updated parameters must be checked too.
  finite = [(1, np.float32(0.5), np.float32(3.0))]
  loop._check_finite(finite)
  with pytest.raises(FloatingPointError, match="at step 2"):
    loop._check_finite(finite + [(2, np.float32(0.4), np.float32(np.nan))])


def test_metrics_reader_skips_a_line_cut_short_by_a_kill(tmp_path):
  from lejepa_jax.training import event_log

  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.write('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
  assert [row["step"] for row in event_log.read_metrics(str(tmp_path))] == [1, 2]


def test_metrics_writer_logs_tensorboard_scalars_without_importing_pytorch(tmp_path):
  """A fresh interpreter (PyTorch installed by the test extra): writing metrics leaves torch
  unimported, the event file holds the scalar, and torch still imports afterwards."""
  script = f"""
import glob, sys
from lejepa_jax.training import event_log
writer = event_log.MetricsWriter({str(tmp_path)!r})
writer.write(1, {{"loss": 0.5}})
writer.close()
assert "torch" not in sys.modules, "tensorboardX imported torch"
(events,) = glob.glob({str(tmp_path / "tensorboard" / "events.out.tfevents*")!r})
assert b"train/loss" in open(events, "rb").read()
import torch
print("torch", torch.__version__)
"""
  done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
  assert done.returncode == 0 and "torch" in done.stdout, done.stderr
  from lejepa_jax.training import event_log

  assert event_log.read_metrics(str(tmp_path)) == [{"step": 1, "loss": 0.5}]


def _step_inputs(config, seed=0):
  """(graphdef, state, batch, key) of config's train step on one device: a random uint8 batch."""
  from flax import nnx

  from lejepa_jax.training import train_state

  graphdef, state = nnx.split(train_state.build_train_objects(config))
  rng = np.random.default_rng(seed)
  d, n = config.data, config.data.global_batch_size
  batch = {
    "global": rng.integers(0, 256, (n, 2, d.global_views["size"], d.global_views["size"], 3), np.uint8),
    "local": rng.integers(0, 256, (n, 2, d.local_views["size"], d.local_views["size"], 3), np.uint8),
    "label": rng.integers(0, 4, n).astype(np.int32),
  }
  return graphdef, state, batch, jax.random.key(seed)


@pytest.mark.slow  # compiles the train step twice
def test_gradient_accumulation_averages_the_micro_batches_gradients():
  """grad_accum_steps=2: the loss is the mean of the two halves' objectives (each with its own key,
  fold_in(key, 100 + i)) and the gradient the mean of their gradients; a step that ignored the
  setting would report the full batch's, which differ."""
  from flax import nnx

  from lejepa_jax.training import steps

  config = tiny_config("unused", 1)
  graphdef, state, batch, key = _step_inputs(config)
  options = steps.step_options(config)
  _, accumulated = jax.jit(
    lambda s: steps.train_step(graphdef, s, batch, key, **{**options, "grad_accum_steps": 2})
  )(state)
  _, full = jax.jit(lambda s: steps.train_step(graphdef, s, batch, key, **options))(state)

  opts = {k: options[k] for k in ("loss_config", "num_global", "mean", "std", "device_augment")}

  @jax.jit
  def half_loss_and_grads(state, i):
    model = nnx.merge(graphdef, state).model
    model.train()
    half = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, i * 4, 4), batch)
    objective = lambda m: steps.lejepa_objective(m, half, jax.random.fold_in(key, 100 + i), **opts)
    return nnx.value_and_grad(objective, has_aux=True)(model)

  outs = [half_loss_and_grads(state, i) for i in range(2)]
  loss = np.mean([float(o[0][0]) for o in outs])
  grad_norm = float(optax.tree.norm(jax.tree.map(lambda a, b: (a + b) / 2, outs[0][1], outs[1][1])))
  np.testing.assert_allclose(float(accumulated["loss"]), loss, rtol=1e-5)
  np.testing.assert_allclose(float(accumulated["grad_norm"]), grad_norm, rtol=1e-4)
  assert abs(float(full["loss"]) - loss) > 1e-4 * abs(loss)


@pytest.mark.slow  # compiles the train step twice
def test_on_device_augmentation_reaches_the_step_and_changes_the_loss():
  """augment_on_device: the step gets the photometric part (the host keeps crops and flips) and
  applies it; the same batch and key without it gives another loss."""
  from lejepa_jax import data
  from lejepa_jax.training import steps

  config = tiny_config("unused", 1)
  config.data.augment = dict(config.data.augment, solarize=1.0)
  config.data.augment_on_device = True
  device_augment = steps.step_options(config)["device_augment"]
  assert device_augment is not None and device_augment.solarize == 1.0
  assert data.multicrop_from_config(config.data).aug.solarize == 0  # not twice
  config.data.augment_on_device = False
  assert steps.step_options(config)["device_augment"] is None
  graphdef, state, batch, key = _step_inputs(config)
  options = steps.step_options(config)
  losses = [
    float(
      jax.jit(
        lambda s, aug=aug: steps.train_step(
          graphdef, s, batch, key, **{**options, "device_augment": aug}
        )
      )(state)[1]["loss"]
    )
    for aug in (device_augment, None)
  ]
  assert abs(losses[0] - losses[1]) > 1e-4 * abs(losses[1])
