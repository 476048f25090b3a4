"""Multi-process start-up shared by the jobs (training, evaluation, ablations): each joins the
cluster the same way, and on one machine nothing happens."""

from __future__ import annotations

import os


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
  import jax  # pylint: disable=import-outside-toplevel
  kwargs = {key: int(os.environ[var]) for key, var in (("num_processes", "JAX_NUM_PROCESSES"),
                                                       ("process_id", "JAX_PROCESS_ID"))
            if os.environ.get(var)}
  if os.environ.get("JAX_PLATFORMS", "").split(",")[0] == "cpu":
    # Without a collectives backend, CPU devices of different processes cannot reduce together.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)


def initialize_if_multi_process() -> None:
  """Joins the other processes when there are any; call before anything else touches JAX."""
  if multi_process():
    initialize()
