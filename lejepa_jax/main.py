"""Entry point of the pretraining job.

    python -m lejepa_jax.main --config=configs/<name>.py[:args] --workdir=DIR [--config.a.b=value ...]

Only flags live here; the work is done by `lejepa_jax.train.run`, importable and testable on its own.
"""

from __future__ import annotations

import logging

from absl import app, flags
from ml_collections import config_flags

from lejepa_jax import distributed

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


def main(argv: list[str]) -> None:
  del argv
  distributed.initialize_if_multi_process()
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
