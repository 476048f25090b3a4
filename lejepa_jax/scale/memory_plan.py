"""Memory plan of a training run on a mesh, computed without the hardware.

    python -m lejepa_jax.plan --config=configs/vit_h.py --mesh=data:32,fsdp:8 [--remat=none,full]

Prints, per device: the parameters, the optimizer state and the rest of the train state (exact), the
uint8 batch (exact), the train step's temporaries at their peak (activations kept for the backward
pass, gradients, FSDP-gathered weights, collective buffers), their sum, and whether it fits each
accelerator's memory. Nothing is allocated.

How:
- State and batch: the shardings the trainer gives every variable on a mesh of the requested shape
  (its logical-axis rules), shard shapes times dtype sizes.
- Temporaries: XLA's buffer assignment for the train step compiled ahead of time for compile-only TPU
  devices of a slice with as many chips as the mesh (needs libtpu: `pip install 'jax[tpu]'`; no TPU).
  The CPU compiler cannot stand in: it undoes rematerialisation. Compiling a full-depth ViT step for
  hundreds of chips takes tens of minutes on a small CPU, so ViTs are compiled at two reduced depths
  (`--depths`, identical blocks) and the temporaries extrapolated linearly in depth; `--depths=full`
  compiles the real model. Check (ViT-L/14, 64 v5p chips, 8 images per chip, no remat): depths 2 and
  4 extrapolate to 7.51 GiB where the full-depth compile says 7.70 GiB (2.5% low; deeper models
  drift a little further), so a plan fits an accelerator only with 5% of its memory to spare.
- GPU rows use the same per-device numbers: XLA:GPU assigns buffers differently, so they are
  estimates. Attention is XLA's (it keeps [N, heads, T, T] scores); a fused kernel needs less.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import re
from collections.abc import Iterator, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from lejepa_jax.models import vit
from lejepa_jax.scale import sharding
from lejepa_jax.training import steps, train_state

FIT_FRACTION = 0.95  # the depth extrapolation reads a few percent low (module docstring)
HBM_GIB = {"TPU v4": 32, "TPU v5p": 95, "TPU v5e": 16, "H100": 80, "A100 40GB": 40, "A100 80GB": 80}
# Generations a plan can compile for: (topology prefix, dimensions, libtpu chip configuration).
TPU_GENERATIONS = {
  "v4": ("v4", 3, "megacore"),
  "v5p": ("v5p", 3, "megacore"),
  "v5e": ("v5e", 2, "default"),
}


def parse_mesh(text: str) -> dict[str, int]:
  """'data:32,fsdp:8' -> {"data": 32, "fsdp": 8}."""
  axes = {}
  for item in text.split(","):
    name, _, size = item.partition(":")
    if not size.isdigit() or int(size) < 1:
      raise ValueError(f"--mesh wants name:size pairs such as data:32,fsdp:8, got {text!r}.")
    axes[name.strip()] = int(size)
  return axes


def batch_devices(axes: Mapping[str, int]) -> int:
  """Devices the batch is split over (the mesh's data-parallel axes)."""
  return math.prod(size for name, size in axes.items() if name in sharding.BATCH_AXES)


def images_per_device(config: ml_collections.ConfigDict, axes: Mapping[str, int]) -> int:
  return config.data.global_batch_size // batch_devices(axes)


def plan_config(
  config: ml_collections.ConfigDict, axes: Mapping[str, int], per_device_batch: int | None, remat: str
) -> ml_collections.ConfigDict:
  """The config as the accelerators run it: bfloat16 compute ("auto"), the mesh, batch and remat."""
  config = copy.deepcopy(config)
  with config.unlocked():
    if per_device_batch is not None:
      config.data.global_batch_size = per_device_batch * batch_devices(axes)
    if config.model.get("dtype", "auto") == "auto":
      config.model.dtype = "bfloat16"  # what "auto" means on TPUs and GPUs
    if "remat" in config.model:  # the models with a per-block remat option
      config.model.remat = remat
    config.mesh.axes = dict(axes)
  if config.data.global_batch_size % batch_devices(axes):
    raise ValueError(
      f"data.global_batch_size={config.data.global_batch_size} does not split "
      f"over the {batch_devices(axes)} batch-axis devices of {dict(axes)}."
    )
  return config


def state_bytes(config: ml_collections.ConfigDict, axes: Mapping[str, int]) -> dict[str, int]:
  """Per-device bytes of the train state on a mesh of shape `axes`, by part: "model" (parameters and
  BatchNorm statistics), "optimizer" (AdamW moments) and "probe" (online probe and its optimizer).

  The shardings come from a one-device mesh with the same axis names (the rules only read names);
  the shard shapes from an abstract mesh of the requested sizes. Exact, and instant.
  """
  one = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape((1,) * len(axes)), tuple(axes))
  _, state = sharding.abstract_state(lambda: train_state.build_train_objects(config), one)
  target = jax.sharding.AbstractMesh(tuple(axes.values()), tuple(axes))

  def nbytes(leaf) -> int:
    spec = jax.sharding.NamedSharding(target, leaf.sharding.spec)
    return math.prod(spec.shard_shape(leaf.shape)) * leaf.dtype.itemsize  # (PRNG keys too)

  parts = {
    "model": [state["model"]],
    "optimizer": [state["optimizer"]],
    "probe": [state["probe"], state["probe_optimizer"]],
  }
  return {name: sum(nbytes(leaf) for leaf in jax.tree.leaves(trees)) for name, trees in parts.items()}


