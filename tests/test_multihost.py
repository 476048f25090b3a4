"""Multi-process training on one machine: 2 processes x 4 simulated CPU devices, started by
launch/local.sh (jax.distributed on 127.0.0.1, gloo collectives), against 1 process x 8 devices;
hybrid (ICI x DCN) device meshes."""

import dataclasses
import json
import os
import signal
import subprocess
import time

import jax
import numpy as np
import pytest
from flax import nnx
from helpers import ROOT, start_training, tiny_config, xla_flags
from helpers import read_metrics as _metrics

from lejepa_jax import config_lib
from lejepa_jax.evaluation import job as evaluation_job
from lejepa_jax.scale import sharding
from lejepa_jax.training import checkpointing, loop, train_state

STEPS = ("--config.total_steps=4", "--config.checkpoint_every=2")


def _start_local_processes(
  data_dir, workdir, log_dir, *flags, module="lejepa_jax.main", devices_per_process=4
):
  """launch/local.sh, started: 2 processes of `devices_per_process` devices each form one mesh
  (with 4: 8 devices, tiny_config's data 4 x fsdp 2), process i writing to log_dir/process_i.log."""
  env = dict(os.environ, NUM_PROCESSES="2", LOG_DIR=log_dir, MODULE=module)
  env["DEVICES_PER_PROCESS"] = str(devices_per_process)
  env["XLA_FLAGS"] = xla_flags()
  config = [] if module == "lejepa_jax.evaluate" else [f"--config=tests/tiny_config.py:{data_dir}"]
  return subprocess.Popen(
    [os.path.join(ROOT, "launch", "local.sh"), *config, f"--workdir={workdir}", *flags],
    cwd=ROOT,
    env=env,
  )


def _logs(log_dir) -> str:
  paths = [os.path.join(log_dir, f"process_{i}.log") for i in range(2)]
  return "".join(open(p).read() for p in paths if os.path.exists(p))


def _local_processes(data_dir, workdir, log_dir, *flags, **options):
  """launch/local.sh run to the end (see _start_local_processes); fails the test unless all exit 0."""
  process = _start_local_processes(data_dir, workdir, log_dir, *flags, **options)
  assert process.wait(timeout=600) == 0, _logs(log_dir)


def _pid(workdir: str, process_id: int) -> int:
  """The pid of process `process_id` of the job local.sh started for `workdir`."""
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read()
      with open(f"/proc/{pid}/environ", "rb") as f:
        environ = f.read().split(b"\0")
    except OSError:
      continue
    if (
      f"--workdir={workdir}".encode() in cmdline
      and b"python" in cmdline
      and f"JAX_PROCESS_ID={process_id}".encode() in environ
    ):
      return int(pid)
  raise AssertionError(f"no process {process_id} for {workdir}")


def _wait_for(log_dir: str, text: str, process: subprocess.Popen, timeout: float = 300) -> None:
  deadline = time.monotonic() + timeout
  while text not in _logs(log_dir):
    assert process.poll() is None, f"the job ended before {text!r}:\n{_logs(log_dir)}"
    assert time.monotonic() < deadline, _logs(log_dir)
    time.sleep(0.2)


def _state(workdir, step, like=None):
  """A checkpoint's train state; with `like` (a tree of arrays), read onto one device as `like`
  says, whichever processes wrote it."""
  manager = checkpointing.training_manager(os.path.join(workdir, "checkpoints"))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = (
    None
    if like is None
    else jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), like)
  )
  restored = checkpointing.restore_state_only(manager, step, target)
  manager.close()
  return restored


# Variables that float32 rounding, not the data, decides. Biases added before a linear map and the
# projector's BatchNorm have a zero gradient in exact arithmetic (BatchNorm subtracts any constant
# shift); their float32 gradient is rounding noise that depends on the all-reduce order, Adam scales
# noise up to lr-sized steps, and the BatchNorm running means track those biases. They are left out.
# (Attention key biases are softmax-invariant too; their noise stays below 1e-6 in these few steps.)
_NOISE_DRIVEN = ("['backbone']['norm']['bias']", "['projector']['linears']", "['projector']['norms']")


def _noise_driven(name: str) -> bool:
  return name.endswith(("['bias']", "['mean']")) and any(part in name for part in _NOISE_DRIVEN)


def _assert_states_close(workdir_a, workdir_b, step):
  a = _state(workdir_a, step)
  b = _state(workdir_b, step, like=a)
  compared = 0
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b), strict=True):
    name = jax.tree_util.keystr(path)
    if _noise_driven(name):
      continue
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-5, atol=1e-6, err_msg=name)
    compared += 1
  assert compared > 50


