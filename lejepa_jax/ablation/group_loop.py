r"""Batched ablations: the members of a hyperparameter sweep trained as one vmapped program.

    python -m lejepa_jax.ablate --config=configs/fashion_mnist.py --workdir=DIR \
        --sweep=loss.sigreg_weight=0.0,0.01,0.02,0.05,0.1,0.2 [--sweep=optim.lr=1e-3,2e-3] \
        [--seeds=3] [--member_shards=K] [--config.total_steps=...]

Members are the product of the sweeps (then of the seeds). The hyperparameters in TRACED only enter
the step as numbers: they are traced per member, so the members' parameters and optimizer states
are stacked on a leading member axis and one jitted step (`jax.vmap` of `steps.train_step`) trains
them all on the same input batch. Any other swept key (loss.num_slices, the model, ...) may change
shapes or the program: members are grouped by those values into separate programs, trained one
after another. The member axis composes with the config's mesh: `--member_shards=K` adds a mesh
axis "member" of size K that shards it (the batch stays sharded over data/fsdp); groups whose size K
does not divide are padded with copies of their last member, whose results are dropped.

Seeds: a member's seed sets its initialisation, its SIGReg directions and on-device augmentation
(step key fold_in(key(seed), step), as in a single run). The data order and the host-side crops
follow the base config's seed and are shared by every member, so a member trained alone with
`lejepa_jax.main` and the same config sees the same batches only when its seed is the base seed.

Layout of DIR:
  ablation_spec.json           the base config, the members and their groups (a rerun must match)
  checkpoints/<group>/<step>/  the group's stacked state and the data iterator (for resuming)
  members/<name>/              a training workdir per member: metrics.jsonl (its train_seconds is
                               the group's clock: the members train together, so a member's minutes
                               are those of all its group's members), tensorboard/,
                               checkpoints/ (saved with the member's own config, so the evaluation
                               job and export read it like any run), summary.json, curves.png and
                               selection.json (RankMe, SIGReg, online-probe accuracy on eval data)
  ablation.json, ablation.png  the label-free model-selection report (lejepa_jax.ablation.report)

Rerunning the same command resumes every group from its latest checkpoint; once all are done it
only rewrites the report (e.g. after `python -m lejepa_jax.evaluate --workdir=DIR/members/<name>`).
A member whose loss becomes non-finite is reported and kept (the others are unaffected).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from lejepa_jax import data
from lejepa_jax.ablation import member_outputs, stacked, sweep_plan
from lejepa_jax.evaluation import eval_records, restore
from lejepa_jax.evaluation import job as evaluation_job
from lejepa_jax.training import (
  checkpointing,
  event_log,
  loop,
  optimizers,
  preemption,
  resume,
  train_state,
)

log = logging.getLogger("lejepa_jax")


@dataclasses.dataclass
class GroupRun:
  """A group's program, data and stacked state (the members padded to the member shards)."""

  group: sweep_plan.Group
  mesh: jax.sharding.Mesh
  members: list[sweep_plan.Member]
  graphdef: Any
  state: Any
  hparams: dict[str, jax.Array]
  iterator: Any
  manager: Any
  start: int


def setup_group(group: sweep_plan.Group, workdir: str, member_shards: int) -> GroupRun:
  """Mesh, data iterator and stacked state of a group, restored from its latest checkpoint."""
  config = group.config
  mesh = stacked.make_mesh(config, member_shards)
  members = stacked.padded(group.members, mesh.shape[stacked.MEMBER_AXIS])
  source = data.open_source(config.data.name, config.data.split, config.data.data_dir)
  iterator = resume.train_iterator(config, source)
  graphdef, state = stacked.init_stacked_state(config, [m.config.seed for m in members], mesh)
  manager = checkpointing.training_manager(
    os.path.join(workdir, "checkpoints", group.name), config.keep_checkpoints
  )
  start, iterator = resume.resume(manager, state, iterator, config, source)
  if start:
    log.info("[%s] resumed from step %d", group.name, start)
  return GroupRun(
    group,
    mesh,
    members,
    graphdef,
    state,
    stacked.stacked_hparams(members, mesh),
    iterator,
    manager,
    start,
  )


