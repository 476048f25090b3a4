r"""The evaluation job: frozen-feature probes on a training run's checkpoints.

    python -m lejepa_jax.evaluate --config=configs/probe/default.py --workdir=<training workdir> \
        [--step=N | --follow] [--config.evaluators=linear,knn,...]

Restores the model only (no optimizer state is read) from the run's orbax checkpoints onto this
job's devices (any count), extracts frozen features once per checkpoint and runs the evaluators the
probe config names, by name (`lejepa_jax.evaluation.registry`). Without --step it
evaluates the latest checkpoint; a --step the run does not have is an error listing the steps it
has. With --follow it waits for the first checkpoint, then keeps watching the workdir while training
runs and evaluates every new checkpoint once (the evaluated steps are recorded, so a restarted job
carries on); a checkpoint whose files cannot be read is skipped with a message, and one that the run's
checkpoint rotation removed before its turn is passed over. Nothing under `checkpoints/` is ever
changed. Results: `workdir/eval/<evaluator>.jsonl`, TensorBoard scalars in
`workdir/eval/tensorboard`, pictures in `workdir/eval/pictures`, a table on the console.
The checkpoints are read by `lejepa_jax.evaluation.restore` (shared with `lejepa_jax.export`).
"""

from __future__ import annotations

import copy
import logging
import os
import time

import jax
import ml_collections

from lejepa_jax.evaluation import eval_records, evaluators, extraction, registry, restore
from lejepa_jax.scale import distributed
from lejepa_jax.training import preemption

log = logging.getLogger("lejepa_jax")


def probed_config(config: ml_collections.ConfigDict, probe: ml_collections.ConfigDict):
  """The run's config reading the data the probe config names: the run's own dataset, or for
  transfer (`probe.dataset`) another known dataset's splits and classes, at the run's resolution
  and input normalisation."""
  if not probe.get("dataset"):
    return config
  from lejepa_jax import config_lib

  config = copy.deepcopy(config)
  with config.unlocked():
    config_lib.set_dataset(config, probe.dataset)
    if probe.get("data_dir"):
      config.data.data_dir = probe.data_dir
  return config


def run_evaluators(subject: registry.Subject, names: list[str]) -> dict[str, dict[str, float]]:
  """{evaluator: {metric: value}} for the named evaluators the subject serves, each with the probe
  config's options of its name."""
  results = {}
  for name in names:
    evaluator = registry.get(name)
    if evaluator.needs not in subject.serves:
      continue
    options = dict(subject.probe[name]) if name in subject.probe else {}
    start = time.perf_counter()
    metrics = evaluator.run(subject, **options)
    log.info(
      "%s: %s in %.1f s: %s",
      subject.label,
      name,
      time.perf_counter() - start,
      eval_records.format_metrics(metrics) or "done",
    )
    if metrics:
      results[name] = metrics
  return results


def evaluate_checkpoint(
  workdir: str,
  probe: ml_collections.ConfigDict,
  step: int | None,
  writer: eval_records.ResultsWriter,
  record: eval_records.EvalRecord,
  mesh: jax.sharding.Mesh | None = None,
) -> dict[str, dict[str, float]]:
  """Restores one checkpoint, runs the evaluators (features extracted once, when first read),
  records the step."""
  names = registry.names(probe)
  encoder, config, step = restore.restore_encoder(workdir, step, mesh)
  config = probed_config(config, probe)
  label = f"checkpoint step {step}"
  log.info("%s: evaluating (%s)", label, ", ".join(names))
  subject = registry.Subject(
    label,
    config,
    probe,
    lambda: extraction.feature_set(encoder, config, probe, label),
    encoder,
    pictures_prefix=os.path.join(workdir, "eval", "pictures", f"{probe.name}_step{step}"),
  )
  results = run_evaluators(subject, names)
  writer.write(step, "checkpoint", results)
  record.mark_done(step, int(config.total_steps))
  return results


