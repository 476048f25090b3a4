"""Cost of a training run before launch: the train step's FLOPs and bytes, time per step and for the
whole run on an accelerator, and the host CPU workers that keep its input fed.

    python -m lejepa_jax.plan --config=configs/paper/in1k_vit_l14.py --mesh=data:8 --chips=h100

How, and what is assumed:
- FLOPs: XLA's cost analysis (HloCostAnalysis) of the train step lowered for the config's global
  batch in bfloat16, as the accelerators run it; nothing is compiled or allocated, so any size plans
  on a laptop in seconds to a minute. Rematerialised blocks count twice, as they run.
- Step time, the roofline: the longer of compute, FLOPs / (chips * peak * MFU), and memory traffic,
  the compiled program's bytes accessed per device / the chip's bandwidth. MFU (model FLOPs
  utilisation) is an assumption, 0.35 by default: typical of well-sharded ViT training in JAX;
  ConvNets at these sizes often run lower. The bytes are known where the memory plan compiled the
  step for TPU devices (libtpu installed; XLA:GPU fuses differently, so the GPU columns reuse them as
  an estimate); without them the step is taken as compute-bound (the table says "assumed").
  Collectives are assumed to overlap with compute.
- The run: total_steps times the step time; checkpoints and evaluation are not included.
- Input: the images per second that step time asks for over one CPU worker's measured rate
  (`python -m lejepa_jax.bench data` on your hosts; the default, 200.9 images/s of the paper's
  2 x 224 + 6 x 96 multi-crop, is docs/benchmarks.md's on a 2-core AMD EPYC; 8 global 224 px views
  cost a worker more) gives the workers, over all hosts (data.num_workers per host), that keep the
  accelerators fed. Fewer workers make the run input-bound: slower by the ratio.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import jax
import ml_collections
import numpy as np

from lejepa_jax.scale import sharding
from lejepa_jax.training import steps, train_state

DEFAULT_MFU = 0.35
# docs/benchmarks.md: the data pipeline, one worker, the paper's ImageNet multi-crop (2-core AMD EPYC).
WORKER_IMAGES_PER_S = 200.9


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip: dense bfloat16 peak (FLOP/s), memory bandwidth (bytes/s), memory (GiB)."""

  name: str
  peak_flops: float
  memory_bandwidth: float
  memory_gib: float

  @property
  def ridge(self) -> float:
    """FLOPs per byte above which a program is bound by compute, not memory bandwidth."""
    return self.peak_flops / self.memory_bandwidth


# Vendors' data sheets (dense bfloat16, no sparsity; V100: float16 tensor cores, it has no bfloat16).
CHIPS = {
  "h100": Chip("H100 SXM", 989e12, 3.35e12, 80),
  "h200": Chip("H200 SXM", 989e12, 4.8e12, 141),
  "a100": Chip("A100 80GB SXM", 312e12, 2.039e12, 80),
  "v100": Chip("V100 SXM2 16GB", 125e12, 0.9e12, 16),
  "v4": Chip("TPU v4", 275e12, 1.2e12, 32),
  "v5e": Chip("TPU v5e", 197e12, 0.819e12, 16),
  "v5p": Chip("TPU v5p", 459e12, 2.765e12, 95),
}


@dataclasses.dataclass(frozen=True)
class StepCost:
  """What one train step of the global batch costs, summed over every device."""

  flops: float
  bytes_accessed: float
  global_batch: int


def program_cost(fn, args: tuple, global_batch: int) -> StepCost:
  """FLOPs and (unfused) bytes of `jax.jit(fn)` lowered for `args` (arrays or ShapeDtypeStructs)."""
  cost = jax.jit(fn).lower(*args).cost_analysis()
  return StepCost(float(cost["flops"]), float(cost["bytes accessed"]), global_batch)


