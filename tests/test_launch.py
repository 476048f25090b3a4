"""The launch scripts, by dry run (they print the commands they would run) and with stand-ins for
the programs they call (gcloud, srun, scontrol, the workers' python) that only record their
arguments: no cloud call, no job, no training."""

import os
import shlex
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Arguments that a careless launcher would take, split or expand: they must reach the trainer as is.
AWKWARD = ["--config.optim.lr=3e-4", "--dry-run", "up", "two words", "it's", "$HOME", "-x", "--", ""]

# Records its name, its argument count and its arguments, NUL-separated, in one write.
STAND_IN = """#!/usr/bin/env bash
printf '%s\\0' "$(basename "$0")" "$#" "$@" >> "$LAUNCH_RECORD"
"""


def _dry_run(script, *args, **env):
  result = subprocess.run(
    ["bash", os.path.join(ROOT, "launch", script), "--dry-run", *args],
    env={**os.environ, **env},
    capture_output=True,
    text=True,
    timeout=60,
    check=True,
  )
  return result.stdout.splitlines()


@pytest.fixture
def stand_ins(tmp_path):
  """An environment whose PATH starts with recording stand-ins, and the record they write."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name in ("gcloud", "srun", "sbatch", "scontrol", "python"):
    (bin_dir / name).write_text(STAND_IN)
    (bin_dir / name).chmod(0o755)
  record = tmp_path / "record"
  env = {
    **os.environ,
    "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    "LAUNCH_RECORD": str(record),
    "TMPDIR": str(tmp_path),
    "PYTHON": str(bin_dir / "python"),
    "SLURM_SUBMIT_DIR": str(tmp_path),
    "COORDINATOR_PORT": "12345",
  }
  for knob in (
    "BUCKET",
    "TPU_NAME",
    "ZONE",
    "ACCELERATOR_TYPE",
    "NUM_SLICES",
    "SPOT",
    "PROJECT",
    "CONFIG",
    "RUN_NAME",
    "WORKDIR",
    "DATA_DIR",
    "PER_NODE",
    "DRY_RUN",
    "SLURM_GPUS_ON_NODE",
    "MODULE",
    "NUM_PROCESSES",
    "LOG_DIR",
  ):
    env.pop(knob, None)  # the scripts' defaults, whatever this shell has set
  return env, record


def _calls(record):
  """The stand-ins' calls, in order: (program, [arguments])."""
  if not record.exists():
    return []
  fields = record.read_text().split("\0")[:-1]
  calls = []
  while fields:
    name, count = fields[0], int(fields[1])
    calls.append((name, fields[2 : 2 + count]))
    fields = fields[2 + count :]
  return calls


def _launch(script, env, *args):
  return subprocess.run(
    ["bash", os.path.join(ROOT, "launch", script), *args],
    env=env,
    capture_output=True,
    text=True,
    timeout=60,
    check=False,
    cwd=ROOT,
  )


def test_multislice_up_waits_for_the_queued_resource_before_installing():
  lines = _dry_run("tpu_pod.sh", "up", BUCKET="bucket", NUM_SLICES="2", ACCELERATOR_TYPE="v5p-16")
  position = lambda text: next(i for i, line in enumerate(lines) if text in line)
  create = position("queued-resources create")
  wait = position("queued-resources describe")
  install = position("--command=set -euo pipefail")
  train = position("lejepa_jax.main")
  assert create < wait < install < train, lines
  assert "--workdir=$HOME/gcs/lejepa/" in lines[train]  # the mounted bucket, not gs://


def test_single_slice_up_creates_a_tpu_vm_without_queueing():
  lines = _dry_run("tpu_pod.sh", "up", BUCKET="bucket", ACCELERATOR_TYPE="v4-8")
  assert any("tpu-vm create" in line for line in lines)
  assert not any("queued-resources" in line for line in lines)


@pytest.mark.parametrize(
  "args", [["--dry-run", "up"], ["up", "--dry-run"], ["up", "--dry-run", "--", "--config.optim.lr=3e-4"]]
)
def test_tpu_pod_dry_run_before_or_after_the_command_prints_and_calls_no_gcloud(stand_ins, args):
  env, record = stand_ins
  result = _launch("tpu_pod.sh", {**env, "BUCKET": "bucket"}, *args)
  assert result.returncode == 0, result.stderr
  assert "gcloud compute tpus tpu-vm create" in result.stdout
  assert "lejepa_jax.main" in result.stdout
  assert "--config.optim.lr=3e-4" in result.stdout or "--" not in args
  assert _calls(record) == []
  assert not any(name.startswith("lejepa_code") for name in os.listdir(env["TMPDIR"]))