def batch_bytes(config: ml_collections.ConfigDict, per_device_batch: int) -> int:
  """Bytes of one device's share of the uint8 multi-crop batch and its int32 labels."""
  d = config.data
  views = sum(v["count"] * v["size"] ** 2 * d.channels for v in (d.global_views, d.local_views))
  return per_device_batch * (views + 4)


def tpu_topology(generation: str, chips: int) -> str:
  """A slice shape with `chips` chips, e.g. ("v5p", 256) -> "v5p:4x8x8", ("v5e", 8) -> "v5e:2x4"."""
  prefix, rank, _ = TPU_GENERATIONS[generation]
  if chips < 1 or chips & (chips - 1):
    raise ValueError(f"TPU slices have a power-of-two number of chips, not {chips}.")
  dims = [1] * rank
  while math.prod(dims) < chips:
    dims[dims.index(min(dims))] *= 2  # grow the shortest side: the squarest slice
  dims = sorted(dims, reverse=True) if 1 in dims else sorted(dims)
  return f"{prefix}:{'x'.join(map(str, dims))}"


def tpu_devices(generation: str, chips: int) -> list:
  """Compile-only devices of a TPU slice (libtpu, no TPU needed)."""
  from jax.experimental import topologies

  _, _, chip_config = TPU_GENERATIONS[generation]
  try:
    return list(
      topologies.get_topology_desc(
        tpu_topology(generation, chips), platform="tpu", chip_config_name=chip_config
      ).devices
    )
  except RuntimeError as error:
    raise RuntimeError(
      f"Compiling for TPU devices needs libtpu (`pip install 'jax[tpu]'`, works without a TPU): {error}"
    ) from error


@dataclasses.dataclass(frozen=True)
class Compiled:
  """Per-device numbers of a train step compiled for TPU devices: peak temporary bytes, and XLA's
  cost analysis of the partitioned, fused program (FLOPs and bytes accessed per device). Where XLA
  refused the program for exceeding the chip's memory, only the temporaries it reported are known
  and the cost fields are None."""

  temporaries: int
  flops: float | None
  bytes_accessed: float | None


# XLA's refusal of a program whose temporaries exceed the chip's memory, e.g. "RESOURCE_EXHAUSTED:
# Ran out of memory on HBM, the total memory required for HLO temporaries (244.21G) exceeds
# available HBM (95.74G)." (libtpu 0.0.42.1).
_REFUSED_TEMPORARIES = re.compile(r"RESOURCE_EXHAUSTED.*HLO temporaries \(([0-9.]+)([KMGT])\)", re.S)


def refused_temporaries(message: str) -> int | None:
  """The temporary bytes XLA reported when it refused a program for the chip's memory, or None."""
  found = _REFUSED_TEMPORARIES.search(message)
  if found is None:
    return None
  return round(float(found.group(1)) * 2 ** (10 * "KMGT".index(found.group(2)) + 10))


def compiled_step(config: ml_collections.ConfigDict, devices: Sequence) -> Compiled:
  """The train step compiled for `devices` on config.mesh.axes: its per-device numbers."""
  from jax.experimental import mesh_utils

  axes = dict(config.mesh.axes)
  # Any device order gives the same memory; splitting physical axes lets every shape through.
  array = mesh_utils.create_device_mesh(tuple(axes.values()), devices, allow_split_physical_axes=True)
  mesh = jax.sharding.Mesh(
    array, tuple(axes), axis_types=(sharding.AXIS_TYPES[config.mesh.axis_type],) * len(axes)
  )
  graphdef, state = sharding.abstract_state(lambda: train_state.build_train_objects(config), mesh)
  try:
    compiled = steps.compile_train_step(config, mesh, graphdef, state, config.data.global_batch_size)
  except jax.errors.JaxRuntimeError as error:
    temporaries = refused_temporaries(str(error))
    if temporaries is None:
      raise
    return Compiled(temporaries, None, None)  # too large for the chip: the plan says "no" to all
  cost = compiled.cost_analysis() or {}
  return Compiled(
    compiled.memory_analysis().temp_size_in_bytes,
    float(cost.get("flops", 0.0)),
    float(cost.get("bytes accessed", 0.0)),
  )


@contextlib.contextmanager
def vit_depth(config: ml_collections.ConfigDict, depth: int) -> Iterator[ml_collections.ConfigDict]:
  """The config with its ViT cut (or grown) to `depth` blocks, all else equal.

  Registers the size under a temporary name for the duration (the model builds sizes by name).
  """
  size, patch = vit.parse_variant(config.model.variant)
  name = f"PlanDepth{depth}"
  vit.VIT_SIZES[name] = dataclasses.replace(size, depth=depth)
  config = copy.deepcopy(config)
  with config.unlocked():
    config.model.variant = f"{name}/{patch}"
  try:
    yield config
  finally:
    del vit.VIT_SIZES[name]