def _save(run: GroupRun, outputs: Sequence[member_outputs.MemberOutputs], extract, step: int) -> None:
  """The stacked checkpoint (for resuming) and each member's own checkpoint of `step`."""
  # A step already on disk (a resumed run repeating steps, or the restored step itself) is the
  # same state: training is deterministic. Saving it again would fail.
  if step not in run.manager.all_steps():
    checkpointing.save_training(
      run.manager,
      step,
      train_state.to_savable(nnx.to_pure_dict(run.state)),
      run.iterator,
      json.loads(run.group.config.to_json()),
    )
  for i, out in enumerate(outputs):
    if step not in out.manager.all_steps():
      out.save(step, extract(run.state, np.int32(i)), run.iterator)


def _log_step(
  run: GroupRun, outputs, step: int, metrics, step_time: float, train_seconds: float
) -> None:
  values = jax.device_get(metrics)
  config = run.group.config
  for i, out in enumerate(outputs):
    row = {k: float(v[i]) for k, v in values.items()}
    row["lr"] = float(optimizers.lr_schedule(out.member.config)(step - 1))
    row["step_time_s"] = step_time
    row["images_per_s"] = config.data.global_batch_size / step_time
    row["train_seconds"] = train_seconds
    out.write(step, row)
  losses = " ".join(f"{float(v):.4f}" for v in values["loss"][: len(outputs)])
  log.info(
    "[%s] step %d/%d %.3f s/step (%d members) | loss %s",
    run.group.name,
    step,
    config.total_steps,
    step_time,
    len(outputs),
    losses,
  )


def train_group(
  run: GroupRun,
  outputs: Sequence[member_outputs.MemberOutputs],
  last_step: int,
  guard: preemption.PreemptionGuard,
) -> int:
  """Steps the group from its start to `last_step` (or a preemption); returns the last step."""
  config = run.group.config
  extract = stacked.member_extractor(run.state, run.mesh)
  if run.start:
    _save(run, outputs, extract, run.start)  # members whose save the interruption cut short
  if run.start >= last_step:
    return run.start
  compiled = stacked.compile_members_step(config, run.mesh, run.graphdef, run.state, run.hparams)

  def step_fn(step: int) -> dict[str, jax.Array]:
    batch = data.to_global_batch(next(run.iterator), run.mesh)
    with jax.set_mesh(run.mesh):
      run.state, metrics = compiled(run.state, run.hparams, batch, np.int32(step))
    return metrics

  return loop.run_steps(
    run.start,
    last_step,
    step_fn,
    log_every=config.log_every,
    checkpoint_every=config.checkpoint_every,
    guard=guard,
    on_log=lambda step, metrics, step_time, seconds: _log_step(
      run, outputs, step, metrics, step_time, seconds
    ),
    on_save=lambda step: _save(run, outputs, extract, step),
    # The members share one clock, continued across resumes from the first member's last line.
    seconds_before=event_log.train_seconds_at(outputs[0].dir, run.start),
  )


def group_done(group: sweep_plan.Group, workdir: str) -> bool:
  """True when the group reached total_steps and its members' selection metrics are written."""
  directory = os.path.join(workdir, "checkpoints", group.name)
  if not os.path.isdir(directory):
    return False
  manager = checkpointing.training_manager(directory)
  try:
    finished = manager.latest_step() == group.config.total_steps
  finally:
    manager.close()
  return finished and all(
    os.path.exists(member_outputs.selection_path(workdir, m)) for m in group.members
  )


def run_group(
  group: sweep_plan.Group,
  workdir: str,
  member_shards: int,
  stop_after: int | None,
  guard: preemption.PreemptionGuard,
  eval_examples: int,
) -> tuple[int, int]:
  """Trains (or resumes) one group to total_steps (or stop_after / a preemption) and evaluates its
  members once done; returns (the step it started from, the step it reached)."""
  total = group.config.total_steps
  if group_done(group, workdir):
    return total, total
  last_step = total if stop_after is None else min(stop_after, total)
  run = setup_group(group, workdir, member_shards)
  outputs = [
    member_outputs.MemberOutputs(workdir, m, group.config.keep_checkpoints) for m in group.members
  ]
  try:
    step = train_group(run, outputs, last_step, guard)
    if step == total:
      results = stacked.evaluate_members(run.graphdef, run.state, group.config, run.mesh, eval_examples)
      if jax.process_index() == 0:
        member_outputs.write_selection(outputs, results)
  finally:
    run.manager.wait_until_finished()
    run.manager.close()
    for out in outputs:
      out.close()
  return run.start, step


