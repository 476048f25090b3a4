r"""Entry point of the evaluation job: frozen-feature probes on a training run's checkpoints.

    python -m lejepa_jax.evaluate --config=configs/probe/default.py --workdir=<training workdir> \
        [--step=N | --follow] [--config.evaluators=linear,knn,...]

Only flags live here; the job is `lejepa_jax.evaluation.job.run` (what it does: its docstring).
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from lejepa_jax import cli

_PROG = "python -m lejepa_jax.evaluate"
_FLAGS = flags.FlagValues()
_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Probe config (configs/probe/*.py); the defaults when omitted.",
  flag_values=_FLAGS,
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir.", flag_values=_FLAGS)
_STEP = flags.DEFINE_integer(
  "step", None, "Evaluate this checkpoint step (default: latest).", flag_values=_FLAGS
)
_FOLLOW = flags.DEFINE_boolean(
  "follow",
  False,
  "Evaluate every new checkpoint while training runs, each once (restart-safe).",
  flag_values=_FLAGS,
)


def main(argv: list[str] | None = None) -> None:
  cli.parse(_FLAGS, argv, prog=_PROG, doc=__doc__, required=("workdir",))
  from lejepa_jax.scale import distributed

  distributed.initialize_if_multi_process()  # joins the cluster as training does
  cli.setup_logging()
  import jax

  from lejepa_jax.evaluation import eval_records, job, restore

  probe = _CONFIG.value if _CONFIG.value is not None else job.default_probe()
  try:
    rows = job.run(_WORKDIR.value, probe, _STEP.value, _FOLLOW.value)
  except (FileNotFoundError, restore.CheckpointError, ValueError) as e:
    raise SystemExit(f"error: {e}") from None
  if jax.process_index() == 0:
    print(eval_records.format_table(rows))


if __name__ == "__main__":
  main()
