"""The cloud launch scripts, by dry run (they print the commands they would run)."""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dry_run(script, *args, **env):
  result = subprocess.run(["bash", os.path.join(ROOT, "launch", script), "--dry-run", *args],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
                          check=True)
  return result.stdout.splitlines()


def test_multislice_up_waits_for_the_queued_resource_before_installing():
  lines = _dry_run("tpu_pod.sh", "up", BUCKET="bucket", NUM_SLICES="2",
                   ACCELERATOR_TYPE="v5p-16")
  position = lambda text: next(i for i, line in enumerate(lines) if text in line)  # noqa: E731
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
