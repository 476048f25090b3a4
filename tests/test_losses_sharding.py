"""The objective under a batch-sharded jit on 8 simulated devices, in Auto and Explicit mesh modes."""

import re

import jax
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from lejepa_jax import losses

AXIS_TYPES = [AxisType.Auto, AxisType.Explicit]
OTHER_COLLECTIVES = ("all-gather", "all-to-all", "collective-permute", "reduce-scatter")


def _mesh(axis_type):
  return jax.make_mesh((8,), ("data",), axis_types=(axis_type,))


def _loss_fn(views):
  def loss(z, key):
    return losses.lejepa_loss(
      z, key, num_global=2, sigreg_weight=0.05, num_slices=128, sigreg_views=views
    )

  return jax.jit(jax.value_and_grad(loss, has_aux=True))


def _embeddings(n):
  return jax.random.normal(jax.random.key(n), (n, 4, 32)) * 1.2 + 0.1


def _all_reduce_shapes(hlo: str) -> list[str]:
  return sorted(re.findall(r"= (.+?) all-reduce(?:-start)?\(", hlo))


@pytest.mark.parametrize("axis_type", AXIS_TYPES)
@pytest.mark.parametrize("views", ["per_view", "pooled"])
@pytest.mark.slow
def test_sharded_loss_and_gradients_equal_unsharded(devices, axis_type, views):
  z, key = _embeddings(64), jax.random.key(3)
  step = _loss_fn(views)
  (loss, parts), grad = step(z, key)
  mesh = _mesh(axis_type)
  with jax.set_mesh(mesh):
    z_sharded = jax.device_put(z, NamedSharding(mesh, P("data")))
    (s_loss, s_parts), s_grad = step(z_sharded, key)
  assert len(z_sharded.sharding.device_set) == 8
  np.testing.assert_allclose(s_loss, loss, rtol=1e-5)
  np.testing.assert_allclose(s_parts["sigreg"], parts["sigreg"], rtol=1e-5)
  np.testing.assert_allclose(s_grad, grad, rtol=1e-5, atol=1e-7)
  assert s_grad.sharding.spec[0] == "data"  # gradients stay sharded like the embeddings


@pytest.mark.parametrize("axis_type", AXIS_TYPES)
@pytest.mark.slow
def test_only_batch_size_independent_reductions_cross_devices(devices, axis_type):
  mesh = _mesh(axis_type)
  hlos = {}
  with jax.set_mesh(mesh):
    for n in (64, 256):
      z = jax.device_put(_embeddings(n), NamedSharding(mesh, P("data")))
      hlos[n] = _loss_fn("per_view").lower(z, jax.random.key(0)).compile().as_text()
  for n, hlo in hlos.items():
    for collective in OTHER_COLLECTIVES:
      assert collective not in hlo, f"{collective} found for N={n}"
  shapes = {n: _all_reduce_shapes(hlo) for n, hlo in hlos.items()}
  assert shapes[64], "the reduction over the sharded batch must be an all-reduce"
  assert shapes[64] == shapes[256], shapes
  for shape in shapes[64]:
    assert "64" not in shape and "256" not in shape, shape


@pytest.mark.parametrize("axis_type", AXIS_TYPES)
def test_directions_are_identical_on_every_device_without_communication(devices, axis_type):
  mesh = _mesh(axis_type)
  with jax.set_mesh(mesh):
    draw = jax.jit(
      lambda k: losses.random_directions(k, 32, 256), out_shardings=NamedSharding(mesh, P())
    )
    directions = draw(jax.random.key(11))
    hlo = draw.lower(jax.random.key(11)).compile().as_text()
  for collective in OTHER_COLLECTIVES + ("all-reduce",):
    assert collective not in hlo
  shards = [np.asarray(s.data) for s in directions.addressable_shards]
  assert len(shards) == 8
  for shard in shards[1:]:
    np.testing.assert_array_equal(shard, shards[0])
  np.testing.assert_allclose(
    shards[0], losses.random_directions(jax.random.key(11), 32, 256), rtol=1e-6
  )  # jit may fuse the normalisation differently from eager