@pytest.mark.slow
def test_two_processes_equal_one_and_the_checkpoint_resumes_on_one(devices, data_dir, tmp_path):
  single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
  config = tiny_config(data_dir, 4)
  config.checkpoint_every = 2
  loop.run(config, single)  # 1 process x 8 devices, this process
  # The processes are the mesh's DCN granules: data = 2 per process x 2 processes, fsdp = 2.
  _local_processes(
    data_dir,
    multi,
    str(tmp_path / "logs"),
    *STEPS,
    "--stop_after=2",
    "--config.mesh.axes.data=2",
    "--config.mesh.dcn_axes.data=2",
  )
  # One checkpoint, written collectively: one state, one iterator state per process.
  step_dir = os.path.join(multi, "checkpoints", "2")
  assert os.listdir(os.path.join(multi, "checkpoints")) == ["2"]
  assert sorted(os.listdir(os.path.join(step_dir, "data"))) == [
    "commit_success.txt",
    "process_0-of-2.json",
    "process_1-of-2.json",
  ]
  data_states = [
    json.load(open(os.path.join(step_dir, "data", f"process_{i}-of-2.json"))) for i in range(2)
  ]
  assert data_states == [{"next_index": 8}] * 2  # each host read 2 batches of 4 of its examples
  _assert_states_close(single, multi, 2)
  loop.run(config, multi)  # 1 process x 8 devices (this one) continues the 2-process run
  a, b = _metrics(single), _metrics(multi)
  logged = [json.loads(line)["step"] for line in open(os.path.join(multi, "metrics.jsonl"))]
  assert logged == [1, 2, 3, 4] and sorted(a) == logged  # continued from step 2, no step redone
  for step in a:
    for key in ("loss", "pred", "sigreg", "probe_loss", "grad_norm"):
      # Equal up to float32 rounding: gloo and the in-process all-reduce sum in different orders.
      np.testing.assert_allclose(b[step][key], a[step][key], rtol=1e-5, err_msg=f"{step} {key}")
  _assert_states_close(single, multi, 4)
  # The evaluation job joins the processes too: both take the same checkpoints, process 0 writes.
  _local_processes(
    data_dir,
    multi,
    str(tmp_path / "eval_logs"),
    "--follow",
    "--config=configs/probe/default.py",
    "--config.evaluators=knn",
    "--config.poll_seconds=1",
    module="lejepa_jax.evaluate",
  )
  rows = [json.loads(line) for line in open(os.path.join(multi, "eval", "knn.jsonl"))]
  assert [row["step"] for row in rows] == [2, 4]
  alone = evaluation_job.evaluate(single, step=4, probe=_knn_probe())  # one process, same weights
  assert abs(rows[-1]["top1"] - alone["knn"]["top1"]) < 0.05, (rows[-1], alone)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_every_process_at_one_step_and_the_rerun_ends_as_if_uninterrupted(
  devices, data_dir, tmp_path
):
  # One device per process (a data-parallel mesh of 2): what is tested is how the processes agree
  # to stop, and a 2-process step of the 8-device mesh takes 0.7 s here (gloo collectives between
  # 8 ranks) against 0.1 s. 40 steps: the notice after step 3 is seen at the next step boundary,
  # seconds before the end. The straight run is one process with both devices (the same mesh; a
  # sum of two terms does not depend on the order the all-reduce adds them in): the rerun must end
  # bit for bit as it does, whichever processes trained it. One process costs 12 CPU-seconds here,
  # two 30.
  flags = (
    "--config.total_steps=40",
    "--config.checkpoint_every=100",
    "--config.log_every=1",
    "--config.mesh.axes.data=2",
    "--config.mesh.axes.fsdp=1",
  )
  one_device = dict(devices_per_process=1)
  straight, stopped = str(tmp_path / "straight"), str(tmp_path / "stopped")
  start_training(data_dir, straight, *flags, devices=2)
  logs = str(tmp_path / "stopped_logs")
  job = _start_local_processes(data_dir, stopped, logs, *flags, **one_device)
  _wait_for(logs, "step 3/40", job)
  os.kill(_pid(stopped, 1), signal.SIGTERM)  # a notice to one process only
  assert job.wait(timeout=300) == 0, _logs(logs)  # every process left with status 0
  (saved,) = [int(s) for s in os.listdir(os.path.join(stopped, "checkpoints"))]
  assert 3 <= saved < 40
  for i in range(2):
    log = open(os.path.join(logs, f"process_{i}.log")).read()
    assert f"preemption notice: every process saves step {saved}" in log, log
  # The evaluation job, following the unfinished run, stops the same way (both processes, status 0).
  eval_logs = str(tmp_path / "eval_logs")
  job = _start_local_processes(
    data_dir,
    stopped,
    eval_logs,
    "--follow",
    "--config=configs/probe/default.py",
    "--config.evaluators=knn",
    "--config.poll_seconds=1",
    module="lejepa_jax.evaluate",
    **one_device,
  )
  _wait_for(eval_logs, f"checkpoint step {saved}: knn", job)
  os.kill(_pid(stopped, 1), signal.SIGTERM)
  assert job.wait(timeout=300) == 0, _logs(eval_logs)
  assert _logs(eval_logs).count("stopped by a preemption notice") == 2, _logs(eval_logs)
  # An ablation too: both processes save the group's step and leave with status 0.
  ablation_logs = str(tmp_path / "ablation_logs")
  job = _start_local_processes(
    data_dir,
    str(tmp_path / "ablation"),
    ablation_logs,
    *flags,
    "--sweep=loss.sigreg_weight=0.0,0.5",
    module="lejepa_jax.ablate",
    **one_device,
  )
  _wait_for(ablation_logs, "step 3/40", job)
  os.kill(_pid(str(tmp_path / "ablation"), 1), signal.SIGTERM)
  assert job.wait(timeout=300) == 0, _logs(ablation_logs)
  assert _logs(ablation_logs).count("preemption notice: every process saves step") == 2
  _local_processes(data_dir, stopped, str(tmp_path / "rerun_logs"), *flags, **one_device)
  like = train_state.to_savable(
    nnx.to_pure_dict(nnx.state(train_state.build_train_objects(tiny_config(data_dir, 40))))
  )
  a, b = _state(straight, 40, like=like), _state(stopped, 40, like=like)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_a_member_sharded_ablation_on_two_processes_equals_one_process(devices, data_dir, tmp_path):
  from lejepa_jax.ablation import group_loop

  flags = (
    "--sweep=loss.sigreg_weight=0.1,0.2",
    "--member_shards=2",
    "--config.total_steps=2",
    "--config.log_every=1",
    "--config.mesh.axes.data=4",
    "--config.mesh.axes.fsdp=1",
  )
  multi = str(tmp_path / "multi")
  _local_processes(data_dir, multi, str(tmp_path / "logs"), *flags, module="lejepa_jax.ablate")
  config = tiny_config(data_dir, 2)
  config.log_every, config.mesh.axes = 1, dict(data=4, fsdp=1)
  single = str(tmp_path / "single")
  group_loop.run(config, single, [("loss.sigreg_weight", ["0.1", "0.2"])], member_shards=2)
  for member in ("sigreg_weight=0.1", "sigreg_weight=0.2"):
    a, b = (_metrics(os.path.join(run, "members", member)) for run in (single, multi))
    assert sorted(a) == sorted(b) == [1, 2]
    for step in a:
      np.testing.assert_allclose(b[step]["loss"], a[step]["loss"], rtol=1e-5, err_msg=member)


