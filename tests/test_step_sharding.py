"""The compiled train step keeps the train state's layout: what goes in sharded comes out sharded
the same way, step after step (FSDP parameters stay split, nothing is gathered onto one device)."""

import helpers
import jax
import numpy as np
import pytest
from flax import nnx
from helpers import tiny_config
from jax.sharding import PartitionSpec as P

from lejepa_jax.scale import program_cache, sharding
from lejepa_jax.training import steps, train_state


@pytest.mark.slow
def test_the_compiled_step_keeps_the_shardings_of_the_state(devices, data_dir):
  config = tiny_config(data_dir, 2)  # mesh data 4 x fsdp 2 on the 8 simulated devices
  mesh = sharding.make_mesh(dict(config.mesh.axes), config.mesh.axis_type)
  graphdef, state = nnx.split(
    sharding.create_sharded(lambda: train_state.build_train_objects(config), mesh)
  )
  compiled = steps.compile_train_step(config, mesh, graphdef, state, config.data.global_batch_size)
  given = jax.tree.map(lambda x: x.sharding, state)
  state_out, metrics_out = compiled.output_shardings
  assert jax.tree.structure(state_out) == jax.tree.structure(given)
  for x, got in zip(jax.tree.leaves(state), jax.tree.leaves(state_out)):
    assert got.is_equivalent_to(x.sharding, x.ndim), (x.sharding, got)
  # Some parameters really are split over fsdp (the check above is not about replicated arrays).
  specs = [s.spec for s in jax.tree.leaves(given)]
  assert any("fsdp" in jax.tree.leaves(tuple(spec)) for spec in specs), specs
  assert all(s.spec == P() for s in jax.tree.leaves(metrics_out))
  # And a step run for real returns arrays laid out as they went in.
  spec = steps.abstract_batch(config, mesh, config.data.global_batch_size)
  rng = np.random.default_rng(0)
  batch = {
    k: jax.device_put(rng.integers(0, 255, s.shape).astype(s.dtype), s.sharding) for k, s in spec.items()
  }
  with jax.set_mesh(mesh):
    new_state, _ = compiled(state, batch, jax.random.key(0))
  for want, x in zip(jax.tree.leaves(given), jax.tree.leaves(new_state)):
    assert x.sharding.is_equivalent_to(want, x.ndim), (want, x.sharding)


def _host_copy(x: jax.Array) -> np.ndarray:
  """A NumPy copy of an array (of a typed PRNG key array: its raw key data)."""
  return np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)


@pytest.mark.slow
def test_a_process_compiles_one_program_once_and_each_run_gets_fresh_arrays(devices, data_dir):
  config = tiny_config(data_dir, 2)
  mesh = sharding.make_mesh(dict(config.mesh.axes), config.mesh.axis_type)

  def create(c):
    build = lambda: train_state.build_train_objects(c)
    return nnx.split(sharding.create_sharded(build, mesh, cache_key=program_cache.program_key(c)))

  graphdef, first = create(config)
  compiled = steps.compile_train_step(config, mesh, graphdef, first, config.data.global_batch_size)
  with helpers.TraceCounter() as traced:
    graphdef, second = create(config)
    again = steps.compile_train_step(config, mesh, graphdef, second, config.data.global_batch_size)
  assert traced.count == 0 and again is compiled
  # The initialiser ran again: equal values in buffers of their own, so donating one state to the
  # step leaves the other intact.
  spec = steps.abstract_batch(config, mesh, config.data.global_batch_size)
  batch = {k: jax.device_put(np.zeros(s.shape, s.dtype), s.sharding) for k, s in spec.items()}
  kept = jax.tree.map(_host_copy, second)
  with jax.set_mesh(mesh):
    compiled(first, batch, jax.random.key(0))
  for x, y in zip(jax.tree.leaves(kept), jax.tree.leaves(second), strict=True):
    np.testing.assert_array_equal(x, _host_copy(y))
  # Another config is another program, traced and compiled anew.
  other = tiny_config(data_dir, 2)
  other.optim.lr *= 2
  with helpers.TraceCounter() as traced:
    graphdef, state = create(other)
    changed = steps.compile_train_step(other, mesh, graphdef, state, other.data.global_batch_size)
  assert traced.count > 0 and changed is not compiled