@pytest.mark.parametrize(
  "args",
  [
    ["up", "--dryrun"],
    ["up", "-n"],
    ["bogus"],
    [],
    ["up", "train"],
    ["--dry-run"],
    ["train", "--config.optim.lr=3e-4"],  # trainer flags go after `--`
    ["logs", "--", "--config.optim.lr=3e-4"],  # logs starts no trainer
  ],
)
def test_tpu_pod_refuses_unknown_arguments_with_the_usage_and_runs_nothing(stand_ins, args):
  env, record = stand_ins
  result = _launch("tpu_pod.sh", {**env, "BUCKET": "bucket"}, *args)
  assert result.returncode != 0
  assert "Commands: create, install, train, up" in result.stderr  # the usage
  assert result.stdout == ""
  assert _calls(record) == []


def test_tpu_pod_passes_the_arguments_after_the_separator_to_the_trainer_unchanged(stand_ins, tmp_path):
  env, record = stand_ins
  result = _launch("tpu_pod.sh", {**env, "BUCKET": "bucket"}, "train", "--", *AWKWARD)
  assert result.returncode == 0, result.stderr
  [(program, args)] = _calls(record)  # `--dry-run` after `--` is the trainer's: gcloud ran
  assert program == "gcloud" and args[:4] == ["compute", "tpus", "tpu-vm", "ssh"], args
  [worker_command] = [arg[len("--command=") :] for arg in args if arg.startswith("--command=")]
  # Run what a worker would run, in a stand-in home whose venv python is a stand-in too.
  home = tmp_path / "home"
  (home / "lejepa_jax").mkdir(parents=True)
  (home / "lejepa_venv" / "bin").mkdir(parents=True)
  os.symlink(env["PYTHON"], home / "lejepa_venv" / "bin" / "python")
  record.unlink()
  subprocess.run(["bash", "-c", worker_command], env={**env, "HOME": str(home)}, timeout=60, check=True)
  deadline = time.monotonic() + 20
  while not _calls(record) and time.monotonic() < deadline:  # the trainer starts in the background
    time.sleep(0.05)
  [(program, args)] = _calls(record)
  assert args[:2] == ["-m", "lejepa_jax.main"], args
  assert args[-len(AWKWARD) :] == AWKWARD
  assert args[2 : -len(AWKWARD)] == [
    "--config=configs/vit_l.py",
    f"--workdir={home}/gcs/lejepa/vit_l",
    f"--config.data.data_dir={home}/gcs/tensorflow_datasets",
  ]


@pytest.mark.parametrize(
  "args",
  [
    ["--dry-run", "--config.optim.lr=3e-4"],
    ["--config.optim.lr=3e-4", "--dry-run"],
    ["--config.optim.lr=3e-4", "--dry-run", "--"],
  ],
)
def test_slurm_dry_run_anywhere_before_the_separator_prints_and_calls_no_srun(stand_ins, args):
  env, record = stand_ins
  result = _launch("slurm_gpu.sbatch", env, *args)
  assert result.returncode == 0, result.stderr
  [line] = result.stdout.splitlines()
  assert shlex.split(line) == [
    "srun",
    "--kill-on-bad-exit=1",
    "--ntasks-per-node=8",
    env["PYTHON"],
    "-m",
    "lejepa_jax.main",
    "--config=configs/vit_l.py",
    f"--workdir={env['SLURM_SUBMIT_DIR']}/workdirs/vit_l",
    "--config.optim.lr=3e-4",
  ]
  assert _calls(record) == []


def test_slurm_dry_run_by_the_environment_still_works(stand_ins):
  env, record = stand_ins
  result = _launch("slurm_gpu.sbatch", {**env, "DRY_RUN": "1"}, "--config.optim.lr=3e-4")
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("srun ") and "--config.optim.lr=3e-4" in result.stdout
  assert _calls(record) == []


@pytest.mark.parametrize(
  "args",
  [
    ["bogus"],
    ["--dryrun"],
    ["--dry_run=1"],
    ["-n", "--dry-run"],
    ["--workdir", "/tmp/run"],  # absl's space form: write =
    ["--dry-run", "--config-file=x"],
  ],
)
def test_slurm_refuses_unknown_arguments_with_the_usage_and_runs_nothing(stand_ins, args):
  env, record = stand_ins
  result = _launch("slurm_gpu.sbatch", env, *args)
  assert result.returncode != 0
  assert "Pretraining on a SLURM GPU cluster" in result.stderr  # the usage
  assert result.stdout == ""
  assert _calls(record) == []


