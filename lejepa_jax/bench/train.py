"""Train-step throughput: step time, views/s and MFU against the matmul ceiling measured in the same run.

Cases: ViT-S/16 at 224 px with 16 images x 2 global views (MLP-BN projector, LeJEPA loss, AdamW) in
float32 and in bfloat16 compute, the default CPU config (configs/fashion_mnist.py) and the previous
one (ResNet-18 width 32 with multi-crop views), each next to a PyTorch eager step of the same config
(`bench.torch_reference`: float32, or bfloat16 autocast). The step is the real one
(`lejepa_jax.training.steps`), compiled ahead of time on synthetic uint8 batches; data loading is
not included. MFU is the model's FLOPs (XLA's count of the float32 program) over the matmul ceiling
of the step's compute dtype.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from flax import nnx

from lejepa_jax import cli, config_lib
from lejepa_jax.bench import common, profile
from lejepa_jax.scale import sharding
from lejepa_jax.training import steps, train_state

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def matmul_ceiling(dtype=jnp.float32, size: int = 2048, repeats: int = 10) -> float:
  """Matmul FLOP/s of this machine in `dtype` (float32 accumulation), the MFU denominator: the
  fastest of `repeats` products, since a ceiling is a best case (a median let one busy moment
  halve it)."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32).astype(dtype)
  matmul = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
  seconds = min(common.wall_times(lambda: jax.block_until_ready(matmul(a, a)), repeats))
  return 2 * size**3 / seconds


def vit_s16_config(dtype: str = "float32") -> ml_collections.ConfigDict:
  c = config_lib.base_config()
  c.model.variant, c.model.drop_path, c.model.dtype = "S/16", 0.0, dtype
  c.model.projector = dict(hidden_dim=2048, out_dim=512, num_layers=3)
  c.data.global_batch_size = 16
  c.data.local_views = dict(count=0, size=96, scale=(0.05, 0.3))
  c.mesh.axes = dict(data=-1)
  return c


def default_cpu_config(recipe: str = "default") -> ml_collections.ConfigDict:
  return config_lib.load_config_file(
    os.path.join(ROOT, "configs", "fashion_mnist.py"), f"recipe={recipe}"
  )


def _compile(config):
  """(compiled step, mesh, state) for `config` on synthetic batches."""
  mesh = sharding.make_mesh(dict(config.mesh.axes), config.mesh.axis_type)
  objects = sharding.create_sharded(lambda: train_state.build_train_objects(config), mesh)
  graphdef, state = nnx.split(objects)
  compiled = steps.compile_train_step(config, mesh, graphdef, state, config.data.global_batch_size)
  return compiled, mesh, state


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0))


def time_step(config, repeats: int, breakdown: bool = False) -> dict:
  """Seconds per compiled train step, its FLOPs (XLA's count) and views per step; with
  `breakdown`, also its op time by kind (`bench.profile`) from one more, profiled step."""
  compiled, mesh, state = _compile(config)
  batch_size = config.data.global_batch_size
  spec = steps.abstract_batch(config, mesh, batch_size)
  rng = np.random.default_rng(0)
  batch = {
    k: jax.device_put(
      rng.integers(0, 255, s.shape).astype(s.dtype) if k != "label" else np.zeros(s.shape, np.int32),
      s.sharding,
    )
    for k, s in spec.items()
  }
  holder = {"state": state}

  def step():
    with jax.set_mesh(mesh):
      holder["state"], metrics = compiled(holder["state"], batch, jax.random.key(0))
    jax.block_until_ready(metrics)

  seconds = common.median_seconds(step, repeats)
  views = batch_size * (config.data.global_views["count"] + config.data.local_views["count"])
  result = {"seconds": seconds, "flops": _flops(compiled), "views": views}
  if breakdown:
    result["breakdown"] = profile.op_time_breakdown(compiled, step)
  return result


# name: (label, config maker, compute dtype, the case whose FLOP count is the model's).
CASES = {
  "vit_s16": ("ViT-S/16, 224 px, 16 images x 2 views, float32", vit_s16_config, "float32", "vit_s16"),
  # Its own program counts ~10% more: the identity-product transposes of the CPU bfloat16
  # gradients (cpu_kernels.accumulating_matmul) are not model FLOPs.
  "vit_s16_bf16": (
    "ViT-S/16, same, bfloat16 compute",
    lambda: vit_s16_config("bfloat16"),
    "bfloat16",
    "vit_s16",
  ),
  "default_cpu": (
    "configs/fashion_mnist.py (ResNet-18 width 16, 128 x 2 x 28 px)",
    default_cpu_config,
    "float32",
    "default_cpu",
  ),
  # The previous default, the path ConvNet users run: width 32 and multi-crop views.
  "resnet18_w32": (
    "ResNet-18 width 32, 128 x (2 x 28 + 2 x 14 px) (:recipe=multicrop_w32)",
    lambda: default_cpu_config("multicrop_w32"),
    "float32",
    "resnet18_w32",
  ),
}


