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
  members/<name>/              a training workdir per member: metrics.jsonl, tensorboard/,
                               checkpoints/ (saved with the member's own config, so the evaluation
                               job and export read it like any run), summary.json, curves.png and
                               selection.json (RankMe, SIGReg, online-probe accuracy on eval data)
  ablation.json, ablation.png  the label-free model-selection report (lejepa_jax.ablation_report)

Rerunning the same command resumes every group from its latest checkpoint; once all are done it
only rewrites the report (e.g. after `python -m lejepa_jax.evaluate --workdir=DIR/members/<name>`).
A member whose loss becomes non-finite is reported and kept (the others are unaffected).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import math
import os
import time
from typing import Any
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from lejepa_jax import (checkpointing, compiler, config_lib, data, distributed, evaluate, evaluators,
                        reports, sharding, steps, train)
from lejepa_jax.losses import lejepa as lejepa_loss
from lejepa_jax.models import members as members_lib

log = logging.getLogger("lejepa_jax")

# Config keys whose values a member's step receives as traced numbers -> their name in the step.
TRACED = {"loss.sigreg_weight": "sigreg_weight", "optim.lr": "lr",
          "optim.weight_decay": "weight_decay", "seed": "seed"}
MEMBER_AXIS = "member"


@dataclasses.dataclass(frozen=True)
class Member:
  """One configuration of the sweep: `overrides` {config key: value text} applied to the base."""
  name: str
  overrides: tuple[tuple[str, str], ...]
  config: ml_collections.ConfigDict

  def hparams(self) -> dict[str, float]:
    c = self.config
    return {"sigreg_weight": float(c.loss.sigreg_weight), "lr": float(c.optim.lr),
            "weight_decay": float(c.optim.weight_decay), "seed": int(c.seed)}


@dataclasses.dataclass(frozen=True)
class Group:
  """Members sharing one program: the same values of every swept key outside TRACED.

  `config` is the base config with those values; its seed (the data seed) is the base seed.
  """
  name: str
  config: ml_collections.ConfigDict
  members: tuple[Member, ...]


# Planning ----------------------------------------------------------------------------------------

def _node_and_leaf(config: ml_collections.ConfigDict, key: str):
  """('a.b.c') -> (config.a.b, 'c')."""
  *path, leaf = key.split(".")
  node = config
  for part in path:
    node = node[part]
  return node, leaf


def with_overrides(config: ml_collections.ConfigDict, overrides: Sequence[tuple[str, str]]
                   ) -> ml_collections.ConfigDict:
  """A copy of `config` with {dotted key: value text} set (values parsed as the key's type)."""
  config = config.copy_and_resolve_references()
  for key, text in overrides:
    try:
      node, leaf = _node_and_leaf(config, key)
      current = node[leaf]
    except (KeyError, AttributeError):
      raise ValueError(f"--sweep names {key!r}, which the config does not have.") from None
    try:
      node[leaf] = config_lib.parse_value(text, current)
    except ValueError as e:
      raise ValueError(f"--sweep {key}: {e}.") from None
  return config


def parse_sweep(text: str) -> tuple[str, list[str]]:
  """'loss.sigreg_weight=0,0.05' -> ('loss.sigreg_weight', ['0', '0.05'])."""
  key, sep, values = text.partition("=")
  if not sep or not key or not values:
    raise ValueError(f"--sweep must look like key=v1,v2,...; got {text!r}.")
  return key.strip(), [v.strip() for v in values.split(",") if v.strip()]


def _member_name(overrides: Sequence[tuple[str, str]], varying: set[str]) -> str:
  """'sigreg_weight=0.05,seed=1' from the keys that vary (their last component when unique)."""
  shorts = [key.split(".")[-1] for key in varying]

  def short(key: str) -> str:
    return key.split(".")[-1] if shorts.count(key.split(".")[-1]) == 1 else key

  return ",".join(f"{short(k)}={v}" for k, v in overrides if k in varying) or "base"


