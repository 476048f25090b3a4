r"""Entry point of the plan: a training run's memory per device and its cost, without the hardware.

    python -m lejepa_jax.plan --config=configs/vit_h.py --mesh=data:32,fsdp:8 [--remat=none,full]
    python -m lejepa_jax.plan --config=configs/paper/in1k_vit_l14.py --mesh=data:8 --chips=h100,v5p

Prints the memory plan (state, batch, temporaries per device; the temporaries need libtpu), then the
cost: the train step's FLOPs, the time per step and for the whole run on the mesh's device count of
each --chips kind at an assumed --mfu, and the CPU input workers that rate needs (--worker_images_per_s,
measured with `python -m lejepa_jax.bench data`). --cost_only skips the memory plan. How each part is
computed and how far to trust it: `lejepa_jax.scale.memory_plan` and `lejepa_jax.scale.cost_plan`.
"""

from __future__ import annotations

import math

from absl import flags
from ml_collections import config_flags

from lejepa_jax import cli
from lejepa_jax.models import layers
from lejepa_jax.scale import cost_plan, memory_plan

_PROG = "python -m lejepa_jax.plan"
_FLAGS = flags.FlagValues()
_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config (configs/*.py).", flag_values=_FLAGS, lock_config=True
)
_MESH = flags.DEFINE_string("mesh", None, "Mesh shape, e.g. data:32,fsdp:8.", flag_values=_FLAGS)
_REMAT = flags.DEFINE_list(
  "remat",
  None,
  f"Remat policies to plan (default: the config's); any of {list(layers.REMAT_POLICIES)}.",
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
_CHIPS = flags.DEFINE_list(
  "chips",
  ["h100", "v5p"],
  f"Accelerators to estimate the run's time on, any of {list(cost_plan.CHIPS)}.",
  flag_values=_FLAGS,
)
_MFU = flags.DEFINE_float(
  "mfu", cost_plan.DEFAULT_MFU, "Assumed model FLOPs utilisation, in (0, 1].", flag_values=_FLAGS
)
_WORKER_RATE = flags.DEFINE_float(
  "worker_images_per_s",
  cost_plan.WORKER_IMAGES_PER_S,
  "Images/s one CPU input worker prepares (python -m lejepa_jax.bench data on your hosts).",
  flag_values=_FLAGS,
)
_COST_ONLY = flags.DEFINE_bool(
  "cost_only", False, "Print the cost only, not the memory plan.", flag_values=_FLAGS
)
_DEPTHS = flags.DEFINE_string(
  "depths", "2,4", "Two ViT depths to compile and extrapolate from, or 'full'.", flag_values=_FLAGS
)


def main(argv: list[str] | None = None) -> None:
  cli.parse(_FLAGS, argv, prog=_PROG, doc=__doc__, required=("config", "mesh"))
  import jax

  jax.config.update("jax_platforms", "cpu")  # compile-only TPU devices need no accelerator
  config, axes = _CONFIG.value, memory_plan.parse_mesh(_MESH.value)
  if _REMAT.value and "remat" not in config.model:
    raise SystemExit(
      f"error: --remat applies to ViTs and ConvNeXt-V2s only (rematerialisation per block); "
      f"{config.model.name} has no remat option. Leave --remat out."
    )
  chips = math.prod(axes.values())
  unknown = sorted(set(_CHIPS.value) - set(cost_plan.CHIPS))
  if unknown:
    cli.usage_error(_FLAGS, _PROG, f"--chips: unknown {unknown}; known: {list(cost_plan.CHIPS)}")
  compiled = None
  if not _COST_ONLY.value:
    plans, header = memory_plans(config, axes, chips)
    print(memory_plan.format_plans(plans, header), end="\n\n")
    compiled = plans[0].compiled
  remat = (_REMAT.value or [config.model.get("remat", "none")])[0]
  planned = memory_plan.plan_config(config, axes, _PER_DEVICE_BATCH.value, remat)
  cost = cost_plan.train_step_cost(planned)
  runs = [
    cost_plan.estimate(
      cost,
      planned.total_steps,
      cost_plan.CHIPS[name],
      chips,
      _MFU.value,
      _WORKER_RATE.value,
      None if compiled is None else compiled.bytes_accessed,
    )
    for name in _CHIPS.value
  ]
  print(cost_plan.format_estimate(cost, planned.total_steps, runs))


def memory_plans(config, axes: dict[str, int], chips: int) -> tuple[list, str]:
  """The memory plan for each --remat policy (temporaries only where libtpu compiles) and its
  table's header."""
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
  return plans, memory_plan.header(config, axes, _PER_DEVICE_BATCH.value, devices, depths, _TPU.value)


if __name__ == "__main__":
  main()
