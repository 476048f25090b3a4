"""Trace and lowering time of full-size train steps: what a job spends before XLA compiles.

Each config's train step is traced and lowered by `jax.export` for `--platforms` (default GPUs and
TPUs) on a mesh of this host's devices (nothing is allocated or compiled; `XLA_FLAGS=
--xla_force_host_platform_device_count=8` lowers for 8), twice, each from cleared caches: as
lejepa_jax runs it, with the blocks of one graph (a ViT's blocks, a ConvNeXt stage's) traced once
(`models.layers.remat_call`), and with every block traced on its own
(`models.layers.each_block_traced`), the baseline. Reports both times, the speed-up and the size of
the StableHLO each produces.

    python -m lejepa_jax.bench lower [--configs=configs/paper/in1k_vit_g14.py,...] [--platforms=cuda,tpu]
"""

from __future__ import annotations

import copy
import json
import math
import time

import jax
import ml_collections
from absl import flags

from lejepa_jax import cli, config_lib
from lejepa_jax.bench import common
from lejepa_jax.models import layers
from lejepa_jax.training import steps

DEFAULT_CONFIGS = (
  "configs/paper/in1k_vit_g14.py",
  "configs/paper/in1k_vit_h14.py",
  "configs/paper/in1k_vit_l14.py",
  "configs/paper/in1k_convnextv2_h.py",
)

_PROG = "python -m lejepa_jax.bench lower"
_FLAGS = flags.FlagValues()  # this benchmark's own flags (`lejepa_jax.cli`)
_CONFIGS = flags.DEFINE_list(
  "configs", list(DEFAULT_CONFIGS), "config files (path[:arg]), comma-separated", flag_values=_FLAGS
)
_PLATFORMS = flags.DEFINE_list(
  "platforms", ["cuda", "tpu"], "platforms to lower for", flag_values=_FLAGS
)
_JSON = flags.DEFINE_string("json", None, "also write the results to this JSON file", flag_values=_FLAGS)


def on_this_host(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` at full size on a mesh of this host's devices: FSDP kept up to the device count, one
  image per device (the program's size does not depend on the batch)."""
  config = copy.deepcopy(config)
  devices = jax.device_count()
  with config.unlocked():
    config.mesh.axes = dict(data=-1, fsdp=math.gcd(config.mesh.axes.get("fsdp", 1), devices))
    config.mesh.dcn_axes = dict(data=1)
    config.data.global_batch_size = devices
  return config


def lowering(config: ml_collections.ConfigDict, platforms: list[str]) -> tuple[float, int]:
  """(seconds to trace and lower the train step from cleared caches, bytes of its StableHLO)."""
  jax.clear_caches()
  start = time.perf_counter()
  exported = steps.export_train_step(config, platforms)
  return time.perf_counter() - start, len(exported.mlir_module_serialized)


def load(name: str) -> ml_collections.ConfigDict:
  """A config named as on the command line (path[:arg]), on this host (`on_this_host`)."""
  path, _, arg = name.partition(":")
  return on_this_host(config_lib.load_config_file(path, arg or None))


def run_case(name: str, platforms: list[str]) -> dict:
  config = load(name)
  seconds, size = lowering(config, platforms)
  with layers.each_block_traced():
    each_seconds, each_size = lowering(config, platforms)
  model = f"{config.model.name} {config.model.variant}"
  return dict(config=name, model=model, seconds=seconds, bytes=size, each_block_seconds=each_seconds,
              each_block_bytes=each_size)  # fmt: skip


def format_rows(results: list[dict]) -> str:
  header = ["config", "model", "blocks traced once s", "every block traced s", "speed-up",
            "StableHLO MB (once / every)"]  # fmt: skip
  rows = [
    [
      r["config"],
      r["model"],
      f"{r['seconds']:.1f}",
      f"{r['each_block_seconds']:.1f}",
      f"{r['each_block_seconds'] / r['seconds']:.1f}x",
      f"{r['bytes'] / 1e6:.2f} / {r['each_block_bytes'] / 1e6:.2f}",
    ]
    for r in results
  ]
  return common.markdown_table(header, rows)


def main(argv: list[str] | None = None) -> None:
  """The command line (module docstring); `argv` without the program name, None: sys.argv[1:]."""
  cli.parse(_FLAGS, argv, prog=_PROG, doc=__doc__)
  platforms = _PLATFORMS.value
  print(f"# Train steps traced and lowered for {','.join(platforms)} ({common.machine_description()})")
  lowering(load(_CONFIGS.value[0]), platforms)  # warm-up: imports and one-time set-up, not timed
  results = []
  for name in _CONFIGS.value:
    results.append(run_case(name, platforms))
    print(f"  done {name}", flush=True)
  print(format_rows(results))
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({"machine": common.machine_description(), "results": results}, f, indent=1)