def evaluate_baselines(
  workdir: str,
  probe: ml_collections.ConfigDict,
  writer: eval_records.ResultsWriter,
  record: eval_records.EvalRecord,
  mesh: jax.sharding.Mesh | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
  """The probe config's baselines ("pixels", "random_init") on the run's data, once per workdir."""
  wanted = [b.strip() for b in probe.baselines.split(",") if b.strip()]
  unknown = set(wanted) - {"pixels", "random_init"}
  if unknown:
    raise ValueError(f"Unknown baseline(s) {sorted(unknown)}; available: pixels, random_init.")
  todo = [b for b in wanted if b not in record.data["baselines"]]
  if not todo:
    return {}
  config = probed_config(restore.latest_config(workdir), probe)
  names = registry.names(probe)
  out = {}
  for baseline in todo:
    log.info("baseline %s: evaluating (%s)", baseline, ", ".join(names))
    out[baseline] = run_evaluators(_baseline_subject(baseline, config, probe, mesh), names)
    writer.write(0, baseline, out[baseline])
    record.mark_baseline(baseline)
  return out


def _baseline_subject(baseline: str, config, probe, mesh) -> registry.Subject:
  """Raw pixels serve the frozen-feature evaluators; the untrained encoder its features too."""
  label = f"baseline {baseline}"
  if baseline == "pixels":
    return registry.Subject(
      label,
      config,
      probe,
      lambda: _pixel_feature_set(config, probe),
      serves=frozenset({registry.FEATURES}),
    )
  encoder = restore.random_init_encoder(config, mesh)
  return registry.Subject(
    label,
    config,
    probe,
    lambda: extraction.feature_set(encoder, config, probe, label),
    encoder,
    serves=frozenset({registry.FEATURES, registry.ENCODER_FEATURES}),
  )


def _pixel_feature_set(config, probe) -> evaluators.FeatureSet:
  limit = extraction.example_limit
  train_x, train_y = extraction.pixel_features(config, config.data.split, limit(probe.train_examples))
  test_x, test_y = extraction.pixel_features(config, config.data.eval_split, limit(probe.eval_examples))
  return evaluators.FeatureSet(train_x, train_y, test_x, test_y, int(config.probe.num_classes))


def evaluate(
  workdir: str,
  step: int | None = None,
  train_examples: int | None = None,
  probe: ml_collections.ConfigDict | None = None,
) -> dict[str, dict[str, float]]:
  """Evaluates one checkpoint (the latest by default): {evaluator: {metric: value}}.

  Results are appended to workdir/eval/<evaluator>.jsonl; `train_examples` overrides the probe
  config's (the probes then fit on the first N training examples).
  """
  probe = ml_collections.ConfigDict(probe or default_probe())
  if train_examples:
    probe.train_examples = train_examples
  restore.require_checkpoints(workdir, step)  # before the writer creates eval/ in a mistyped workdir
  writer = eval_records.ResultsWriter(workdir, probe.name)
  try:
    return evaluate_checkpoint(
      workdir, probe, step, writer, eval_records.EvalRecord(workdir, probe.name)
    )
  finally:
    writer.close()


def default_probe() -> ml_collections.ConfigDict:
  from lejepa_jax import config_lib

  return config_lib.probe_config()


def wait_for_checkpoints(workdir: str, probe: ml_collections.ConfigDict) -> list[int]:
  """The run's checkpoint steps once there is one: a --follow job may start before training has
  saved. FileNotFoundError after `probe.idle_timeout` seconds without one."""
  start, last_message = time.monotonic(), None
  while True:
    now = time.monotonic()
    found, timed_out = distributed.broadcast_from_process_0(
      restore.checkpoint_steps(workdir), now - start > probe.idle_timeout
    )
    if found:
      return found
    if timed_out:
      raise FileNotFoundError(
        f"No checkpoint appeared in {restore.checkpoint_dir(workdir)} within {now - start:.0f} s (the "
        f"probe config's idle_timeout). Is training running with --workdir={workdir}?"
      )
    if last_message is None or now - last_message > 600:  # a sign of life every 10 minutes
      last_message = now
      log.info(
        "waiting for the first checkpoint in %s (looking every %.0f s, for up to %.0f s)",
        restore.checkpoint_dir(workdir),
        probe.poll_seconds,
        probe.idle_timeout,
      )
    time.sleep(probe.poll_seconds)


def follow(
  workdir: str,
  probe: ml_collections.ConfigDict,
  writer: eval_records.ResultsWriter,
  mesh: jax.sharding.Mesh | None = None,
) -> eval_records.EvalRecord:
  """Evaluates every new checkpoint of a (running) training job once, until its final step is done
  or no checkpoint has appeared for `probe.idle_timeout` seconds. Restart-safe via EvalRecord."""
  record = eval_records.EvalRecord(workdir, probe.name)
  last_activity = time.monotonic()
  guard = preemption.PreemptionGuard()  # a preemption notice stops every process before the next step
  try:
    while not record.finished():
      listed, idle = distributed.broadcast_from_process_0(
        [s for s in restore.checkpoint_steps(workdir) if not record.handled(s)],
        time.monotonic() - last_activity > probe.idle_timeout,
      )
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


def _evaluate_listed(
  workdir, probe, listed: list[int], writer, record: eval_records.EvalRecord, mesh, guard
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
    except restore.StepNotFoundError:
      # Listed a moment ago, deleted since by the run's rotation: nothing to evaluate or record.
      log.info("checkpoint step %d was removed by the training run before its turn", step)
    except restore.CheckpointError as e:
      log.warning("%s Skipping it.", e)
      record.mark_skipped(step, str(e))
  return False


def run(
  workdir: str, probe: ml_collections.ConfigDict, step: int | None = None, follow_run: bool = False
) -> list[dict]:
  """The job: baselines (once), then the latest / given checkpoint, or every checkpoint with
  `follow_run`. Returns the result rows (also printed as a table)."""
  # Before anything is written: a mistyped workdir stays as it was (non-existent).
  if follow_run:
    wait_for_checkpoints(workdir, probe)
  else:
    restore.require_checkpoints(workdir, step)
  writer = eval_records.ResultsWriter(workdir, probe.name)
  record = eval_records.EvalRecord(workdir, probe.name)
  try:
    evaluate_baselines(workdir, probe, writer, record)
    if follow_run:
      follow(workdir, probe, writer)
    else:
      evaluate_checkpoint(workdir, probe, step, writer, record)
  finally:
    writer.close()
  picture = os.path.join(workdir, "eval", f"time_to_accuracy_{probe.name}.png")
  if jax.process_index() == 0 and eval_records.plot_time_to_accuracy(workdir, probe.name, picture):
    log.info("accuracy against minutes of training: %s", picture)
  return writer.rows