def plan(config: ml_collections.ConfigDict, sweeps: Sequence[tuple[str, Sequence[str]]],
         seeds: int = 1) -> list[Group]:
  """The members (product of the sweeps, then `seeds` seeds from config.seed) in program groups."""
  sweeps = list(sweeps) + ([("seed", [str(config.seed + i) for i in range(seeds)])]
                           if seeds > 1 else [])
  keys = [key for key, _ in sweeps]
  if len(set(keys)) != len(keys):
    raise ValueError(f"A key is swept twice: {keys}.")
  varying = {key for key, values in sweeps if len(values) > 1}
  groups: dict[tuple, list[Member]] = {}
  for values in itertools.product(*[values for _, values in sweeps]):
    overrides = tuple(zip(keys, values))
    member = Member(_member_name(overrides, varying), overrides,
                    with_overrides(config, overrides))
    # Lambda is traced in the members' step, where the loss cannot check it: check it here.
    lejepa_loss.check_sigreg_weight(float(member.config.loss.sigreg_weight),
                                    member.config.loss.combine)
    static = tuple((k, v) for k, v in overrides if k not in TRACED)
    groups.setdefault(static, []).append(member)
  names = [m.name for ms in groups.values() for m in ms]
  if len(set(names)) != len(names):
    raise ValueError(f"Two members would share a name: {names}; sweep distinct values.")
  return [Group(_member_name(static, varying) if static else "all", with_overrides(config, static),
                tuple(ms)) for static, ms in groups.items()]


# The stacked state and the vmapped step --------------------------------------------------------

def make_mesh(config: ml_collections.ConfigDict, member_shards: int) -> jax.sharding.Mesh:
  """The config's mesh with a trailing "member" axis of size `member_shards`.

  Trailing: devices are laid out in process order, so the leading axes are the ones that cross
  processes. The data axis must be among them (each process feeds its own block of the batch, as
  in training); members are sharded over each process's own devices.
  """
  axes = {**dict(config.mesh.axes), MEMBER_AXIS: member_shards}
  return sharding.make_mesh(axes, config.mesh.axis_type,
                            dcn_axes=dict(config.mesh.get("dcn_axes", {})))


def padded(members: Sequence[Member], multiple: int) -> list[Member]:
  """`members` plus copies of the last one up to a multiple of `multiple` (the member shards)."""
  return list(members) + [members[-1]] * (-len(members) % multiple)


def init_stacked_state(config: ml_collections.ConfigDict, seeds: Sequence[int],
                       mesh: jax.sharding.Mesh):
  """(graphdef, state with a leading member axis): member i initialised exactly as a single run
  with seed seeds[i] initialises, all in one vmapped program.

  Each leaf keeps a single run's layout on the other mesh axes; the member axis is sharded over
  the mesh's "member" axis. The optimizer state holds no lr or weight decay, so members differing
  only in those start from the same state.
  """
  graphdef, single = sharding.abstract_state(lambda: train.build_train_objects(config), mesh)
  target = jax.tree.map(lambda x: NamedSharding(mesh, P(MEMBER_AXIS, *x.sharding.spec)), single)

  @functools.partial(jax.jit, out_shardings=target)
  def init(seeds):
    with nnx.use_eager_sharding(False):
      return jax.vmap(lambda seed: nnx.state(train.build_train_objects(config, seed)))(seeds)

  with jax.set_mesh(mesh):
    return graphdef, init(jnp.asarray(seeds, jnp.int32))


def member_extractor(stacked, mesh: jax.sharding.Mesh):
  """`extract(stacked, i)`: member i's state, laid out as a single run's (one compiled program)."""
  single = jax.tree.map(lambda x: NamedSharding(mesh, P(*x.sharding.spec[1:])), stacked)
  return jax.jit(lambda s, i: jax.tree.map(lambda x: x[i], s), out_shardings=single)