def test_slurm_passes_flags_and_the_arguments_after_the_separator_to_srun_unchanged(stand_ins):
  env, record = stand_ins
  result = _launch("slurm_gpu.sbatch", env, "--config.optim.lr=1e-3", "--", *AWKWARD)
  assert result.returncode == 0, result.stderr
  [(program, args)] = _calls(record)
  assert program == "srun"
  assert args == [
    "--kill-on-bad-exit=1",
    "--ntasks-per-node=8",
    env["PYTHON"],
    "-m",
    "lejepa_jax.main",
    "--config=configs/vit_l.py",
    f"--workdir={env['SLURM_SUBMIT_DIR']}/workdirs/vit_l",
    "--config.optim.lr=1e-3",
    *AWKWARD,
  ]


def _local_commands(stdout):
  return [shlex.split(line) for line in stdout.splitlines()]


@pytest.mark.parametrize(
  "args",
  [
    ["--dry-run", "--config=c.py", "--workdir=/tmp/run"],
    ["--config=c.py", "--workdir=/tmp/run", "--dry-run"],
    ["--config=c.py", "--dry-run", "--", "--workdir=/tmp/run"],
  ],
)
def test_local_dry_run_anywhere_before_the_separator_prints_and_starts_nothing(stand_ins, args):
  env, record = stand_ins
  result = _launch("local.sh", env, *args)
  assert result.returncode == 0, result.stderr
  commands = _local_commands(result.stdout)
  assert len(commands) == 2  # NUM_PROCESSES=2
  for i, command in enumerate(commands):
    assert f"JAX_PROCESS_ID={i}" in command
    assert command[-5:] == [
      env["PYTHON"],
      "-m",
      "lejepa_jax.main",
      "--config=c.py",
      "--workdir=/tmp/run",
    ]
  assert _calls(record) == []


@pytest.mark.parametrize(
  "module, args",
  [  # README's and tests/test_multihost.py's command lines
    ("lejepa_jax.main", ["--config=configs/fashion_mnist.py:runlocal", "--workdir=/tmp/mp"]),
    (
      "lejepa_jax.evaluate",
      [
        "--config=configs/probe/default.py",
        "--workdir=/tmp/mp",
        "--follow",
        "--config.evaluators=knn",
        "--config.poll_seconds=1",
      ],
    ),
    (
      "lejepa_jax.main",
      [
        "--config=tests/tiny_config.py:/tmp/data",
        "--workdir=/tmp/mp",
        "--config.total_steps=4",
        "--stop_after=2",
        "--config.mesh.dcn_axes.data=2",
      ],
    ),
    ("lejepa_jax.ablate", ["--sweep=loss.sigreg_weight=0.1,0.2", "--member_shards=2"]),
  ],
)
def test_local_keeps_the_documented_command_lines(stand_ins, module, args):
  env, record = stand_ins
  result = _launch("local.sh", {**env, "MODULE": module}, *args, "--dry-run")
  assert result.returncode == 0, result.stderr
  for command in _local_commands(result.stdout):
    assert command[-len(args) - 2 :] == ["-m", module, *args]
  assert _calls(record) == []


@pytest.mark.parametrize(
  "args",
  [
    ["bogus"],
    ["--dryrun"],
    ["--workdir", "/tmp/run"],
    ["--config=c.py", "-v"],
    ["--dry-run", "--dry-run=0"],
  ],
)
def test_local_refuses_unknown_arguments_with_the_usage_and_runs_nothing(stand_ins, args):
  env, record = stand_ins
  env.pop("COORDINATOR_PORT")  # not even the port is picked (that runs python)
  result = _launch("local.sh", env, *args)
  assert result.returncode != 0
  assert "Runs the trainer (or another job) as several processes" in result.stderr  # the usage
  assert result.stdout == ""
  assert _calls(record) == []


def test_local_passes_flags_and_the_arguments_after_the_separator_to_each_process(stand_ins, tmp_path):
  env, record = stand_ins
  result = _launch(
    "local.sh", {**env, "LOG_DIR": str(tmp_path / "logs")}, "--config=c.py", "--", *AWKWARD
  )
  assert result.returncode == 0, result.stderr
  calls = _calls(record)
  assert len(calls) == 2  # the stand-in python, once per process
  for program, args in calls:
    assert program == "python"
    assert args == ["-m", "lejepa_jax.main", "--config=c.py", *AWKWARD]


@pytest.mark.parametrize("script", ["tpu_pod.sh", "slurm_gpu.sbatch", "local.sh"])
def test_help_prints_the_usage_and_runs_nothing(stand_ins, script):
  env, record = stand_ins
  result = _launch(script, env, "--help")
  assert result.returncode == 0, result.stderr
  assert "--dry-run" in result.stdout and result.stderr == ""
  assert _calls(record) == []
