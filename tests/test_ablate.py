"""Batched ablations on 8 simulated devices: members equal separate runs, checkpoints load in the
evaluation job, shape-changing sweeps become separate programs, the selection report; per-member
convolutions equal vmapped ones."""

import json
import os

import helpers
import jax
import ml_collections
import numpy as np
import pytest
import scipy.stats

from lejepa_jax import config_lib
from lejepa_jax.ablation import group_loop, sweep_plan
from lejepa_jax.ablation import report as ablation_report
from lejepa_jax.evaluation import extraction, restore
from lejepa_jax.evaluation import job as evaluation_job
from lejepa_jax.training import checkpointing, loop

STEPS = 3
# 8 members: 2 programs (num_slices changes shapes) of 4 members (lambda x lr, traced).
SWEEPS = [
  ("loss.num_slices", ["16", "32"]),
  ("loss.sigreg_weight", ["0.0", "0.5"]),
  ("optim.lr", ["1e-3", "1e-2"]),
  ("optim.weight_decay", ["0.3"]),
]


def tiny_config(data_dir: str) -> ml_collections.ConfigDict:
  config = helpers.tiny_config(data_dir, STEPS)
  config.checkpoint_every = 2
  return config


@pytest.fixture(scope="module")
def ablation(devices, data_dir, tmp_path_factory):
  """The sweep trained with the members sharded 2 ways (member 2 x data 2 x fsdp 2). The first call
  leaves after step 2 of the first program, the second resumes it and trains the second program, as
  a rerun of the same command would."""
  workdir = str(tmp_path_factory.mktemp("ablation"))
  config = tiny_config(data_dir)
  config.mesh.axes = dict(data=-1, fsdp=2)
  assert group_loop.run(config, workdir, SWEEPS, member_shards=2, stop_after=2) is None
  report = group_loop.run(config, workdir, SWEEPS, member_shards=2, eval_examples=32)
  return workdir, report


_metrics = helpers.read_metrics


def _state(workdir, step):
  manager = checkpointing.training_manager(os.path.join(workdir, "checkpoints"))
  try:
    return checkpointing.restore_state_only(manager, step)
  finally:
    manager.close()