def _check_cases(names: list[str]) -> bool:
  unknown = [name for name in names if name not in CASES]
  if unknown or not names:
    raise flags.ValidationError(
      f"{'unknown case ' + ', '.join(unknown) if unknown else 'no case'}; choose from {', '.join(CASES)}"
    )
  return True


_PROG = "python -m lejepa_jax.bench train"
_FLAGS = flags.FlagValues()  # this benchmark's own flags (`lejepa_jax.cli`)
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed steps per case (median)", flag_values=_FLAGS)
_CASES = flags.DEFINE_list(
  "cases", list(CASES), f"comma-separated cases, of: {', '.join(CASES)}", flag_values=_FLAGS
)
_NO_TORCH = flags.DEFINE_bool("no_torch", False, "skip the PyTorch eager reference", flag_values=_FLAGS)
_BREAKDOWN = flags.DEFINE_bool(
  "breakdown",
  False,
  "also profile one step per case: op time in convolutions, products, other ops",
  flag_values=_FLAGS,
)
flags.register_validator("cases", _check_cases, flag_values=_FLAGS)


def main(argv: list[str] | None = None) -> None:
  """The command line (module docstring); `argv` without the program name, None: sys.argv[1:]."""
  cli.parse(_FLAGS, argv, prog=_PROG, doc=__doc__)
  print(f"# train step ({common.machine_description()})", flush=True)
  ceilings = {name: matmul_ceiling(jnp.dtype(name)) for name in ("float32", "bfloat16")}
  for name, flops in ceilings.items():
    print(f"  {name} matmul ceiling (float32 accumulation): {flops / 1e9:.0f} GFLOP/s", flush=True)
  if not _NO_TORCH.value and _torch_available():
    from lejepa_jax.bench import torch_reference

    for name in ceilings:
      flops = torch_reference.matmul_ceiling(bfloat16=name == "bfloat16")
      print(f"  PyTorch's {name} matmul: {flops / 1e9:.0f} GFLOP/s", flush=True)
  rows, model_flops = [], {}
  for name in _CASES.value:
    label, make, dtype, flops_case = CASES[name]
    result = time_step(make(), _REPEATS.value, _BREAKDOWN.value)
    if flops_case == name:
      model_flops[name] = result["flops"]
    elif flops_case not in model_flops:  # e.g. the bfloat16 case alone: count the float32 program
      model_flops[flops_case] = _flops(_compile(CASES[flops_case][1]())[0])
    mfu = model_flops[flops_case] / result["seconds"] / ceilings[dtype]
    rows.append(
      [
        label,
        f"{result['seconds']:.2f}",
        f"{result['views'] / result['seconds']:.1f}",
        f"{model_flops[flops_case] / 1e9:.0f}",
        f"{100 * mfu:.0f}% of {dtype}",
      ]
    )
    print(f"  done {name}", flush=True)
    if _BREAKDOWN.value:
      print(f"  {name} op time: {profile.shares_text(result['breakdown'])}", flush=True)
    if not _NO_TORCH.value:
      torch_seconds = _torch_seconds(make(), _REPEATS.value, bfloat16=dtype == "bfloat16")
      if torch_seconds is not None:
        which = "bfloat16 autocast" if dtype == "bfloat16" else "float32"
        rows.append(
          [
            f"  PyTorch eager, same step, {which}",
            f"{torch_seconds:.2f}",
            f"{result['views'] / torch_seconds:.1f}",
            "",
            f"(JAX {torch_seconds / result['seconds']:.2f}x)",
          ]
        )
        print(
          f"  {name}: JAX {torch_seconds / result['seconds']:.2f}x PyTorch eager's views/s", flush=True
        )
  print(common.markdown_table(["case", "s/step", "views/s", "model GFLOP/step", "MFU"], rows))


def _torch_available() -> bool:
  try:
    import torch  # noqa: F401
  except ImportError:
    return False
  return True


def _torch_seconds(config, repeats: int, bfloat16: bool) -> float | None:
  """Seconds per step of the PyTorch eager reference of `config`'s step (None without torch)."""
  if not _torch_available():
    return None
  from lejepa_jax.bench import torch_reference

  if config.model.name == "vit":
    return torch_reference.vit_step_seconds(config, repeats=repeats, bfloat16=bfloat16)
  return torch_reference.resnet_step_seconds(config, repeats=repeats)