def _knn_probe():
  probe = config_lib.probe_config()
  probe.evaluators = "knn"
  return probe


@dataclasses.dataclass(frozen=True)
class _FakeDevice:
  """Enough of a device for the mesh layout: CPU-like, with a slice (CPU devices have none)."""

  id: int
  slice_index: int | None
  process_index: int = 0
  platform: str = "cpu"
  device_kind: str = "cpu"


@pytest.mark.parametrize(
  "dcn_axes, expected_shape, slice_axis", [({"data": 2}, (4, 2), 0), ({"fsdp": 2}, (2, 4), 1)]
)
def test_hybrid_mesh_puts_slices_side_by_side_along_the_dcn_axis(dcn_axes, expected_shape, slice_axis):
  devices = [_FakeDevice(i, slice_index=i % 2) for i in range(8)]  # interleaved: no plain reshape
  array = sharding.hybrid_device_array({"data": -1, "fsdp": 2}, dcn_axes, devices)
  assert array.shape == expected_shape
  slices = np.vectorize(lambda d: d.slice_index)(array)
  index = np.indices(expected_shape)[slice_axis]
  # The first half along the DCN axis is slice 0, the second half slice 1; the other axis and each
  # half's rows stay inside one slice, so only DCN-axis collectives cross the slow network.
  np.testing.assert_array_equal(slices, index // (expected_shape[slice_axis] // 2))
  assert sorted(d.id for d in array.flat) == list(range(8))


def test_hybrid_mesh_falls_back_to_processes_and_rejects_impossible_layouts(devices):
  by_process = [_FakeDevice(i, slice_index=None, process_index=i % 4) for i in range(8)]
  array = sharding.hybrid_device_array({"data": 1, "fsdp": 2}, {"data": 4}, by_process)
  np.testing.assert_array_equal(
    np.vectorize(lambda d: d.process_index)(array), [[0, 0], [1, 1], [2, 2], [3, 3]]
  )
  with pytest.raises(ValueError, match="granules"):
    sharding.make_mesh({"data": -1}, dcn_axes={"data": 2})  # one process, no slices
  with pytest.raises(ValueError, match="lacks"):
    sharding.make_mesh({"data": -1}, dcn_axes={"fsdp": 2})
  assert sharding.make_mesh({"data": -1}, dcn_axes={"data": 1}).shape == {"data": 8}
