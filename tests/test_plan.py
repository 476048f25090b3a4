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
  trained = sharding.create_sharded(lambda: train_state.build_train_objects(config), mesh)
  real = {
    name: max(
      sharding.bytes_per_device(
        train_state.to_savable(nnx.to_pure_dict(nnx.state(getattr(trained, name))))
      ).values()
    )
    for name in train_state.FIELDS
  }
  planned = memory_plan.state_bytes(config, {"data": 1, "fsdp": 8})
  assert planned == {
    "model": real["model"],
    "optimizer": real["optimizer"],
    "probe": real["probe"] + real["probe_optimizer"],
  }
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


def test_a_program_xla_refuses_for_the_chips_memory_is_planned_as_not_fitting():
  """libtpu refuses to compile a step whose temporaries exceed the chip (ConvNeXt-V2-H at 64 images
  per v5p chip); the plan reports XLA's figure as a lower bound, fitting nowhere, not a traceback."""
  refusal = (
    "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
    "(244.21G) exceeds available HBM (95.74G)."
  )
  assert memory_plan.refused_temporaries(refusal) == round(244.21 * GIB)
  assert memory_plan.refused_temporaries(refusal.replace("(244.21G)", "(512.5M)")) == 512.5 * 2**20
  assert memory_plan.refused_temporaries("INTERNAL: something else") is None
  state = {"model": GIB, "optimizer": 2 * GIB, "probe": 0}
  refused = memory_plan.Compiled(round(244.21 * GIB), None, None)
  plan = memory_plan.Plan("none", state, batch=0, temporaries=refused.temporaries, compiled=refused)
  assert not any(plan.fits().values())
  table = memory_plan.format_plans([plan], "header")
  assert "> 244.21" in table and "> 247.21" in table, table


def test_program_cost_counts_a_two_layer_mlp_gradient_as_hand_arithmetic():
  """Forward x@W1, relu, @W2: 2BIH + 2BHO; the weights' gradients add dW2, dH and dW1: 2BHO + 2BHO +
  2BIH. The rest (relu, its mask, the squares and sum) is O(BH), under 1% here. (The loss squares the
  output so that its gradient is data, not a constant JAX folds into a cheaper program.)"""
  import jax
  import jax.numpy as jnp

  from lejepa_jax.scale import cost_plan

  b, i, h, o = 64, 256, 512, 128
  loss = lambda w1, w2, x: 0.5 * jnp.sum((jax.nn.relu(x @ w1) @ w2) ** 2)
  spec = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  cost = cost_plan.program_cost(jax.grad(loss, argnums=(0, 1)), (spec(i, h), spec(h, o), spec(b, i)), b)
  hand = 4 * b * i * h + 6 * b * h * o
  assert hand <= cost.flops <= 1.01 * hand
  assert cost.bytes_accessed >= 4 * (i * h + h * o + b * i)  # reads every input at least once


@pytest.mark.slow
def test_train_step_flops_grow_linearly_with_the_batch():
  """Every per-example term (encoder, projector, SIGReg's N x M x knots, the probe) is linear in
  the batch: equal increments between batches 8, 16 and 24 (the optimizer's cost is the offset)."""
  from lejepa_jax.scale import cost_plan

  costs = []
  for batch in (8, 16, 24):
    config = _tiny_config()
    config.data.global_batch_size = batch
    costs.append(cost_plan.train_step_cost(config))
  assert [c.global_batch for c in costs] == [8, 16, 24]
  step = costs[1].flops - costs[0].flops
  assert step > 0 and costs[2].flops - costs[1].flops == pytest.approx(step, rel=1e-6)
  assert costs[0].flops - step > 0  # the batch-independent part (optimizer update, ...) is positive


def test_run_estimate_is_the_roofline_by_hand():
  from lejepa_jax.scale import cost_plan

  chip = cost_plan.Chip("test chip", peak_flops=100e12, memory_bandwidth=1e12, memory_gib=16)
  cost = cost_plan.StepCost(flops=8e14, bytes_accessed=1e13, global_batch=512)
  run = cost_plan.estimate(cost, 1000, chip, devices=8, mfu=0.5, worker_images_per_s=100)
  assert run.compute_seconds == pytest.approx(8e14 / (8 * 100e12 * 0.5))  # 2 s
  assert run.step_seconds == pytest.approx(2.0) and run.bound == "compute (assumed)"
  assert run.run_hours == pytest.approx(1000 * 2.0 / 3600)
  assert run.images_per_s == pytest.approx(256) and run.workers == 3  # ceil(256 / 100)
  # A compiled program moving 3e12 bytes per device takes 3 s at 1e12 bytes/s: memory-bound.
  slow = cost_plan.estimate(cost, 1000, chip, 8, 0.5, 100, bytes_per_device=3e12)
  assert slow.step_seconds == pytest.approx(3.0) and slow.bound == "memory"
  assert slow.workers == 2  # ceil(512 / 3 / 100)
  with pytest.raises(ValueError, match="MFU"):
    cost_plan.estimate(cost, 1000, chip, 8, mfu=1.5)
  table = cost_plan.format_estimate(cost, 1000, [run, slow])
  assert "8 x test chip" in table and "2.000" in table and "3.000" in table


@pytest.mark.slow
def test_plan_command_prints_the_cost_of_a_paper_config(capsys):
  from lejepa_jax import plan

  plan.main(["--config=configs/paper/cifar10.py", "--mesh=data:8", "--cost_only", "--chips=h100,v5p"])
  out = capsys.readouterr().out
  assert "8 x H100 SXM" in out and "8 x TPU v5p" in out and "CPU input workers" in out
  # ResNet-18 at 224 px, 8 views: about 1.8 GMAC forward per view; training about 3x forward.
  per_image = float(out.split("TFLOP for 512 images (")[1].split(" GFLOP")[0])
  assert 8 * 3 * 2 * 1.8 * 0.8 < per_image < 8 * 3 * 2 * 1.8 * 1.2
