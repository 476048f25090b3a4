"""Multi-process start-up shared by the jobs (training, evaluation, ablations): each joins the
cluster the same way, and on one machine nothing happens."""

from __future__ import annotations

import os

import numpy as np


def multi_process() -> bool:
  """True when launched as one of several processes (SLURM, TPU pod, or explicit coordinator)."""
  if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("LEJEPA_DISTRIBUTED") == "1":
    return True
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    return True
  return len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1


def initialize() -> None:
  """`jax.distributed.initialize`, with JAX_NUM_PROCESSES / JAX_PROCESS_ID when set (launch/local.sh).

  JAX reads JAX_COORDINATOR_ADDRESS itself; whatever is unset is detected from the cluster (TPU VM
  metadata, SLURM, Open MPI). LEJEPA_DISTRIBUTED=1 asks for detection where no variable says
  multi-process (TPU VM pod workers).
  """
  import jax

  kwargs = {
    key: int(os.environ[var])
    for key, var in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID"))
    if os.environ.get(var)
  }
  if os.environ.get("JAX_PLATFORMS", "").split(",")[0] == "cpu":
    # Without a collectives backend, CPU devices of different processes cannot reduce together.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)


def initialize_if_multi_process() -> None:
  """Joins the other processes when there are any; call before anything else touches JAX."""
  if multi_process():
    initialize()


MAX_BROADCAST_STEPS = 4096


def broadcast_from_process_0(steps_: list[int], stop: bool) -> tuple[list[int], bool]:
  """Process 0's (checkpoint steps, stop decision) on every process (the evaluation job's agreement).

  The processes of a multi-process job evaluate together (restores and features are collective),
  so they must take the same steps in the same order and stop together, though each lists the
  directory at its own moment (rotation may delete a step in between) and keeps its own clock.
  """
  import jax

  if jax.process_count() == 1:
    return steps_, stop
  from jax.experimental import multihost_utils

  message = np.full(MAX_BROADCAST_STEPS + 1, -1, np.int64)
  message[0] = int(stop)
  kept = sorted(steps_)[-MAX_BROADCAST_STEPS:]
  message[1 : 1 + len(kept)] = kept
  message = np.asarray(multihost_utils.broadcast_one_to_all(message))
  return [int(s) for s in message[1:] if s >= 0], bool(message[0])
