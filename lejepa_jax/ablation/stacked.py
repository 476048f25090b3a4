"""The members' stacked state and the vmapped step: one program trains every member of a group."""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lejepa_jax import data
from lejepa_jax.ablation import sweep_plan
from lejepa_jax.evaluation import extraction
from lejepa_jax.models import members as members_lib
from lejepa_jax.scale import compiler, program_cache, sharding
from lejepa_jax.training import optimizers, steps, train_state

MEMBER_AXIS = "member"


def make_mesh(config: ml_collections.ConfigDict, member_shards: int) -> jax.sharding.Mesh:
  """The config's mesh with a trailing "member" axis of size `member_shards`.

  Trailing: devices are laid out in process order, so the leading axes are the ones that cross
  processes. The data axis must be among them (each process feeds its own block of the batch, as
  in training); members are sharded over each process's own devices.
  """
  axes = {**dict(config.mesh.axes), MEMBER_AXIS: member_shards}
  return sharding.make_mesh(axes, config.mesh.axis_type, dcn_axes=dict(config.mesh.get("dcn_axes", {})))


def padded(members: Sequence[sweep_plan.Member], multiple: int) -> list[sweep_plan.Member]:
  """`members` plus copies of the last one up to a multiple of `multiple` (the member shards)."""
  return list(members) + [members[-1]] * (-len(members) % multiple)


def init_stacked_state(config: ml_collections.ConfigDict, seeds: Sequence[int], mesh: jax.sharding.Mesh):
  """(graphdef, state with a leading member axis): member i initialised exactly as a single run
  with seed seeds[i] initialises, all in one vmapped program.

  Each leaf keeps a single run's layout on the other mesh axes; the member axis is sharded over
  the mesh's "member" axis. The optimizer state holds no lr or weight decay, so members differing
  only in those start from the same state.
  """
  key = program_cache.program_key(config, "init_stacked_state", len(seeds), mesh)
  # A copy: a kept initialiser must not see later changes to the caller's config object.
  snapshot = copy.deepcopy(config)
  graphdef, init = program_cache.built(key, lambda: _stacked_initialiser(snapshot, mesh))
  with jax.set_mesh(mesh):
    return graphdef, init(jnp.asarray(seeds, jnp.int32))


def _stacked_initialiser(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """(graphdef, jitted seeds [M] -> stacked state) for init_stacked_state."""
  graphdef, single = sharding.abstract_state(lambda: train_state.build_train_objects(config), mesh)
  target = jax.tree.map(lambda x: NamedSharding(mesh, P(MEMBER_AXIS, *x.sharding.spec)), single)

  @functools.partial(jax.jit, out_shardings=target)
  def init(seeds):
    with nnx.use_eager_sharding(False):
      return jax.vmap(lambda seed: nnx.state(train_state.build_train_objects(config, seed)))(seeds)

  return graphdef, init


def member_extractor(stacked, mesh: jax.sharding.Mesh):
  """`extract(stacked, i)`: member i's state, laid out as a single run's (one compiled program)."""
  single = jax.tree.map(lambda x: NamedSharding(mesh, P(*x.sharding.spec[1:])), stacked)
  return jax.jit(lambda s, i: jax.tree.map(lambda x: x[i], s), out_shardings=single)


def stacked_hparams(
  members: Sequence[sweep_plan.Member], mesh: jax.sharding.Mesh
) -> dict[str, jax.Array]:
  """{"sigreg_weight", "lr", "weight_decay": float32 [M], "seed": int32 [M]}, sharded by member."""
  values = [m.hparams() for m in members]
  placed = NamedSharding(mesh, P(MEMBER_AXIS))
  return {
    k: jax.device_put(
      np.asarray([v[k] for v in values], np.int32 if k == "seed" else np.float32), placed
    )
    for k in values[0]
  }


def member_step(graphdef, config: ml_collections.ConfigDict, state, hparams, batch, step):
  """One member's `steps.train_step` with its traced lambda, lr, weight decay and seed.

  Under `jax.vmap` over (state, hparams) this is every member's step; `step` is a traced int32.
  """
  key = jax.random.fold_in(jax.random.key(hparams["seed"]), step)
  options = steps.step_options(config)
  options["loss_config"] = dict(options["loss_config"], sigreg_weight=hparams["sigreg_weight"])
  tx = optimizers.make_optimizer(config, lr=hparams["lr"], weight_decay=hparams["weight_decay"])
  return steps.train_step(graphdef, state, batch, key, tx=tx, **options)


def compile_members_step(
  config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, graphdef, stacked, hparams
):
  """The vmapped step, jitted with the stacked state donated and its layout kept, compiled ahead
  of time. Call as `compiled(stacked, hparams, batch, np.int32(step))` -> (stacked, metrics [M]).

  The metrics come back replicated (a few numbers per member) so that every process can read them.
  """
  local_batch = data.pipeline.local_batch_size(config.data.global_batch_size, jax.process_count())
  arguments = (
    train_state.abstract_tree(stacked),
    train_state.abstract_tree(hparams),
    steps.abstract_batch(config, mesh, local_batch),
    jax.ShapeDtypeStruct((), jnp.int32),
  )

  def lower():
    vstep = jax.vmap(functools.partial(member_step, graphdef, config), in_axes=(0, 0, None, None))
    state_shardings = jax.tree.map(lambda x: x.sharding, stacked)
    replicated = NamedSharding(mesh, P())
    jitted = jax.jit(vstep, donate_argnums=0, out_shardings=(state_shardings, replicated))
    with jax.set_mesh(mesh), members_lib.member_convolutions(config.member_convolutions):
      return jitted.lower(*arguments)

  key = program_cache.program_key(config, "members_step", arguments)
  compiled = program_cache.compiled(key, lower, compiler.options(config))
  steps.log_compiled_memory(compiled, "members step")
  return compiled


def evaluate_members(
  graphdef, stacked, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, examples: int
) -> dict[str, np.ndarray]:
  """Every member on the first `examples` of the eval split (centre crops), in eval mode.

  Returns {"features": [M, n, F] backbone features (what probes read), "projections": [M, n, K],
  "predictions": [M, n] online-probe classes, "labels": [n]}.
  """
  mean, std = tuple(config.data.mean), tuple(config.data.std)

  def forward(state, images):
    trained = nnx.merge(graphdef, state)
    trained.model.eval()
    features, projections = trained.model(data.normalize(images, mean, std))
    return features, projections, jnp.argmax(trained.probe(features), -1)

  # Replicated results: every process runs the program and can read them.
  run = jax.jit(jax.vmap(forward, in_axes=(0, None)), out_shardings=NamedSharding(mesh, P()))
  out: dict[str, list] = {"features": [], "projections": [], "predictions": [], "labels": []}
  with jax.set_mesh(mesh), members_lib.member_convolutions(config.member_convolutions):
    for batch in extraction.eval_batches(config, config.data.eval_split, examples):
      valid = batch["valid"]
      for name, value in zip(
        ("features", "projections", "predictions"), jax.device_get(run(stacked, batch["image"]))
      ):
        out[name].append(np.asarray(value)[:, valid])
      out["labels"].append(batch["label"][valid])
  return {k: np.concatenate(v, axis=0 if k == "labels" else 1) for k, v in out.items()}