def stacked_hparams(members: Sequence[Member], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """{"sigreg_weight", "lr", "weight_decay": float32 [M], "seed": int32 [M]}, sharded by member."""
  values = [m.hparams() for m in members]
  placed = NamedSharding(mesh, P(MEMBER_AXIS))
  return {k: jax.device_put(np.asarray([v[k] for v in values],
                                       np.int32 if k == "seed" else np.float32), placed)
          for k in values[0]}


def member_step(graphdef, config: ml_collections.ConfigDict, state, hparams, batch, step):
  """One member's `steps.train_step` with its traced lambda, lr, weight decay and seed.

  Under `jax.vmap` over (state, hparams) this is every member's step; `step` is a traced int32.
  """
  key = jax.random.fold_in(jax.random.key(hparams["seed"]), step)
  options = train.step_options(config)
  options["loss_config"] = dict(options["loss_config"], sigreg_weight=hparams["sigreg_weight"])
  tx = train.make_optimizer(config, lr=hparams["lr"], weight_decay=hparams["weight_decay"])
  return steps.train_step(graphdef, state, batch, key, tx=tx, **options)


def compile_members_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, graphdef,
                         stacked, hparams):
  """The vmapped step, jitted with the stacked state donated and its layout kept, compiled ahead
  of time. Call as `compiled(stacked, hparams, batch, np.int32(step))` -> (stacked, metrics [M]).

  The metrics come back replicated (a few numbers per member) so that every process can read them.
  """
  vstep = jax.vmap(functools.partial(member_step, graphdef, config), in_axes=(0, 0, None, None))
  state_shardings = jax.tree.map(lambda x: x.sharding, stacked)
  jitted = jax.jit(vstep, donate_argnums=0,
                   out_shardings=(state_shardings, NamedSharding(mesh, P())))
  local_batch = data.pipeline.local_batch_size(config.data.global_batch_size, jax.process_count())
  with jax.set_mesh(mesh), members_lib.member_convolutions(config.member_convolutions):
    compiled = jitted.lower(train.abstract_tree(stacked), train.abstract_tree(hparams),
                            train.abstract_batch(config, mesh, local_batch),
                            jax.ShapeDtypeStruct((), jnp.int32)).compile(
                                compiler_options=compiler.options(config))
  memory = compiled.memory_analysis()
  if memory is not None:
    log.info("members step compiled: %.1f MiB arguments, %.1f MiB temporaries per device",
             memory.argument_size_in_bytes / 2**20, memory.temp_size_in_bytes / 2**20)
  return compiled


def evaluate_members(graphdef, stacked, config: ml_collections.ConfigDict,
                     mesh: jax.sharding.Mesh, examples: int) -> dict[str, np.ndarray]:
  """Every member on the first `examples` of the eval split (centre crops), in eval mode.

  Returns {"features": [M, n, F] backbone features (what probes read), "projections": [M, n, K],
  "predictions": [M, n] online-probe classes, "labels": [n]}.
  """
  mean, std = tuple(config.data.mean), tuple(config.data.std)

  def forward(state, images):
    model, _, probe, _ = nnx.merge(graphdef, state)
    model.eval()
    features, projections = model(steps.normalize(images, mean, std))
    return features, projections, jnp.argmax(probe(features), -1)

  # Replicated results: every process runs the program and can read them.
  run = jax.jit(jax.vmap(forward, in_axes=(0, None)), out_shardings=NamedSharding(mesh, P()))
  out: dict[str, list] = {"features": [], "projections": [], "predictions": [], "labels": []}
  with jax.set_mesh(mesh), members_lib.member_convolutions(config.member_convolutions):
    for batch in evaluate.eval_batches(config, config.data.eval_split, examples):
      valid = batch["valid"]
      for name, value in zip(("features", "projections", "predictions"),
                             jax.device_get(run(stacked, batch["image"]))):
        out[name].append(np.asarray(value)[:, valid])
      out["labels"].append(batch["label"][valid])
  return {k: np.concatenate(v, axis=0 if k == "labels" else 1) for k, v in out.items()}


# Per-member outputs ------------------------------------------------------------------------------