def _flat(tree):
  return {
    jax.tree_util.keystr(path): np.asarray(leaf, np.float64)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def _assert_states_close(got, want):
  """Every saved array equal to float32 tolerance, except entries whose gradient is zero in exact
  arithmetic (biases feeding a BatchNorm, attention's key bias): any two programs round their
  ~1e-10 gradients differently and Adam scales that noise into full-size steps. Adam's second
  moment tells them apart (below 1e-14 there, above 1e-9 for real gradients). The running means
  of the BatchNorms after those biases inherit their differences (up to 2e-4 on means of 1e-2)."""
  got, want = _flat(got), _flat(want)
  nu = _state_part(want, "['1']['opt_state']['0']['nu']")
  assert sorted(got) == sorted(want)
  for path, y in want.items():
    sub = next((p for p in nu if path.endswith(p)), None)  # the parameter this leaf belongs to
    real = sub is not None and nu[sub].shape == y.shape
    mask = nu[sub] > 1e-14 if real else np.ones_like(y, bool)
    scale = np.max(np.abs(y[mask]), initial=0.0) * (2e-2 if path.endswith("['mean']") else 1e-3)
    np.testing.assert_allclose(got[path][mask], y[mask], rtol=1e-3, atol=scale + 1e-12, err_msg=path)


def _state_part(flat, prefix):
  return {path[len(prefix) :]: leaf for path, leaf in flat.items() if path.startswith(prefix)}


def test_plan_groups_shape_changing_values_into_separate_programs(data_dir):
  groups = sweep_plan.plan_sweep(tiny_config(data_dir), SWEEPS)
  assert [g.name for g in groups] == ["num_slices=16", "num_slices=32"]
  assert [len(g.members) for g in groups] == [4, 4]
  for group, slices in zip(groups, (16, 32)):
    assert group.config.loss.num_slices == slices
    assert {m.config.loss.num_slices for m in group.members} == {slices}
  member = groups[1].members[3]
  assert member.name == "num_slices=32,sigreg_weight=0.5,lr=1e-2"
  assert member.hparams() == {"sigreg_weight": 0.5, "lr": 1e-2, "weight_decay": 0.3, "seed": 0}
  seeded = sweep_plan.plan_sweep(tiny_config(data_dir), [("loss.sigreg_weight", ["0.1"])], seeds=3)
  assert len(seeded) == 1 and [m.name for m in seeded[0].members] == ["seed=0", "seed=1", "seed=2"]
  with pytest.raises(ValueError, match="does not have"):
    sweep_plan.plan_sweep(tiny_config(data_dir), [("loss.no_such_key", ["1"])])
  # Lambda is traced in the members' step: out of [0, 1] (convex combination) it fails here.
  with pytest.raises(ValueError, match="sigreg_weight.*1.5"):
    sweep_plan.plan_sweep(tiny_config(data_dir), [("loss.sigreg_weight", ["0.1", "1.5"])])


@pytest.mark.slow
def test_members_equal_separately_trained_runs_step_for_step(ablation, data_dir, tmp_path):
  workdir, _ = ablation
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["num_slices=16", "num_slices=32"]
  for name in (
    "num_slices=16,sigreg_weight=0.0,lr=1e-3",
    "num_slices=16,sigreg_weight=0.5,lr=1e-3",
    "num_slices=32,sigreg_weight=0.5,lr=1e-2",
  ):
    member_dir = os.path.join(workdir, "members", name)
    manager = checkpointing.training_manager(os.path.join(member_dir, "checkpoints"))
    config = ml_collections.ConfigDict(checkpointing.restore_config(manager, STEPS))
    manager.close()
    alone = str(tmp_path / name)
    loop.run(config, alone)
    a, b = _metrics(member_dir), _metrics(alone)
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    for step in a:
      for key in ("loss", "pred", "sigreg", "probe_loss", "grad_norm", "lr"):
        np.testing.assert_allclose(a[step][key], b[step][key], rtol=2e-4, err_msg=f"{name} {key}")
    # The members' training clock runs forward in every line; in the group the fixture resumed after
    # step 2 it continues from step 2's reading (step 3's line adds exactly its own step time).
    seconds = [a[step]["train_seconds"] for step in sorted(a)]
    assert all(0 < s < t for s, t in zip(seconds, seconds[1:])), seconds
    if name.startswith("num_slices=16"):
      continued = a[3]["train_seconds"] - a[3]["step_time_s"]
      assert continued == pytest.approx(a[2]["train_seconds"], abs=0.05), (name, a[2], a[3])
    _assert_states_close(_state(member_dir, STEPS), _state(alone, STEPS))


@pytest.mark.slow
def test_a_member_checkpoint_loads_into_the_evaluation_job(ablation):
  workdir, _ = ablation
  member_dir = os.path.join(workdir, "members", "num_slices=32,sigreg_weight=0.5,lr=1e-3")
  encoder, config, step = restore.restore_encoder(member_dir)
  assert step == STEPS and config.optim.lr == 1e-3 and config.loss.num_slices == 32
  probe = config_lib.probe_config()
  probe.evaluators, probe.linear = "linear,label_free", dict(probe.linear, epochs=2)
  results = evaluation_job.evaluate(member_dir, probe=probe)
  features, _, _ = extraction.extract_features(encoder, config, config.data.eval_split)
  selection = json.load(open(os.path.join(member_dir, "selection.json")))
  # The ablation's label-free metrics (vmapped forward of the stacked state) match the job's.
  for key in ("rankme_features", "rankme_projections", "sigreg"):
    assert results["label_free"][key] == pytest.approx(selection[key], rel=1e-3), key
  assert features.shape[0] == selection["eval_examples"] == 32
  assert 0.0 <= results["linear"]["top1"] <= 1.0


@pytest.mark.slow
def test_report_has_every_member_and_rerunning_picks_up_the_linear_probe(ablation, data_dir):
  workdir, report = ablation
  assert len(report["members"]) == 8
  for row in report["members"]:
    assert np.isfinite(row["loss"]) and 1.0 <= row["rankme_features"] <= 32
    assert np.isfinite(row["sigreg_eval"]) and row["sigreg_eval"] > 0
    assert row["final_step"] == STEPS
  assert os.path.getsize(os.path.join(workdir, "ablation.png")) > 0
  assert json.load(open(os.path.join(workdir, "ablation.json")))["alpha"] == 0.4
  assert "online_eval_acc" in report["spearman"]
  config = tiny_config(data_dir)
  config.mesh.axes = dict(data=-1, fsdp=2)
  config.log_every = 5  # how a run logs may change on a rerun, as for a single run
  # Finished: a rerun only rewrites the report, now with the linear probe of the member evaluated
  # by the previous test when it ran (the others have none, so that accuracy is not correlated).
  again = group_loop.run(config, workdir, SWEEPS, member_shards=2)
  assert [r["loss"] for r in again["members"]] == [r["loss"] for r in report["members"]]
  for row in again["members"]:
    linear = os.path.join(workdir, "members", row["name"], "eval", "linear.jsonl")
    want = json.loads(open(linear).readlines()[-1])["top1"] if os.path.exists(linear) else None
    assert row["linear_top1"] == want
  assert "linear_top1" not in again["spearman"]  # not every member has one
  with pytest.raises(ValueError, match="another ablation.*members"):
    group_loop.run(config, workdir, SWEEPS[:2], member_shards=2)
  config.loss.t_max = 2.5
  with pytest.raises(ValueError, match=r"another ablation.*loss\.t_max"):
    group_loop.run(config, workdir, SWEEPS, member_shards=2)


def test_spearman_matches_scipy_with_ties():
  rng = np.random.default_rng(0)
  for n in (3, 5, 12):
    x, y = rng.normal(size=n), rng.integers(0, 3, n).astype(float)
    y[:2] = 0.0, 3.0  # not constant; with n > 4 values, ties are certain
    assert ablation_report.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0])
  assert ablation_report.spearman([1, 2, 3, 4], [8, 6, 4, 2]) == pytest.approx(-1.0)
  assert np.isnan(ablation_report.spearman([1, 2], [3, 4]))