def train_step_cost(config: ml_collections.ConfigDict) -> StepCost:
  """The cost of `config`'s train step at its global batch, lowered on one (CPU) device.

  Pass the config the accelerators run (memory_plan.plan_config: bfloat16, remat): the work per
  example does not depend on the mesh, so one device stands for all of them.
  """
  one = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "fsdp"))
  config = copy.deepcopy(config)
  with config.unlocked():
    config.mesh.axes = dict(data=1, fsdp=1)
  graphdef, state = sharding.abstract_state(lambda: train_state.build_train_objects(config), one)
  batch = config.data.global_batch_size
  step, args = steps.bound_step(config, one, graphdef, state, batch)
  with jax.set_mesh(one):
    return program_cost(step, args, batch)


@dataclasses.dataclass(frozen=True)
class RunEstimate:
  """A run's time on `devices` chips and the input workers it needs (see the module docstring)."""

  chip: Chip
  devices: int
  mfu: float
  compute_seconds: float  # FLOPs / (devices * peak * mfu)
  memory_seconds: float | None  # the compiled program's bytes per device / bandwidth, if known
  steps: int
  global_batch: int
  worker_images_per_s: float

  @property
  def step_seconds(self) -> float:
    """The slower of compute and memory traffic (the roofline), at the assumed MFU."""
    return max(self.compute_seconds, self.memory_seconds or 0.0)

  @property
  def run_hours(self) -> float:
    return self.steps * self.step_seconds / 3600

  @property
  def images_per_s(self) -> float:
    return self.global_batch / self.step_seconds

  @property
  def workers(self) -> int:
    """CPU input workers, over all hosts, that prepare images as fast as the step takes them."""
    return math.ceil(self.images_per_s / self.worker_images_per_s)

  @property
  def bound(self) -> str:
    if self.memory_seconds is None:
      return "compute (assumed)"
    return "memory" if self.memory_seconds > self.compute_seconds else "compute"


def estimate(
  cost: StepCost,
  total_steps: int,
  chip: Chip,
  devices: int,
  mfu: float = DEFAULT_MFU,
  worker_images_per_s: float = WORKER_IMAGES_PER_S,
  bytes_per_device: float | None = None,
) -> RunEstimate:
  """The run on `devices` chips of `chip`: compute time FLOPs / (devices * peak * mfu), memory time
  `bytes_per_device` (a compiled program's, fused; None when only the unfused count is known) over
  the chip's bandwidth; the step takes the longer."""
  if not 0 < mfu <= 1:
    raise ValueError(f"MFU is a fraction of the chip's peak, in (0, 1]; got {mfu}.")
  if devices < 1 or worker_images_per_s <= 0:
    raise ValueError(
      f"Need at least one device and a positive worker rate, got {devices}, {worker_images_per_s}."
    )
  memory = None if bytes_per_device is None else bytes_per_device / chip.memory_bandwidth
  return RunEstimate(
    chip,
    devices,
    mfu,
    cost.flops / (devices * chip.peak_flops * mfu),
    memory,
    total_steps,
    cost.global_batch,
    worker_images_per_s,
  )


def format_estimate(cost: StepCost, total_steps: int, runs: list[RunEstimate]) -> str:
  """A text table: one column per accelerator kind."""
  rows = [
    ("accelerators", [f"{r.devices} x {r.chip.name}" for r in runs]),
    ("step time (s)", [f"{r.step_seconds:.3f}" for r in runs]),
    ("bound by", [r.bound for r in runs]),
    ("run time (hours)", [f"{r.run_hours:.1f}" for r in runs]),
    ("chip-hours", [f"{r.run_hours * r.devices:.0f}" for r in runs]),
    ("images/s to feed", [f"{r.images_per_s:.0f}" for r in runs]),
    ("CPU input workers", [str(r.workers) for r in runs]),
  ]
  width = max(len(label) for label, _ in rows) + 2
  column = max(len(c) for _, cells in rows for c in cells) + 2
  head = (
    f"train step: {cost.flops / 1e12:.1f} TFLOP for {cost.global_batch} images "
    f"({cost.flops / cost.global_batch / 1e9:.1f} GFLOP per image); {total_steps} steps; MFU "
    f"assumed {runs[0].mfu:.2f}; {runs[0].worker_images_per_s:.0f} images/s per input worker"
  )
  lines = [head] + [
    label.ljust(width) + "".join(c.rjust(column) for c in cells) for label, cells in rows
  ]
  return "\n".join(lines)