class MemberOutputs:
  """A member's training workdir (DIR/members/<name>): metrics, checkpoints, summary."""

  def __init__(self, workdir: str, member: Member, keep: int):
    self.member = member
    self.dir = os.path.join(workdir, "members", member.name)
    os.makedirs(self.dir, exist_ok=True)
    self.writer = train.MetricsWriter(self.dir)
    self.manager = checkpointing.training_manager(os.path.join(self.dir, "checkpoints"), keep)
    self.diverged_at: int | None = None

  def write(self, step: int, row: dict[str, float]) -> None:
    if not math.isfinite(row["loss"]) and self.diverged_at is None:
      self.diverged_at = step
      log.warning("member %s: non-finite loss at step %d (its results are kept and reported; the "
                  "other members are unaffected)", self.member.name, step)
    self.writer.write(step, row)

  def save(self, step: int, state, iterator) -> None:
    checkpointing.save_training(self.manager, step, train.to_savable(nnx.to_pure_dict(state)),
                                iterator, json.loads(self.member.config.to_json()))

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
    self.writer.close()


def selection_path(workdir: str, member: Member) -> str:
  return os.path.join(workdir, "members", member.name, "selection.json")


def write_selection(outputs: Sequence[MemberOutputs], results: dict[str, np.ndarray]) -> None:
  """selection.json per member: the evaluation job's label-free metrics (RankMe of features and
  projections, SIGReg of the projections over the eval examples) and the online probe's accuracy."""
  labels = results["labels"]
  for i, out in enumerate(outputs):
    # label_free reads only the evaluation part of the feature set.
    features = evaluators.FeatureSet(results["features"][i], labels, results["features"][i], labels,
                                     int(out.member.config.probe.num_classes),
                                     results["projections"][i])
    row = {"eval_examples": int(len(labels)), **evaluators.label_free(features),
           "online_probe_eval_accuracy": float(np.mean(results["predictions"][i] == labels))}
    with open(os.path.join(out.dir, "selection.json"), "w") as f:
      json.dump(row, f, indent=2)
    rows = reports.read_metrics(out.dir)
    if rows:
      reports.write_summary(out.dir, rows[-1])


# Training a group --------------------------------------------------------------------------------

@dataclasses.dataclass
class GroupRun:
  """A group's program, data and stacked state (the members padded to the member shards)."""
  group: Group
  mesh: jax.sharding.Mesh
  members: list[Member]
  graphdef: Any
  state: Any
  hparams: dict[str, jax.Array]
  iterator: Any
  manager: Any
  start: int


def setup_group(group: Group, workdir: str, member_shards: int) -> GroupRun:
  """Mesh, data iterator and stacked state of a group, restored from its latest checkpoint."""
  config = group.config
  mesh = make_mesh(config, member_shards)
  members = padded(group.members, mesh.shape[MEMBER_AXIS])
  source = data.open_source(config.data.name, config.data.split, config.data.data_dir)
  iterator = train.train_iterator(config, source)
  graphdef, state = init_stacked_state(config, [m.config.seed for m in members], mesh)
  manager = checkpointing.training_manager(os.path.join(workdir, "checkpoints", group.name),
                                           config.keep_checkpoints)
  start, iterator = train.resume(manager, state, iterator, config, source)
  if start:
    log.info("[%s] resumed from step %d", group.name, start)
  return GroupRun(group, mesh, members, graphdef, state, stacked_hparams(members, mesh), iterator,
                  manager, start)


def _save(run: GroupRun, outputs: Sequence[MemberOutputs], extract, step: int) -> None:
  """The stacked checkpoint (for resuming) and each member's own checkpoint of `step`."""
  # A step already on disk (a resumed run repeating steps, or the restored step itself) is the
  # same state: training is deterministic. Saving it again would fail.
  if step not in run.manager.all_steps():
    checkpointing.save_training(run.manager, step, train.to_savable(nnx.to_pure_dict(run.state)),
                                run.iterator, json.loads(run.group.config.to_json()))
  for i, out in enumerate(outputs):
    if step not in out.manager.all_steps():
      out.save(step, extract(run.state, np.int32(i)), run.iterator)