def extrapolate(depths: tuple[int, int], values: tuple[float, float], depth: int) -> float:
  """The line through (depths[i], values[i]) at `depth`: each added block adds the same amount."""
  slope = (values[1] - values[0]) / (depths[1] - depths[0])
  return values[1] + slope * (depth - depths[1])


def compiled_full_depth(
  config: ml_collections.ConfigDict, devices: Sequence, depths: tuple[int, int] | None
) -> Compiled:
  """The full model's compiled numbers, compiled directly or extrapolated from two reduced depths
  (temporaries, FLOPs and bytes each grow by the same amount per identical block)."""
  if depths is None or config.model.name != "vit":
    return compiled_step(config, devices)
  reduced = []
  for depth in depths:
    with vit_depth(config, depth) as cut:
      reduced.append(compiled_step(cut, devices))
  full_depth = vit.parse_variant(config.model.variant)[0].depth
  if any(c.flops is None for c in reduced):  # refused even when cut: the full model is larger still
    return Compiled(max(c.temporaries for c in reduced), None, None)
  at_full = {
    field.name: extrapolate(depths, tuple(getattr(c, field.name) for c in reduced), full_depth)
    for field in dataclasses.fields(Compiled)
  }
  return Compiled(round(at_full.pop("temporaries")), **at_full)


@dataclasses.dataclass
class Plan:
  """Per-device bytes of one (config, mesh, remat) and the accelerators they fit."""

  remat: str
  state: dict[str, int]
  batch: int
  temporaries: int | None
  compiled: Compiled | None = None  # the TPU program's numbers, where libtpu compiled it

  @property
  def total(self) -> int | None:
    if self.temporaries is None:
      return None
    return sum(self.state.values()) + self.batch + self.temporaries

  def fits(self) -> dict[str, bool]:
    return {name: self.total <= FIT_FRACTION * gib * 2**30 for name, gib in HBM_GIB.items()}


def make_plan(
  config: ml_collections.ConfigDict,
  axes: Mapping[str, int],
  remat: str,
  per_device_batch: int | None,
  devices: Sequence | None,
  depths: tuple[int, int] | None,
) -> Plan:
  config = plan_config(config, axes, per_device_batch, remat)
  compiled = None if devices is None else compiled_full_depth(config, devices, depths)
  return Plan(
    remat,
    state_bytes(config, axes),
    batch_bytes(config, images_per_device(config, axes)),
    None if compiled is None else compiled.temporaries,
    compiled,
  )


def format_plans(plans: Sequence[Plan], header: str) -> str:
  """A text table: one column per remat policy, GiB per device, and which accelerators fit."""
  gib = lambda b: "n/a" if b is None else f"{b / 2**30:.2f}"
  # Where XLA refused the program for the chip's memory, its report is a lower bound ("> ").
  at_least = lambda p, b: ("> " if p.compiled and p.compiled.flops is None else "") + gib(b)
  rows = [
    ("remat", [p.remat for p in plans]),
    ("parameters + BN stats", [gib(p.state["model"]) for p in plans]),
    ("optimizer state", [gib(p.state["optimizer"]) for p in plans]),
    ("probe + batch", [gib(p.state["probe"] + p.batch) for p in plans]),
    ("temporaries (peak)", [at_least(p, p.temporaries) for p in plans]),
    ("total", [at_least(p, p.total) for p in plans]),
  ]
  footer = []
  if all(p.total is not None for p in plans):
    rows += [
      (f"fits {name} ({size} GiB)", ["yes" if p.fits()[name] else "no" for p in plans])
      for name, size in HBM_GIB.items()
    ]
    footer = [f"(fits: total at most {FIT_FRACTION:.0%} of the accelerator's memory)"]
  width = max(len(label) for label, _ in rows) + 2
  column = max(len(c) for _, cells in rows for c in cells) + 2
  lines = [header] + [
    label.ljust(width) + "".join(c.rjust(column) for c in cells) for label, cells in rows
  ]
  return "\n".join(lines + footer)


def header(
  config: ml_collections.ConfigDict,
  axes: Mapping[str, int],
  per_device_batch: int | None,
  devices: Sequence | None,
  depths: tuple[int, int] | None,
  generation: str,
) -> str:
  """The plan table's first line: model, mesh, images per device, what was compiled."""
  chips = math.prod(axes.values())
  per_device = images_per_device(plan_config(config, axes, per_device_batch, "none"), axes)
  where = "" if devices is None else f", compiled for TPU {tpu_topology(generation, chips)}"
  extrapolated = depths is not None and devices is not None and config.model.name == "vit"
  how = f", depths {depths} extrapolated" if extrapolated else ""  # compiled_full_depth's rule
  return (
    f"{config.model.name} {config.model.get('variant', '')}, mesh "
    f"{' x '.join(f'{k}:{v}' for k, v in axes.items())} ({chips} devices), "
    f"{per_device} images per device, GiB per device{where}{how}"
  )