def _check_spec(workdir: str, config, groups: Sequence[sweep_plan.Group], member_shards: int) -> None:
  """Writes DIR/ablation_spec.json, or checks that a rerun asks for the same ablation."""
  spec = {
    "config": json.loads(config.to_json()),
    "member_shards": member_shards,
    "groups": {
      g.name: [{"name": m.name, "overrides": [list(o) for o in m.overrides]} for m in g.members]
      for g in groups
    },
  }
  path = os.path.join(workdir, "ablation_spec.json")
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    # As for a single run, where and how it runs may change (data_dir, mesh, logging, ...).
    changes = resume.config_changes(saved["config"], config)
    if saved["groups"] != spec["groups"]:
      changes.append("the sweeps or seeds (members)")
    if saved["member_shards"] != member_shards:
      changes.append(f"member_shards: {saved['member_shards']} -> {member_shards}")
    if changes:
      raise ValueError(
        f"{workdir} holds another ablation ({path}; changed: {'; '.join(changes)}). "
        "Use a new --workdir for a new ablation; nothing was changed in this one."
      )
    return
  if jax.process_index() == 0:
    with open(path, "w") as f:
      json.dump(spec, f, indent=1)


def run(
  config: ml_collections.ConfigDict,
  workdir: str,
  sweeps: Sequence[tuple[str, Sequence[str]]],
  seeds: int = 1,
  member_shards: int = 1,
  stop_after: int | None = None,
  eval_examples: int = 2048,
  alpha: float = 0.4,
  probe: ml_collections.ConfigDict | None = None,
) -> dict | None:
  """Trains (or resumes) every member of the sweep; returns the report once all are done.

  Args:
    config: the base experiment config.
    workdir: the ablation directory (layout in the module docstring).
    sweeps: [(config key, [value texts])]; members are their product.
    seeds: runs of every combination with seeds config.seed, config.seed + 1, ...
    member_shards: size of the mesh axis sharding the members (must divide the devices).
    stop_after: leave (checkpointed) once a group has been advanced to this step, as a preempted
      job would; a rerun continues (groups already there wait, the next one advances).
    eval_examples: eval-split examples for each member's RankMe and online-probe accuracy.
    alpha: the report's loss rescaling exponent (loss * lambda^-alpha).
    probe: an evaluation-job probe config (configs/probe/*.py): once every member is trained, the
      job evaluates each member's kept checkpoints with it (once; a rerun skips what it has done),
      and the report holds their linear and kNN accuracy (the final step's; ablation_curves.png
      and the per-step correlations the others).
  """
  from lejepa_jax.ablation import report as ablation_report

  groups = sweep_plan.plan_sweep(config, sweeps, seeds)
  os.makedirs(workdir, exist_ok=True)
  _check_spec(workdir, config, groups, member_shards)
  log.info(
    "%d members in %d program(s): %s",
    sum(len(g.members) for g in groups),
    len(groups),
    "; ".join(f"{g.name}: {len(g.members)}" for g in groups),
  )
  guard, finished = preemption.PreemptionGuard(), 0
  try:
    for group in groups:
      start, reached = run_group(group, workdir, member_shards, stop_after, guard, eval_examples)
      finished += reached == group.config.total_steps
      if guard.requested or start < reached < group.config.total_steps:
        break  # preempted, or stopped after advancing this group to stop_after: leave
  finally:
    guard.restore()
  if finished < len(groups):
    return None
  members = [m for g in groups for m in g.members]
  if probe is not None:
    evaluate_with_probe(workdir, members, probe)
  if jax.process_index() != 0:
    return None
  return ablation_report.write_report(workdir, members, alpha)


def evaluate_with_probe(
  workdir: str, members: Sequence[sweep_plan.Member], probe: ml_collections.ConfigDict
) -> None:
  """The evaluation job (`lejepa_jax.evaluate`) on every kept checkpoint of each member, skipping
  those it has already evaluated with this probe config (a rerun continues where it stopped)."""
  for i, member in enumerate(members):
    member_dir = os.path.join(workdir, "members", member.name)
    record = eval_records.EvalRecord(member_dir, probe.name)
    for step in restore.checkpoint_steps(member_dir):
      if record.handled(step):
        continue
      log.info(
        "member %d/%d (%s), step %d: evaluation job, probe config %s",
        i + 1,
        len(members),
        member.name,
        step,
        probe.name,
      )
      evaluation_job.evaluate(member_dir, step, probe=probe)
      record = eval_records.EvalRecord(member_dir, probe.name)
