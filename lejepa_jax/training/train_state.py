"""The train state: what `build_train_objects` makes and how it is saved (plain arrays) and
restored (abstract targets)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from lejepa_jax import models
from lejepa_jax.models import probe as probe_lib
from lejepa_jax.training import optimizers

# Positions in the tuple `build_train_objects` returns, which are also the top-level keys of a
# checkpoint's saved state (a tuple, so that checkpoints written since the first version stay
# readable).
MODEL, OPTIMIZER, PROBE, PROBE_OPTIMIZER = range(4)


def build_train_objects(config: ml_collections.ConfigDict, seed: int | jax.Array | None = None):
  """(model, its nnx.Optimizer, online probe, probe optimizer), at positions MODEL, OPTIMIZER,
  PROBE, PROBE_OPTIMIZER; create with sharding.create_sharded.

  `seed` (an int, or a traced scalar to initialise many models under vmap) replaces config.seed.
  """
  seed = config.seed if seed is None else seed
  model = models.build_encoder(config.model.to_dict(), nnx.Rngs(jax.random.key(seed)))
  optimizer = nnx.Optimizer(model, optimizers.make_optimizer(config), wrt=nnx.Param)
  probe = probe_lib.LinearProbe(model.feature_dim, config.probe.num_classes, rngs=nnx.Rngs(1))
  probe_tx = optax.adamw(config.optim.probe_lr, weight_decay=config.optim.probe_weight_decay)
  return model, optimizer, probe, nnx.Optimizer(probe, probe_tx, wrt=nnx.Param)


def to_savable(tree):
  """Typed PRNG keys -> their raw uint32 data (checkpoints hold plain arrays)."""
  return jax.tree.map(
    lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, tree
  )


def from_savable(saved, like):
  """Inverse of to_savable: raw key data back to typed keys where `like` holds keys."""
  return jax.tree.map(
    lambda s, l: jax.random.wrap_key_data(s) if jnp.issubdtype(l.dtype, jax.dtypes.prng_key) else s,
    saved,
    like,
  )


def abstract_tree(tree):
  """ShapeDtypeStructs (with shardings) of a tree of arrays: an orbax restore target."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