@pytest.mark.slow
@pytest.mark.parametrize("input_batched", [True, False])
def test_per_member_convolutions_equal_vmapped_ones_without_grouping(input_batched):
  from lejepa_jax.models import layers, members

  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 2, 6, 6, 5) if input_batched else (2, 6, 6, 5)).astype(np.float32)
  w = rng.normal(size=(3, 3, 3, 5, 7)).astype(np.float32)  # 3 members' kernels
  dn = ("NHWC", "HWIO", "NHWC")

  def grads():  # a fresh function per trace: jit caches by function
    def loss(x, w):
      return jax.numpy.sum(
        jax.numpy.sin(layers.conv_general_dilated(x, w, (2, 1), "SAME", dimension_numbers=dn))
      )

    in_axes = (0 if input_batched else None, 0)
    return jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=in_axes))

  batched = grads()
  want = batched(x, w)  # jax's batching rule: grouped convolutions (slow on the CPU)
  assert not input_batched or "feature_group_count = 3" in batched.lower(x, w).as_text()
  with members.member_convolutions("per_member"):
    per_member = grads()
    got = per_member(x, w)
    hlo = per_member.lower(x, w).as_text()
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  assert "feature_group_count = 3" not in hlo and "feature_group_count = 1" in hlo
  with members.member_convolutions("grouped"):
    grouped_hlo = grads().lower(x, w).as_text()
  assert not input_batched or "feature_group_count = 3" in grouped_hlo


def test_member_convolution_strategy_is_chosen_by_backend_or_setting():
  from lejepa_jax.models import members

  assert members.strategy("auto", "cpu") == "per_member"
  assert members.strategy("auto", "tpu") == members.strategy("auto", "gpu") == "grouped"
  assert members.strategy("grouped", "cpu") == "grouped"
  with pytest.raises(ValueError, match="member_convolutions"):
    members.strategy("separate", "cpu")


@pytest.mark.slow
def test_a_probe_config_evaluates_every_member_once_and_the_report_correlates_its_accuracy(
  ablation, data_dir
):
  workdir, _ = ablation
  config = tiny_config(data_dir)
  config.mesh.axes = dict(data=-1, fsdp=2)
  probe = config_lib.probe_config()
  probe.name, probe.evaluators, probe.baselines = "sweep", "linear,knn", ""
  probe.linear = dict(probe.linear, epochs=2)
  probe.train_examples = probe.eval_examples = 64
  report = group_loop.run(config, workdir, SWEEPS, member_shards=2, probe=probe)
  for row in report["members"]:
    for evaluator in ("linear", "knn"):
      path = os.path.join(workdir, "members", row["name"], "eval", f"{evaluator}.jsonl")
      rows = [json.loads(line) for line in open(path)]
      sweep_rows = [r for r in rows if r["probe_config"] == "sweep"]
      assert [r["step"] for r in sweep_rows] == [2, STEPS]  # every kept checkpoint, once
      assert row[f"{evaluator}_top1"] == sweep_rows[-1]["top1"]
  for accuracy in ("linear_top1", "knn_top1"):
    loss = [r["loss"] for r in report["members"]]
    want = scipy.stats.spearmanr(loss, [r[accuracy] for r in report["members"]])[0]
    got = report["spearman"][accuracy]["loss, all members"]["spearman"]
    assert got == pytest.approx(want, nan_ok=True)
  # The relation at each evaluated step: the loss up to that step against that step's accuracy.
  assert sorted(report["spearman_by_step"]) == ["2", "3"]
  for subset, value in report["spearman"]["linear_top1"].items():  # the final step is the end
    assert report["spearman_by_step"]["3"][subset]["spearman"] == pytest.approx(
      value["spearman"], nan_ok=True
    )
  at_2 = [
    json.loads(line)
    for line in open(
      os.path.join(workdir, "members", report["members"][0]["name"], "eval", "linear.jsonl")
    )
  ]
  assert any(r["step"] == 2 for r in at_2)
  assert os.path.getsize(os.path.join(workdir, "ablation_curves.png")) > 0
  group_loop.run(config, workdir, SWEEPS, member_shards=2, probe=probe)  # done: nothing evaluated again
  knn = os.path.join(workdir, "members", report["members"][0]["name"], "eval", "knn.jsonl")
  assert sum(json.loads(line)["probe_config"] == "sweep" for line in open(knn)) == 2
