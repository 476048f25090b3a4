r"""Entry point of batched ablations: the members of a hyperparameter sweep trained as one vmapped
program, then reported for label-free model selection.

    python -m lejepa_jax.ablate --config=configs/fashion_mnist.py --workdir=DIR \
        --sweep=loss.sigreg_weight=0.0,0.01,0.02,0.05,0.1,0.2 [--sweep=optim.lr=1e-3,2e-3] \
        [--seeds=3] [--member_shards=K] [--probe=configs/probe/fashion_mnist.py:sweep]

Only flags live here; the ablation is `lejepa_jax.ablation.group_loop.run` (members, groups, the
layout of DIR and resuming: its module docstring).
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from lejepa_jax import cli

_PROG = "python -m lejepa_jax.ablate"
_FLAGS = flags.FlagValues()
_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Base experiment config (configs/*.py), optionally with ':args'.",
  flag_values=_FLAGS,
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Ablation directory; reruns resume.", flag_values=_FLAGS)
_SWEEP = flags.DEFINE_multi_string(
  "sweep", [], "key=v1,v2,... (repeatable; members are the product of the sweeps).", flag_values=_FLAGS
)
_SEEDS = flags.DEFINE_integer(
  "seeds", 1, "Seeds per combination: config.seed + 0, 1, ...", flag_values=_FLAGS
)
_MEMBER_SHARDS = flags.DEFINE_integer(
  "member_shards", 1, "Mesh axis sharding the members.", flag_values=_FLAGS
)
_STOP_AFTER = flags.DEFINE_integer(
  "stop_after",
  None,
  "Leave (checkpointed) once a group has been advanced to this step; a rerun continues.",
  flag_values=_FLAGS,
)
_EVAL_EXAMPLES = flags.DEFINE_integer(
  "eval_examples",
  2048,
  "Eval-split examples for RankMe and the online probe's accuracy in the report.",
  flag_values=_FLAGS,
)
_ALPHA = flags.DEFINE_float(
  "alpha", 0.4, "Report: Spearman also of loss * lambda^-alpha.", flag_values=_FLAGS
)
_PROBE = config_flags.DEFINE_config_file(
  "probe",
  None,
  "Probe config (configs/probe/*.py): evaluate every member with the evaluation "
  "job once trained (linear and kNN accuracy in the report).",
  flag_values=_FLAGS,
)


def main(argv: list[str] | None = None) -> None:
  cli.parse(_FLAGS, argv, prog=_PROG, doc=__doc__, required=("config", "workdir"))
  from lejepa_jax.scale import distributed

  # Join the other processes first (a no-op on one machine): run() checks process_index.
  distributed.initialize_if_multi_process()
  cli.setup_logging(all_processes=True)
  from lejepa_jax.ablation import group_loop, sweep_plan

  sweeps = [sweep_plan.parse_sweep(s) for s in _SWEEP.value]
  report = group_loop.run(
    _CONFIG.value,
    _WORKDIR.value,
    sweeps,
    _SEEDS.value,
    _MEMBER_SHARDS.value,
    _STOP_AFTER.value,
    _EVAL_EXAMPLES.value,
    _ALPHA.value,
    _PROBE.value,
  )
  if report is not None:
    print(report["table"])


if __name__ == "__main__":
  main()