def _log_step(run: GroupRun, outputs, step: int, metrics, step_time: float) -> None:
  values = jax.device_get(metrics)
  config = run.group.config
  for i, out in enumerate(outputs):
    row = {k: float(v[i]) for k, v in values.items()}
    row["lr"] = float(train.lr_schedule(out.member.config)(step - 1))
    row["step_time_s"] = step_time
    row["images_per_s"] = config.data.global_batch_size / step_time
    out.write(step, row)
  losses = " ".join(f"{float(v):.4f}" for v in values["loss"][:len(outputs)])
  log.info("[%s] step %d/%d %.3f s/step (%d members) | loss %s", run.group.name, step,
           config.total_steps, step_time, len(outputs), losses)


def train_group(run: GroupRun, outputs: Sequence[MemberOutputs], last_step: int,
                guard: train.PreemptionGuard) -> int:
  """Steps the group from its start to `last_step` (or a preemption); returns the last step."""
  config = run.group.config
  extract = member_extractor(run.state, run.mesh)
  if run.start:
    _save(run, outputs, extract, run.start)  # members whose save the interruption cut short
  if run.start >= last_step:
    return run.start
  compiled = compile_members_step(config, run.mesh, run.graphdef, run.state, run.hparams)
  window, step = (run.start, time.perf_counter()), run.start
  for step in range(run.start + 1, last_step + 1):
    batch = data.to_global_batch(next(run.iterator), run.mesh)
    with jax.set_mesh(run.mesh):
      run.state, metrics = compiled(run.state, run.hparams, batch, np.int32(step))
    stopping = guard.stop_at(step) or step == last_step
    if step % config.log_every == 0 or stopping:
      jax.block_until_ready(metrics)  # the steps run asynchronously: time finished work
      now = time.perf_counter()
      _log_step(run, outputs, step, metrics, (now - window[1]) / (step - window[0]))
      window = (step, now)
    if step % config.checkpoint_every == 0 or stopping:
      _save(run, outputs, extract, step)
    if stopping:
      break
  return step


def group_done(group: Group, workdir: str) -> bool:
  """True when the group reached total_steps and its members' selection metrics are written."""
  directory = os.path.join(workdir, "checkpoints", group.name)
  if not os.path.isdir(directory):
    return False
  manager = checkpointing.training_manager(directory)
  try:
    finished = manager.latest_step() == group.config.total_steps
  finally:
    manager.close()
  return finished and all(os.path.exists(selection_path(workdir, m)) for m in group.members)


def run_group(group: Group, workdir: str, member_shards: int, stop_after: int | None,
              guard: train.PreemptionGuard, eval_examples: int) -> tuple[int, int]:
  """Trains (or resumes) one group to total_steps (or stop_after / a preemption) and evaluates its
  members once done; returns (the step it started from, the step it reached)."""
  total = group.config.total_steps
  if group_done(group, workdir):
    return total, total
  last_step = total if stop_after is None else min(stop_after, total)
  run = setup_group(group, workdir, member_shards)
  outputs = [MemberOutputs(workdir, m, group.config.keep_checkpoints) for m in group.members]
  try:
    step = train_group(run, outputs, last_step, guard)
    if step == total:
      results = evaluate_members(run.graphdef, run.state, group.config, run.mesh, eval_examples)
      if jax.process_index() == 0:
        write_selection(outputs, results)
  finally:
    run.manager.wait_until_finished()
    run.manager.close()
    for out in outputs:
      out.close()
  return run.start, step


# The ablation ------------------------------------------------------------------------------------

def _check_spec(workdir: str, config, groups: Sequence[Group], member_shards: int) -> None:
  """Writes DIR/ablation_spec.json, or checks that a rerun asks for the same ablation."""
  spec = {"config": json.loads(config.to_json()), "member_shards": member_shards,
          "groups": {g.name: [{"name": m.name, "overrides": [list(o) for o in m.overrides]}
                              for m in g.members] for g in groups}}
  path = os.path.join(workdir, "ablation_spec.json")
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    # As for a single run, where and how it runs may change (data_dir, mesh, logging, ...).
    changes = train.config_changes(saved["config"], config)
    if saved["groups"] != spec["groups"]:
      changes.append("the sweeps or seeds (members)")
    if saved["member_shards"] != member_shards:
      changes.append(f"member_shards: {saved['member_shards']} -> {member_shards}")
    if changes:
      raise ValueError(f"{workdir} holds another ablation ({path}; changed: {'; '.join(changes)}). "
                       "Use a new --workdir for a new ablation; nothing was changed in this one.")
    return
  if jax.process_index() == 0:
    with open(path, "w") as f:
      json.dump(spec, f, indent=1)


