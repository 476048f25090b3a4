"""The compiled train step keeps the train state's layout: what goes in sharded comes out sharded
the same way, step after step (FSDP parameters stay split, nothing is gathered onto one device)."""

import jax
import numpy as np
import pytest
from flax import nnx
from helpers import tiny_config
from jax.sharding import PartitionSpec as P

from lejepa_jax.scale import sharding
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
