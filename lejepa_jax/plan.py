r"""Entry point of the memory plan: a training run's memory per device on a mesh, without the hardware.

    python -m lejepa_jax.plan --config=configs/vit_h.py --mesh=data:32,fsdp:8 [--remat=none,full]

Only flags live here; how the plan is computed (and how far to trust it): the docstring of
`lejepa_jax.scale.memory_plan`.
"""

from __future__ import annotations

import math

from absl import flags
from ml_collections import config_flags

from lejepa_jax import cli
from lejepa_jax.models import vit
from lejepa_jax.scale import memory_plan

_PROG = "python -m lejepa_jax.plan"
_FLAGS = flags.FlagValues()
_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config (configs/*.py).", flag_values=_FLAGS, lock_config=True
)
_MESH = flags.DEFINE_string("mesh", None, "Mesh shape, e.g. data:32,fsdp:8.", flag_values=_FLAGS)
_REMAT = flags.DEFINE_list(
  "remat",
  None,
  f"Remat policies to plan (default: the config's); any of {list(vit.REMAT_POLICIES)}.",
  flag_values=_FLAGS,
)
_PER_DEVICE_BATCH = flags.DEFINE_integer(
  "per_device_batch",
  None,
  "Images per device (default: data.global_batch_size over the mesh's "
  "batch axes); the global batch becomes this times the batch-axis devices.",
  flag_values=_FLAGS,
)
_TPU = flags.DEFINE_enum(
  "tpu", "v5p", list(memory_plan.TPU_GENERATIONS), "TPU generation compiled for.", flag_values=_FLAGS
)
_DEPTHS = flags.DEFINE_string(
  "depths", "2,4", "Two ViT depths to compile and extrapolate from, or 'full'.", flag_values=_FLAGS
)


def main(argv: list[str] | None = None) -> None:
  cli.parse(_FLAGS, argv, prog=_PROG, doc=__doc__, required=("config", "mesh"))
  import jax

  jax.config.update("jax_platforms", "cpu")  # compile-only TPU devices need no accelerator
  config, axes = _CONFIG.value, memory_plan.parse_mesh(_MESH.value)
  if _REMAT.value and config.model.name != "vit":
    raise SystemExit(
      f"error: --remat applies to ViTs only (rematerialisation per block); "
      f"{config.model.name} has no remat option. Leave --remat out."
    )
  chips = math.prod(axes.values())
  depths = None if _DEPTHS.value == "full" else tuple(int(d) for d in _DEPTHS.value.split(","))
  try:
    devices = memory_plan.tpu_devices(_TPU.value, chips)
  except RuntimeError as error:
    print(f"{error}\nShowing the state and batch only.")
    devices = None
  plans = [
    memory_plan.make_plan(config, axes, remat, _PER_DEVICE_BATCH.value, devices, depths)
    for remat in (_REMAT.value or [config.model.get("remat", "none")])
  ]
  print(
    memory_plan.format_plans(
      plans, memory_plan.header(config, axes, _PER_DEVICE_BATCH.value, devices, depths, _TPU.value)
    )
  )


if __name__ == "__main__":
  main()