def run(config: ml_collections.ConfigDict, workdir: str,
        sweeps: Sequence[tuple[str, Sequence[str]]], seeds: int = 1, member_shards: int = 1,
        stop_after: int | None = None, eval_examples: int = 2048, alpha: float = 0.4,
        probe: ml_collections.ConfigDict | None = None) -> dict | None:
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
  from lejepa_jax import ablation_report  # pylint: disable=import-outside-toplevel
  groups = plan(config, sweeps, seeds)
  os.makedirs(workdir, exist_ok=True)
  _check_spec(workdir, config, groups, member_shards)
  log.info("%d members in %d program(s): %s", sum(len(g.members) for g in groups), len(groups),
           "; ".join(f"{g.name}: {len(g.members)}" for g in groups))
  guard, finished = train.PreemptionGuard(), 0
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


def evaluate_with_probe(workdir: str, members: Sequence[Member],
                        probe: ml_collections.ConfigDict) -> None:
  """The evaluation job (`lejepa_jax.evaluate`) on every kept checkpoint of each member, skipping
  those it has already evaluated with this probe config (a rerun continues where it stopped)."""
  for i, member in enumerate(members):
    member_dir = os.path.join(workdir, "members", member.name)
    record = evaluate.EvalRecord(member_dir, probe.name)
    for step in evaluate.checkpoint_steps(member_dir):
      if record.handled(step):
        continue
      log.info("member %d/%d (%s), step %d: evaluation job, probe config %s", i + 1,
               len(members), member.name, step, probe.name)
      evaluate.evaluate(member_dir, step, probe=probe)
      record = evaluate.EvalRecord(member_dir, probe.name)


def main(argv: list[str]) -> None:
  del argv
  # Join the other processes first (a no-op on one machine): run() checks process_index.
  distributed.initialize_if_multi_process()
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("lejepa_jax").setLevel(logging.INFO)
  report = run(_CONFIG.value, _WORKDIR.value, [parse_sweep(s) for s in _SWEEP.value], _SEEDS.value,
               _MEMBER_SHARDS.value, _STOP_AFTER.value, _EVAL_EXAMPLES.value, _ALPHA.value,
               _PROBE.value)
  if report is not None:
    print(report["table"])


if __name__ == "__main__":
  # Flags only when run as a program (the library import must not register --config twice).
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Base experiment config (configs/*.py), optionally with ':args'.",
      lock_config=True)
  flags.register_validator("config", lambda value: value is not None,
                           "--config is required: the base experiment config, e.g. "
                           "--config=configs/fashion_mnist_ablation.py")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Ablation directory; reruns resume.",
                                 required=True)
  _SWEEP = flags.DEFINE_multi_string("sweep", [], "key=v1,v2,... (repeatable; members are the "
                                     "product of the sweeps).")
  _SEEDS = flags.DEFINE_integer("seeds", 1, "Seeds per combination: config.seed + 0, 1, ...")
  _MEMBER_SHARDS = flags.DEFINE_integer("member_shards", 1, "Mesh axis sharding the members.")
  _STOP_AFTER = flags.DEFINE_integer("stop_after", None, "Leave (checkpointed) once a group has "
                                     "been advanced to this step; a rerun continues.")
  _EVAL_EXAMPLES = flags.DEFINE_integer("eval_examples", 2048, "Eval-split examples for RankMe "
                                        "and the online probe's accuracy in the report.")
  _ALPHA = flags.DEFINE_float("alpha", 0.4, "Report: Spearman also of loss * lambda^-alpha.")
  _PROBE = config_flags.DEFINE_config_file(
      "probe", None, "Probe config (configs/probe/*.py): evaluate every member with the evaluation "
      "job once trained (linear and kNN accuracy in the report).")
  app.run(main)
