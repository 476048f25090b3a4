"""Memory planning: exact state bytes against real sharded arrays, slice shapes, the plan table.

The compiled temporaries need libtpu and minutes of compilation; they are not exercised here.
"""

import os

import pytest
from flax import nnx

from lejepa_jax import config_lib
from lejepa_jax.models import vit
from lejepa_jax.scale import memory_plan, sharding
from lejepa_jax.training import train_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 2**30


def _tiny_config():
  return config_lib.load_config_file(os.path.join(ROOT, "tests", "tiny_config.py"))


@pytest.mark.slow
def test_state_bytes_equal_the_real_sharded_train_state(devices):
  config = _tiny_config()
  mesh = sharding.make_mesh({"data": 1, "fsdp": 8})
  objects = sharding.create_sharded(lambda: train_state.build_train_objects(config), mesh)
  real = [
    max(sharding.bytes_per_device(train_state.to_savable(nnx.to_pure_dict(nnx.state(o)))).values())
    for o in objects
  ]
  planned = memory_plan.state_bytes(config, {"data": 1, "fsdp": 8})
  assert planned == {"model": real[0], "optimizer": real[1], "probe": real[2] + real[3]}
  # A data axis replicates the state: a 32 x 8 pod holds the same bytes per device.
  assert memory_plan.state_bytes(config, {"data": 32, "fsdp": 8}) == planned
  unsharded = memory_plan.state_bytes(config, {"data": 8})
  assert unsharded["model"] > planned["model"] and unsharded["optimizer"] > planned["optimizer"]


def test_batch_bytes_and_plan_config_follow_the_recipe():
  config = config_lib.load_config_file(os.path.join(ROOT, "configs", "vit_h.py"))
  axes = {"data": 32, "fsdp": 8}
  planned = memory_plan.plan_config(config, axes, None, "full")
  assert planned.data.global_batch_size == 512 and planned.model.dtype == "bfloat16"
  assert planned.model.remat == "full" and dict(planned.mesh.axes) == axes
  # 2 images per device: 2 global views 224^2 and 6 local views 98^2, RGB uint8, int32 label.
  assert memory_plan.batch_bytes(planned, 2) == 2 * (2 * 224**2 * 3 + 6 * 98**2 * 3 + 4)
  assert memory_plan.plan_config(config, axes, 4, "none").data.global_batch_size == 1024
  with pytest.raises(ValueError, match="does not split"):
    memory_plan.plan_config(config, {"data": 3}, None, "none")


@pytest.mark.parametrize(
  "generation, chips, expected",
  [
    ("v5p", 256, "v5p:4x8x8"),
    ("v5p", 64, "v5p:4x4x4"),
    ("v4", 4, "v4:2x2x1"),
    ("v4", 16, "v4:2x2x4"),
    ("v5e", 8, "v5e:2x4"),
    ("v5e", 256, "v5e:16x16"),
  ],
)
def test_tpu_slice_shapes(generation, chips, expected):
  assert memory_plan.tpu_topology(generation, chips) == expected


def test_bad_meshes_and_slices_are_refused():
  assert memory_plan.parse_mesh("data:32,fsdp:8") == {"data": 32, "fsdp": 8}
  for text in ("data=32", "data:-1", "data:32,fsdp"):
    with pytest.raises(ValueError, match="name:size"):
      memory_plan.parse_mesh(text)
  with pytest.raises(ValueError, match="power-of-two"):
    memory_plan.tpu_topology("v5p", 96)


def test_reduced_depth_vit_and_the_linear_extrapolation():
  config = config_lib.load_config_file(os.path.join(ROOT, "configs", "vit_l.py"))
  with memory_plan.vit_depth(config, 3) as reduced:
    size, patch = vit.parse_variant(reduced.model.variant)
    assert (size.depth, size.width, patch) == (3, 1024, 14)
  assert config.model.variant == "L/14" and not any(k.startswith("PlanDepth") for k in vit.VIT_SIZES)
  assert memory_plan.extrapolate((2, 4), (840, 1462), 24) == 1462 + 20 * 311


def test_plan_table_says_which_accelerators_fit():
  state = {"model": 10 * GIB, "optimizer": 20 * GIB, "probe": 0}
  big = memory_plan.Plan("none", state, batch=0, temporaries=20 * GIB)  # 50 GiB in all
  small = memory_plan.Plan("full", state, batch=0, temporaries=0)  # 30 GiB: 94% of a v4's 32 GiB
  assert big.fits() == {
    "TPU v4": False,
    "TPU v5p": True,
    "TPU v5e": False,
    "H100": True,
    "A100 40GB": False,
    "A100 80GB": True,
  }
  assert small.fits()["TPU v4"] and not small.fits()["TPU v5e"]
  tight = memory_plan.Plan("full", state, batch=0, temporaries=int(1.0 * GIB))  # 31 GiB: 97% of a v4
  assert not tight.fits()["TPU v4"]
  table = memory_plan.format_plans([big, small], "header")
  assert "50.00" in table and "30.00" in table
  fits_v4 = next(line for line in table.splitlines() if line.startswith("fits TPU v4"))
  assert fits_v4.split()[-2:] == ["no", "yes"]
  unknown = memory_plan.format_plans([memory_plan.Plan("none", state, 0, None)], "header")
  assert "n/a" in unknown and "fits" not in unknown
