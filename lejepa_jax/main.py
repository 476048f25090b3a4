"""Entry point of the pretraining job.

    python -m lejepa_jax.main --config=configs/<name>.py[:args] --workdir=DIR [--config.a.b=value ...]

Only flags live here; the work is done by `lejepa_jax.train.run`, importable and testable on its own.
"""

from __future__ import annotations

import logging
import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py), optionally with ':args'.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs; reruns resume.")
_STOP_AFTER = flags.DEFINE_integer(
    "stop_after", None, "Checkpoint and exit after this step (for time-limited allocations); "
    "the schedule still runs to config.total_steps and a rerun continues.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir's run even if the config differs from its "
    "checkpoint's in keys that change what is trained (otherwise an error listing them).")
flags.mark_flags_as_required(["config", "workdir"])


def _multi_process() -> bool:
  """True when launched as one of several processes (SLURM, TPU pod, or explicit coordinator)."""
  if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("LEJEPA_DISTRIBUTED") == "1":
    return True
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    return True
  return len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1


def _initialize_distributed() -> None:
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


def main(argv: list[str]) -> None:
  del argv
  if _multi_process():
    _initialize_distributed()
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
  # Libraries (orbax, grain, TFDS) log every detail through absl; keep the console to progress lines.
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  absl_logging.set_verbosity(absl_logging.WARNING)
  import jax  # pylint: disable=import-outside-toplevel
  # Progress lines from process 0 only; the other processes report warnings and errors.
  logging.getLogger("lejepa_jax").setLevel(logging.INFO if jax.process_index() == 0 else
                                           logging.WARNING)
  from lejepa_jax import train  # pylint: disable=import-outside-toplevel
  train.run(_CONFIG.value, _WORKDIR.value, stop_after=_STOP_AFTER.value,
            allow_config_change=_ALLOW_CONFIG_CHANGE.value)


if __name__ == "__main__":
  app.run(main)
