r"""The evaluation job: frozen-feature probes on a training run's checkpoints.

    python -m lejepa_jax.evaluate --config=configs/probe/default.py --workdir=<training workdir> \
        [--step=N | --follow] [--config.evaluators=linear,knn,...]

Restores the model only (no optimizer state is read) from the run's orbax checkpoints onto this
job's devices (any count), extracts frozen features once per checkpoint and runs the evaluators the
probe config names (`lejepa_jax.evaluators`, plus "pictures"). Without --step it evaluates the
latest checkpoint; a --step the run does not have is an error listing the steps it has. With
--follow it waits for the first checkpoint, then keeps watching the workdir while training runs and
evaluates every new checkpoint once (the evaluated steps are recorded, so a restarted job carries
on); a checkpoint whose files cannot be read is skipped with a message, and one that the run's
checkpoint rotation removed before its turn is passed over. Nothing under `checkpoints/` is ever
changed. Results: `workdir/eval/<evaluator>.jsonl`, TensorBoard scalars in
`workdir/eval/tensorboard`, pictures in `workdir/eval/pictures`, a table on the console.
The checkpoints are read by `lejepa_jax.restore` (shared with `lejepa_jax.export`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from lejepa_jax import (checkpointing, compiler, data, distributed, evaluators, event_log, progress,
                        reports, steps)
# Reading checkpoints is restore's job; its public names stay attributes of this module for the
# callers that reach them here (evaluate.restore_encoder, evaluate.CheckpointError, ...).
from lejepa_jax.restore import (CheckpointError, ModelMismatchError, StepNotFoundError,  # noqa: F401
                                checkpoint_dir, random_init_encoder, restore_encoder)
# The run's checkpoint listing here (_latest_config, checkpoint_steps, require_checkpoints) opens
# and picks steps as restore_encoder does, with the same messages.
from lejepa_jax.restore import _open_manager, _pick_step, _reading

log = logging.getLogger("lejepa_jax")
FEATURE_KINDS = ("embed", "feature_map")


# Decoded evaluation splits up to this size stay in memory for the job: every encoder it evaluates
# (baselines, each checkpoint) reads the same crops, and decoding them took about 40% of an
# encoder's evaluation on the Fashion-MNIST default (18 of 50 s); larger splits are read each time.
EVAL_CACHE_BYTES = 2**30


def eval_batches(config, split: str, limit: int | None = None, batch_size: int = 256
                 ) -> Iterator[dict[str, np.ndarray]]:
  """Centre crops of every example of a split once: {"image": [n, S, S, C] uint8, "label", "valid"}."""
  # Checkpoints written before the key existed were evaluated on whole images.
  key = (config.data.name, split, config.data.data_dir, int(config.data.global_views["size"]),
         int(config.data.channels), float(config.data.get("eval_crop_fraction", 1.0)), limit,
         batch_size, bool(config.data.get("skip_bad_records", False)))
  size = split_size(config, split, limit)
  if size * key[3] ** 2 * key[4] <= EVAL_CACHE_BYTES:
    return iter(_cached_batches(*key))
  return _read_batches(*key)


def _read_batches(name, split, data_dir, size, channels, crop_fraction, limit, batch_size,
                  skip_bad_records=False):
  source = data.open_source(name, split, data_dir)
  if limit and limit < len(source):
    source = data.FirstRecords(source, limit)
  crop = data.CenterCrop(size, channels, crop_fraction=crop_fraction,
                         skip_bad_records=skip_bad_records)
  return iter(data.eval_dataset(source, crop, global_batch_size=batch_size))


@functools.lru_cache(maxsize=4)
def _cached_batches(*key) -> tuple[dict[str, np.ndarray], ...]:
  return tuple(_read_batches(*key))


def split_size(config, split: str, limit: int | None = None) -> int:
  """Examples `eval_batches` yields of a split (at most `limit`)."""
  size = len(data.open_source(config.data.name, split, config.data.data_dir))
  return min(size, limit) if limit else size


def _forward(encoder, images, kind: str, stages: int):
  """(probe features [n, F], projections [n, K] or None) of normalised images."""
  if kind == "embed":
    return encoder(images)
  backbone = encoder.backbone
  maps = backbone.stage_maps(images)
  if not 1 <= stages <= len(maps):
    raise ValueError(f"probe config `feature_stages` is {stages}, but this encoder has {len(maps)} "
                     "stages (blocks for a ViT); use 1 to read only the final map.")
  # ConvNets pool the same final map: no second pass for the projections.
  pooled = backbone.pool(maps[-1]) if hasattr(backbone, "pool") else backbone(images)[0]
  projections = None if encoder.projector is None else encoder.projector(pooled)
  features = jnp.concatenate([m.reshape(m.shape[0], -1) for m in maps[-stages:]], axis=-1)
  return features, projections


def feature_function(mean: tuple, std: tuple, kind: str, stages: int):
  """The pure function of feature extraction: `fn(graphdef, state, uint8 images [n, H, W, C])` ->
  (probe features [n, F], projections [n, K] or None), what evaluation compiles (and what
  tests/test_accelerator_lowering.py lowers for GPUs and TPUs)."""
  return lambda graphdef, state, x: _forward(nnx.merge(graphdef, state),
                                             steps.normalize(x, mean, std), kind, stages)


@functools.cache
def _compiled_forward(mean: tuple, std: tuple, kind: str, stages: int, compiler_setting: str):
  """`feature_function` jitted with the backend's compiler options; cached so every split and
  checkpoint shares its compile. Call as `forward(encoder, images)`."""
  jitted = jax.jit(feature_function(mean, std, kind, stages), static_argnums=0,
                   compiler_options=compiler.options(compiler_setting))
  return lambda encoder, images: jitted(*nnx.split(encoder), images)


def extract_features(encoder, config, split: str, limit: int | None = None, batch_size: int = 256,
                     kind: str = "embed", stages: int = 1, label: str = ""
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """Frozen features [n, F], labels [n] and projector outputs [n, K] (or None) of a split.

  kind: "embed" (the encoder's probe features) or "feature_map" (unpooled maps, flattened: the
  last `stages` stage outputs of a ConvNet or blocks of a ViT, concatenated).
  """
  if kind not in FEATURE_KINDS:
    raise ValueError(f"probe config `features` must be one of {FEATURE_KINDS}, got {kind!r}.")
  if kind == "embed" and stages != 1:
    raise ValueError(f"probe config `feature_stages` is {stages}, but it applies to "
                     "features='feature_map' only; set features=feature_map or feature_stages=1.")
  forward = _compiled_forward(tuple(config.data.mean), tuple(config.data.std), kind, stages,
                              str(config.get("compiler_options", "auto")))
  features, projections, labels = [], [], []
  batches = eval_batches(config, split, limit, batch_size)
  meter = progress.Progress(f"{label or 'encoder'}: {split} features",
                            split_size(config, split, limit), "images")
  for batch in batches:
    valid = batch["valid"]
    meter.update(int(valid.sum()))
    f, z = forward(encoder, batch["image"])
    features.append(np.asarray(f, np.float32)[valid])
    if z is not None:
      projections.append(np.asarray(z, np.float32)[valid])
    labels.append(batch["label"][valid])
  z = _stack_and_free(projections) if projections else None
  return _stack_and_free(features), np.concatenate(labels), z


def _stack_and_free(chunks: list[np.ndarray]) -> np.ndarray:
  """np.concatenate(chunks) that releases each chunk once copied: the peak is one array plus one
  chunk, not two arrays (2.5 GB each for the demo's 60k x 10368 feature maps)."""
  out = np.empty((sum(len(c) for c in chunks),) + chunks[0].shape[1:], chunks[0].dtype)
  start = 0
  chunks.reverse()
  while chunks:
    chunk = chunks.pop()
    out[start:start + len(chunk)] = chunk
    start += len(chunk)
  return out


def pixel_features(config, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Raw-pixel baseline: the same centre crops, standardised and flattened: [n, S*S*C], [n]."""
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  features, labels = [], []
  for batch in eval_batches(config, split, limit):
    valid = batch["valid"]
    pixels = np.asarray(steps.normalize(batch["image"][valid], mean, std))
    features.append(pixels.reshape(len(pixels), -1))
    labels.append(batch["label"][valid])
  return np.concatenate(features), np.concatenate(labels)


def _limit(n: int) -> int | None:
  return n if n and n > 0 else None


def feature_set(encoder, config, probe: ml_collections.ConfigDict, label: str = ""
                ) -> evaluators.FeatureSet:
  """Features of the training split (probe fitting) and the evaluation split, extracted once."""
  kind, stages = probe.features, int(probe.feature_stages)
  train_x, train_y, _ = extract_features(encoder, config, config.data.split,
                                         _limit(probe.train_examples), probe.batch_size, kind, stages,
                                         label)
  test_x, test_y, test_z = extract_features(encoder, config, config.data.eval_split,
                                            _limit(probe.eval_examples), probe.batch_size, kind,
                                            stages, label)
  return evaluators.FeatureSet(train_x, train_y, test_x, test_y, int(config.probe.num_classes),
                               test_z)


# Evaluators that need the encoder and images, not frozen features: run beside run_evaluators.
ENCODER_EVALUATORS = ("pictures", "finetune")


def evaluator_names(probe: ml_collections.ConfigDict) -> list[str]:
  names = [n.strip() for n in probe.evaluators.split(",") if n.strip()]
  for name in names:
    if name not in ENCODER_EVALUATORS:
      evaluators.get(name)  # raises on unknown names before anything is extracted
  return names


def run_evaluators(fs: evaluators.FeatureSet, probe: ml_collections.ConfigDict, names: list[str],
                   label: str = "") -> dict[str, dict[str, float]]:
  """{evaluator: {metric: value}} for the named evaluators (pictures are drawn separately)."""
  results = {}
  for name in names:
    if name in ENCODER_EVALUATORS:
      continue
    options = dict(probe[name]) if name in probe else {}
    start = time.perf_counter()
    results[name] = evaluators.get(name)(fs, **options)
    log.info("%s: %s in %.1f s: %s", label or "features", name, time.perf_counter() - start,
             format_metrics(results[name]))
  return results


def run_finetune(encoder, config, probe: ml_collections.ConfigDict, label: str = ""
                 ) -> dict[str, float]:
  """`finetune.finetune` of the encoder's backbone with the probe config's options and splits."""
  from lejepa_jax import finetune  # pylint: disable=import-outside-toplevel  (only when asked)
  start = time.perf_counter()
  options = dict(probe.finetune) if "finetune" in probe else {}
  eval_limit = _limit(probe.eval_examples)
  results = finetune.finetune(
      encoder.backbone, config, eval_batches(config, config.data.eval_split, eval_limit),
      num_classes=int(config.probe.num_classes), train_examples=_limit(probe.train_examples),
      **options)
  log.info("%s: finetune in %.1f s: %s", label or "encoder", time.perf_counter() - start,
           format_metrics(results))
  return results


def draw_pictures(encoder, config, fs: evaluators.FeatureSet, probe, out_prefix: str) -> list[str]:
  """PCA of patch features as RGB next to the inputs, and a 2-D embedding plot coloured by class."""
  batch = next(eval_batches(config, config.data.eval_split, probe.pictures["num_images"],
                            probe.pictures["num_images"]))
  images = batch["image"][batch["valid"]]
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  patches = nnx.jit(lambda m, x: m.backbone.patch_features(steps.normalize(x, mean, std)))(
      encoder, images)
  os.makedirs(os.path.dirname(out_prefix), exist_ok=True)
  paths = [out_prefix + "_patch_pca.png", out_prefix + "_embedding.png"]
  reports.plot_patch_pca(images, np.asarray(patches, np.float32), paths[0])
  n = probe.pictures["num_points"]
  reports.plot_embedding_2d(fs.test_x[:n], fs.test_y[:n], paths[1])
  return paths


class EvalRecord:
  """Which checkpoint steps (and baselines) a probe config has handled: `eval/done_<name>.json`.

  Written atomically after each evaluation, so a restarted `--follow` job never repeats one.
  """

  def __init__(self, workdir: str, name: str):
    self.path = os.path.join(workdir, "eval", f"done_{name}.json")
    self.data = {"done": [], "skipped": {}, "baselines": [], "total_steps": None}
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.data.update(json.load(f))

  def handled(self, step: int) -> bool:
    return step in self.data["done"] or str(step) in self.data["skipped"]

  def finished(self) -> bool:
    """True once the run's final step has been handled (the run's total_steps is known)."""
    total = self.data["total_steps"]
    return total is not None and self.handled(total)

  def mark_done(self, step: int, total_steps: int) -> None:
    self.data["done"] = sorted(set(self.data["done"]) | {step})
    self.data["total_steps"] = total_steps
    self._save()

  def mark_skipped(self, step: int, reason: str) -> None:
    self.data["skipped"][str(step)] = reason
    self._save()

  def mark_baseline(self, name: str) -> None:
    self.data["baselines"] = sorted(set(self.data["baselines"]) | {name})
    self._save()

  def _save(self) -> None:
    if jax.process_index() != 0:  # one writer on shared storage
      return
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    with open(self.path + ".tmp", "w") as f:
      json.dump(self.data, f, indent=1)
    os.replace(self.path + ".tmp", self.path)


class ResultsWriter(event_log.EventLog):
  """`eval/<evaluator>.jsonl` rows and TensorBoard scalars `<encoder>/<evaluator>/<metric>`; keeps
  every row written (`rows`, on every process) for the console table."""

  def __init__(self, workdir: str, probe_name: str):
    directory = os.path.join(workdir, "eval")
    super().__init__(directory, os.path.join(directory, "tensorboard"))
    self.probe_name = probe_name
    self.rows: list[dict] = []

  def write(self, step: int, encoder: str, results: dict[str, dict[str, float]]) -> None:
    for name, values in results.items():
      row = {"step": step, "encoder": encoder, "probe_config": self.probe_name, **values}
      self.rows.append({"evaluator": name, **row})
      self.append(name, row)
      self.scalars(f"{encoder}/{name}", values, step)


def format_table(rows: list[dict]) -> str:
  """One line per (encoder, step, evaluator): its metrics, accuracies as percentages."""
  lines = [f"{'encoder':<12} {'step':>6}  {'evaluator':<10}  metrics"]
  for row in rows:
    metrics = {k: v for k, v in row.items()
               if k not in ("evaluator", "step", "encoder", "probe_config")}
    lines.append(f"{row['encoder']:<12} {row['step']:>6}  {row['evaluator']:<10}  "
                 f"{format_metrics(metrics)}")
  return "\n".join(lines)


def format_metrics(metrics: dict[str, float]) -> str:
  """'top1 91.20%, top5 99.80%': accuracies as percentages, other metrics (RankMe, SIGReg, losses,
  steps, seconds) as numbers."""
  numbers = ("rankme", "sigreg", "loss", "steps", "seconds")
  return ", ".join(f"{k} {v:.4g}" if k.startswith(numbers) else f"{k} {100 * v:.2f}%"
                   for k, v in metrics.items())


def evaluate_checkpoint(workdir: str, probe: ml_collections.ConfigDict, step: int | None,
                        writer: ResultsWriter, record: EvalRecord,
                        mesh: jax.sharding.Mesh | None = None) -> dict[str, dict[str, float]]:
  """Restores one checkpoint, extracts features once, runs the evaluators, records the step."""
  names = evaluator_names(probe)
  encoder, config, step = restore_encoder(workdir, step, mesh)
  label = f"checkpoint step {step}"
  log.info("%s: evaluating (%s)", label, ", ".join(names))
  # Frozen features only when an evaluator reads them (fine-tuning alone does not).
  needs_features = any(n != "finetune" for n in names)
  fs = feature_set(encoder, config, probe, label) if needs_features else None
  results = run_evaluators(fs, probe, names, label) if needs_features else {}
  if "finetune" in names:
    results["finetune"] = run_finetune(encoder, config, probe, label)
  if "pictures" in names and jax.process_index() == 0:
    draw_pictures(encoder, config, fs, probe,
                  os.path.join(workdir, "eval", "pictures", f"{probe.name}_step{step}"))
  writer.write(step, "checkpoint", results)
  record.mark_done(step, int(config.total_steps))
  return results


def evaluate_baselines(workdir: str, probe: ml_collections.ConfigDict, writer: ResultsWriter,
                       record: EvalRecord, mesh: jax.sharding.Mesh | None = None
                       ) -> dict[str, dict[str, dict[str, float]]]:
  """The probe config's baselines ("pixels", "random_init") on the run's data, once per workdir."""
  wanted = [b.strip() for b in probe.baselines.split(",") if b.strip()]
  unknown = set(wanted) - {"pixels", "random_init"}
  if unknown:
    raise ValueError(f"Unknown baseline(s) {sorted(unknown)}; available: pixels, random_init.")
  todo = [b for b in wanted if b not in record.data["baselines"]]
  if not todo:
    return {}
  config = _latest_config(workdir)
  names = [n for n in evaluator_names(probe) if n != "pictures"]
  out = {}
  for baseline in todo:
    log.info("baseline %s: evaluating (%s)", baseline, ", ".join(names))
    if baseline == "pixels":
      fs = _pixel_feature_set(config, probe)
      names_here = [n for n in names if n != "label_free"]
    else:
      fs = feature_set(random_init_encoder(config, mesh), config, probe, f"baseline {baseline}")
      names_here = names
    out[baseline] = run_evaluators(fs, probe, names_here, f"baseline {baseline}")
    writer.write(0, baseline, out[baseline])
    record.mark_baseline(baseline)
  return out


def _latest_config(workdir: str) -> ml_collections.ConfigDict:
  """The training config of the run's latest checkpoint (the baselines' data and model)."""
  manager = _open_manager(workdir)
  try:
    step = _pick_step(manager, None, workdir)
    with _reading(manager, step):
      return ml_collections.ConfigDict(checkpointing.restore_config(manager, step))
  finally:
    manager.close()


def _pixel_feature_set(config, probe) -> evaluators.FeatureSet:
  train_x, train_y = pixel_features(config, config.data.split, _limit(probe.train_examples))
  test_x, test_y = pixel_features(config, config.data.eval_split, _limit(probe.eval_examples))
  return evaluators.FeatureSet(train_x, train_y, test_x, test_y, int(config.probe.num_classes))


def evaluate(workdir: str, step: int | None = None, train_examples: int | None = None,
             probe: ml_collections.ConfigDict | None = None) -> dict[str, dict[str, float]]:
  """Evaluates one checkpoint (the latest by default): {evaluator: {metric: value}}.

  Results are appended to workdir/eval/<evaluator>.jsonl; `train_examples` overrides the probe
  config's (the probes then fit on the first N training examples).
  """
  probe = ml_collections.ConfigDict(probe or _default_probe())
  if train_examples:
    probe.train_examples = train_examples
  require_checkpoints(workdir, step)  # before the writer creates eval/ in a mistyped workdir
  writer = ResultsWriter(workdir, probe.name)
  try:
    return evaluate_checkpoint(workdir, probe, step, writer, EvalRecord(workdir, probe.name))
  finally:
    writer.close()


def _default_probe() -> ml_collections.ConfigDict:
  from lejepa_jax import config_lib  # pylint: disable=import-outside-toplevel
  return config_lib.probe_config()


def checkpoint_steps(workdir: str) -> list[int]:
  """Finalised checkpoint steps of a run (orbax ignores the temporary directories of unfinished
  saves, so a half-written checkpoint is not listed until it is complete)."""
  if not os.path.isdir(checkpoint_dir(workdir)):
    return []
  manager = _open_manager(workdir)
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def require_checkpoints(workdir: str, step: int | None = None) -> None:
  """FileNotFoundError naming the directory when the run has no finished checkpoint (at `step`)."""
  manager = _open_manager(workdir)
  try:
    _pick_step(manager, step, workdir)
  finally:
    manager.close()


def wait_for_checkpoints(workdir: str, probe: ml_collections.ConfigDict) -> list[int]:
  """The run's checkpoint steps once there is one: a --follow job may start before training has
  saved. FileNotFoundError after `probe.idle_timeout` seconds without one."""
  start, last_message = time.monotonic(), None
  while True:
    now = time.monotonic()
    found, timed_out = agreed(checkpoint_steps(workdir), now - start > probe.idle_timeout)
    if found:
      return found
    if timed_out:
      raise FileNotFoundError(
          f"No checkpoint appeared in {checkpoint_dir(workdir)} within {now - start:.0f} s (the "
          f"probe config's idle_timeout). Is training running with --workdir={workdir}?")
    if last_message is None or now - last_message > 600:  # a sign of life every 10 minutes
      last_message = now
      log.info("waiting for the first checkpoint in %s (looking every %.0f s, for up to %.0f s)",
               checkpoint_dir(workdir), probe.poll_seconds, probe.idle_timeout)
    time.sleep(probe.poll_seconds)


MAX_AGREED_STEPS = 4096


def agreed(steps_: list[int], stop: bool) -> tuple[list[int], bool]:
  """Process 0's (checkpoint steps, stop decision) on every process.

  The processes of a multi-process job evaluate together (restores and features are collective),
  so they must take the same steps in the same order and stop together, though each lists the
  directory at its own moment (rotation may delete a step in between) and keeps its own clock.
  """
  if jax.process_count() == 1:
    return steps_, stop
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  message = np.full(MAX_AGREED_STEPS + 1, -1, np.int64)
  message[0] = int(stop)
  kept = sorted(steps_)[-MAX_AGREED_STEPS:]
  message[1:1 + len(kept)] = kept
  message = np.asarray(multihost_utils.broadcast_one_to_all(message))
  return [int(s) for s in message[1:] if s >= 0], bool(message[0])


def follow(workdir: str, probe: ml_collections.ConfigDict, writer: ResultsWriter,
           mesh: jax.sharding.Mesh | None = None) -> EvalRecord:
  """Evaluates every new checkpoint of a (running) training job once, until its final step is done
  or no checkpoint has appeared for `probe.idle_timeout` seconds. Restart-safe via EvalRecord."""
  from lejepa_jax import train  # pylint: disable=import-outside-toplevel
  record = EvalRecord(workdir, probe.name)
  last_activity = time.monotonic()
  guard = train.PreemptionGuard()  # a preemption notice stops every process before the next step
  try:
    while not record.finished():
      listed, idle = agreed([s for s in checkpoint_steps(workdir) if not record.handled(s)],
                            time.monotonic() - last_activity > probe.idle_timeout)
      if idle and not listed:
        log.warning("no new checkpoint in %s for %.0f s; stopping", workdir, probe.idle_timeout)
        break
      if _evaluate_listed(workdir, probe, listed, writer, record, mesh, guard):
        log.warning("stopped by a preemption notice; rerun the same command to continue")
        break
      last_activity = time.monotonic() if listed else last_activity
      if record.finished():
        break
      if not listed:
        time.sleep(probe.poll_seconds)
  finally:
    guard.restore()
  return record


def _evaluate_listed(workdir, probe, listed: list[int], writer, record: EvalRecord, mesh, guard
                     ) -> bool:
  """Evaluates the listed steps in order; True when a preemption notice stopped it (checked before
  each step, or once when none is listed, at the same point on every process)."""
  if not listed:
    return guard.stop_at(0)
  for step in listed:
    if guard.stop_at(step):
      return True
    try:
      evaluate_checkpoint(workdir, probe, step, writer, record, mesh)
    except StepNotFoundError:
      # Listed a moment ago, deleted since by the run's rotation: nothing to evaluate or record.
      log.info("checkpoint step %d was removed by the training run before its turn", step)
    except CheckpointError as e:
      log.warning("%s Skipping it.", e)
      record.mark_skipped(step, str(e))
  return False


def run(workdir: str, probe: ml_collections.ConfigDict, step: int | None = None,
        follow_run: bool = False) -> list[dict]:
  """The job: baselines (once), then the latest / given checkpoint, or every checkpoint with
  `follow_run`. Returns the result rows (also printed as a table)."""
  # Before anything is written: a mistyped workdir stays as it was (non-existent).
  if follow_run:
    wait_for_checkpoints(workdir, probe)
  else:
    require_checkpoints(workdir, step)
  writer = ResultsWriter(workdir, probe.name)
  record = EvalRecord(workdir, probe.name)
  try:
    evaluate_baselines(workdir, probe, writer, record)
    if follow_run:
      follow(workdir, probe, writer)
    else:
      evaluate_checkpoint(workdir, probe, step, writer, record)
  finally:
    writer.close()
  picture = os.path.join(workdir, "eval", f"time_to_accuracy_{probe.name}.png")
  if jax.process_index() == 0 and reports.plot_time_to_accuracy(workdir, probe.name, picture):
    log.info("accuracy against minutes of training: %s", picture)
  return writer.rows


def main(argv: list[str]) -> None:
  del argv
  distributed.initialize_if_multi_process()  # joins the cluster as training does
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
  absl_logging.set_verbosity(absl_logging.WARNING)
  # Progress lines from process 0 only; the other processes report warnings and errors.
  log.setLevel(logging.INFO if jax.process_index() == 0 else logging.WARNING)
  probe = _CONFIG.value if _CONFIG.value is not None else _default_probe()
  try:
    rows = run(_WORKDIR.value, probe, _STEP.value, _FOLLOW.value)
  except (FileNotFoundError, CheckpointError, ValueError) as e:
    raise SystemExit(f"error: {e}") from None
  if jax.process_index() == 0:
    print(format_table(rows))


if __name__ == "__main__":
  # Flags are defined only when run as a program: the library import must not register a second
  # --config / --workdir next to lejepa_jax.main's in processes that import both.
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Probe config (configs/probe/*.py); the defaults when omitted.",
      lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir.", required=True)
  _STEP = flags.DEFINE_integer("step", None, "Evaluate this checkpoint step (default: latest).")
  _FOLLOW = flags.DEFINE_boolean("follow", False, "Evaluate every new checkpoint while training "
                                 "runs, each once (restart-safe).")
  app.run(main)
