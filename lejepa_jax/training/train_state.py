"""The train state by name (`TrainState`: model, optimizer, probe, probe_optimizer), what
`build_train_objects` makes, and how it is saved (plain arrays, fields at fixed positions) and
restored (abstract targets)."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from lejepa_jax import models
from lejepa_jax.models import probe as probe_lib
from lejepa_jax.training import optimizers

# The fields of the train state, in the order a checkpoint holds them: a checkpoint keeps field i at
# the top-level key i of its saved state (the saved format since the first version, when the state
# was a tuple), so every checkpoint ever written restores into the named state.
FIELDS = ("model", "optimizer", "probe", "probe_optimizer")


class TrainState(nnx.Module):
  """Everything a training step reads and writes, by name.

  model: the encoder (backbone + projector); optimizer: its nnx.Optimizer (AdamW, the schedule's
  step count); probe: the online linear probe on stop-gradient features; probe_optimizer: its own.
  `nnx.split(train_state)` gives a State with these four keys.
  """

  def __init__(self, model: nnx.Module, optimizer: nnx.Optimizer, probe: nnx.Module, probe_optimizer):
    self.model, self.optimizer = model, optimizer
    self.probe, self.probe_optimizer = probe, probe_optimizer


def build_train_objects(config: ml_collections.ConfigDict, seed: int | jax.Array | None = None):
  """The TrainState of `config` at step 0; create it with sharding.create_sharded.

  `seed` (an int, or a traced scalar to initialise many models under vmap) replaces config.seed.
  """
  seed = config.seed if seed is None else seed
  model = models.build_encoder(config.model.to_dict(), models.make_rngs(jax.random.key(seed)))
  optimizer = nnx.Optimizer(model, optimizers.make_optimizer(config), wrt=nnx.Param)
  probe = probe_lib.LinearProbe(model.feature_dim, config.probe.num_classes, rngs=nnx.Rngs(1))
  probe_tx = optax.adamw(config.optim.probe_lr, weight_decay=config.optim.probe_weight_decay)
  return TrainState(model, optimizer, probe, nnx.Optimizer(probe, probe_tx, wrt=nnx.Param))


def saved_key(field: str) -> int:
  """The top-level key of `field` in a checkpoint's saved state (see FIELDS)."""
  return FIELDS.index(field)


def _by_position(tree):
  """A train state's pure dict by field name -> by saved position; any other tree unchanged."""
  if isinstance(tree, Mapping) and set(tree) == set(FIELDS):
    return {saved_key(name): tree[name] for name in FIELDS}
  return tree


def _by_name(saved, like):
  """Inverse of _by_position where `like` is a train state's pure dict by field name."""
  if isinstance(like, Mapping) and set(like) == set(FIELDS):
    return {name: saved[saved_key(name)] for name in FIELDS}
  return saved


def to_savable(tree):
  """The saved form of a pure-dict tree: a train state's fields at their positions (FIELDS), typed
  PRNG keys as their raw uint32 data (checkpoints hold plain arrays)."""
  return jax.tree.map(
    lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x,
    _by_position(tree),
  )


def from_savable(saved, like):
  """Inverse of to_savable: a train state's fields back by name, raw key data back to typed keys
  where `like` (the pure dict restored into) holds keys."""
  return jax.tree.map(
    lambda s, l: jax.random.wrap_key_data(s) if jnp.issubdtype(l.dtype, jax.dtypes.prng_key) else s,
    _by_name(saved, like),
    like,
  )


def abstract_tree(tree):
  """ShapeDtypeStructs (with shardings) of a tree of arrays: an orbax restore target."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
