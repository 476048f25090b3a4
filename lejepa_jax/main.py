"""Entry point of the pretraining job.

    python -m lejepa_jax.main --config=configs/<name>.py[:args] --workdir=DIR [--config.a.b=value ...]

Only flags live here; the work is done by `lejepa_jax.training.loop.run`, importable and testable
on its own.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from lejepa_jax import cli

_PROG = "python -m lejepa_jax.main"
_FLAGS = flags.FlagValues()
_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Experiment config file (configs/*.py), optionally with ':args'.",
  flag_values=_FLAGS,
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Directory for checkpoints and logs; reruns resume.", flag_values=_FLAGS
)
_STOP_AFTER = flags.DEFINE_integer(
  "stop_after",
  None,
  "Checkpoint and exit after this step (for time-limited allocations); "
  "the schedule still runs to config.total_steps and a rerun continues.",
  flag_values=_FLAGS,
)
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
  "allow_config_change",
  False,
  "Resume a workdir's run even if the config differs from its "
  "checkpoint's in keys that change what is trained (otherwise an error listing them).",
  flag_values=_FLAGS,
)


def main(argv: list[str] | None = None) -> None:
  cli.parse(_FLAGS, argv, prog=_PROG, doc=__doc__, required=("config", "workdir"))
  from lejepa_jax.scale import distributed

  distributed.initialize_if_multi_process()
  cli.setup_logging()
  from lejepa_jax.training import loop

  loop.run(
    _CONFIG.value,
    _WORKDIR.value,
    stop_after=_STOP_AFTER.value,
    allow_config_change=_ALLOW_CONFIG_CHANGE.value,
  )


if __name__ == "__main__":
  main()
