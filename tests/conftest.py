"""Test set-up: 8 simulated CPU devices, configured before JAX starts."""

import os
import tempfile

# The tests' programs compile at LLVM -O0: the suite spends most of its time compiling tiny
# programs that then run a few steps. Measured on the 2-core AMD EPYC, tests/test_evaluate.py with
# a cold cache: 87 s at XLA's default -O3, 58-61 s at -O0. Tests assert properties (equalities
# between two runs, references, bounds), never the bits of one optimisation level; the demo in
# .ci/run and every user run compile at the default level. Processes the tests start get the same
# flag (tests/helpers.py `xla_flags`, with their own device count; launch/local.sh passes it on).
#
# They also use XLA:CPU's older elemental emitters instead of its fusion emitters: the tiny ViT's
# train step compiles in 2.6 s instead of 4.2, tests/test_train.py and tests/test_models.py take
# 9% less time (cold cache, same machine).
#
# And they generate code in one piece: XLA:CPU splits each program's LLVM module into up to 32 parts
# compiled on parallel threads, which on 2 cores that both run tests only adds work. Measured on the
# 2-core AMD EPYC, tests/test_models.py and tests/test_paper_configs.py with a cold cache and 2
# workers: 246 CPU-seconds with one part against 265 with the default split (148 s against 159 s).
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "")
  + " --xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
  + " --xla_cpu_parallel_codegen_split_count=1"
  + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One on-disk compilation cache for the run's pytest workers and the processes tests start: many
# tests compile the same tiny programs (the cold cache took tests/test_train.py from 113 to 83 s).
# Every program is cached, not only those over JAX's default 1 s: at -O0 most compile faster.
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"lejepa_jax_tests_{os.getuid()}")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax
import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """A prepared TFDS dataset "unit_train": 32 random 20 px images in 4 class folders."""
  import cv2
  import numpy as np

  from lejepa_jax.data import prepare

  root = tmp_path_factory.mktemp("train_images")
  rng = np.random.default_rng(0)
  for i in range(32):
    (root / f"c{i % 4}").mkdir(exist_ok=True)
    cv2.imwrite(str(root / f"c{i % 4}" / f"{i}.png"), rng.integers(0, 256, (20, 20, 3), np.uint8))
  out = str(tmp_path_factory.mktemp("tfds"))
  prepare.prepare_image_folder("unit_train", str(root), out)
  return out


@pytest.fixture(scope="session")
def devices():
  devs = jax.devices()
  assert len(devs) == 8, "tests/conftest.py must run before anything imports jax"
  return devs


# Modules by their measured time on 2 cores, longest first (pytest --durations=0 on the full suite,
# cold compilation cache, the machine otherwise idle).
# launch/test.sh distributes whole modules over the workers (--dist loadscope: a module's fixtures,
# e.g. trained runs, are built once) in this order, so the long multi-process and end-to-end modules
# start at once and the short ones fill in around them instead of leaving one worker idle at the end.
LONGEST_FIRST = (
  "test_multihost",
  "test_paper_configs",
  "test_models",
  "test_train",
  "test_ablate",
  "test_timm_interop",
  "test_checkpoint_damage",
  "test_models_sharding_export",
  "test_evaluate",
  "test_finetune",
  "test_bench_commands",
  "test_configs",
  "test_normality",
  "test_sigreg",
  "test_lejepa_loss",
  "test_losses_sharding",
  "test_data",
  "test_plan",
)


def pytest_collection_modifyitems(config, items):
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  module = lambda item: os.path.splitext(os.path.basename(str(item.fspath)))[0]
  items.sort(key=lambda item: rank.get(module(item), len(rank)))  # stable: file order within
