r"""Export a trained encoder from a training run's checkpoint (the latest, or --step).

    python -m lejepa_jax.export --workdir=<training workdir> --out=exported/vit_s16 [--step=N] \
        [--with_projector] [--safetensors] [--timm]

The directory it writes, and `load_encoder` that reads it back: lejepa_jax/export/encoder_files.py.
"""

from __future__ import annotations

from absl import flags

from lejepa_jax import cli
from lejepa_jax.export import encoder_files

_PROG = "python -m lejepa_jax.export"
_FLAGS = flags.FlagValues()  # this command's own flags (`lejepa_jax.cli`)
_WORKDIR = flags.DEFINE_string("workdir", None, "the training run's workdir", flag_values=_FLAGS)
_OUT = flags.DEFINE_string("out", None, "a new directory for the export", flag_values=_FLAGS)
_STEP = flags.DEFINE_integer("step", None, "checkpoint step (default: latest)", flag_values=_FLAGS)
_WITH_PROJECTOR = flags.DEFINE_bool(
  "with_projector",
  False,
  "keep the projector (default: the backbone alone, what probes read)",
  flag_values=_FLAGS,
)
_SAFETENSORS = flags.DEFINE_bool(
  "safetensors", False, "also write OUT/model.safetensors", flag_values=_FLAGS
)

_TIMM = flags.DEFINE_bool(
  "timm",
  False,
  "also write the backbone for PyTorch: OUT/timm_model.safetensors, a state_dict the timm model "
  "in OUT/timm.json loads strictly (lejepa_jax.export.create_timm_model)",
  flag_values=_FLAGS,
)


def main(argv: list[str] | None = None) -> None:
  """The command line (module docstring); `argv` without the program name, None: sys.argv[1:]."""
  cli.parse(_FLAGS, argv, prog=_PROG, doc=__doc__, required=("workdir", "out"))
  try:
    directory = encoder_files.export_run(
      _WORKDIR.value,
      _OUT.value,
      _STEP.value,
      with_projector=_WITH_PROJECTOR.value,
      safetensors=_SAFETENSORS.value,
      timm=_TIMM.value,
    )
  except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:
    raise SystemExit(f"error: {e}") from None
  print(f"exported to {directory}")
