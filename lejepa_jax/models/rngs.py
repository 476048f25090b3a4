"""Random-key streams for building and running the encoders: flax's `nnx.Rngs`, drawing the same
keys, with a counter update whose tracing cost does not grow with the program traced so far.

flax 0.12.8's `RngStream.__call__` bumps its counter with `count[...] += 1`. Under a trace, that
indexed update compares the new counter's `sharding` with the old one's; a tracer has none, and the
AttributeError JAX raises for it describes where the tracer came from by searching every equation
traced so far. One key per parameter at initialisation and one per drop-path branch in a step
make that quadratic in the model's depth. Measured on the 2-core AMD EPYC (jax 0.10.2):
`jax.eval_shape` of the ViT-g/14 encoder's initialisation 4.7 -> 1.0 s; tracing the ViT-L/14 train
step, 423 draws, spent 7.5 of its 24 s in those updates. Replacing the counter whole
(`count.set_value(count + 1)`) skips the comparison; the keys and counters are the same values.
"""

from __future__ import annotations

import jax
from flax import nnx


class RngStream(nnx.RngStream):
  """`nnx.RngStream` (key `fold_in(key, count)`, then count + 1) with a whole-value counter update;
  `split`, `fork` and `broadcast` build streams of this class too."""

  def __call__(self) -> jax.Array:
    self.count._check_can_update()
    key = jax.random.fold_in(self.key[...], self.count[...])
    self.count.set_value(self.count[...] + 1)
    return key


def make_rngs(seed: int | jax.Array) -> nnx.Rngs:
  """`nnx.Rngs(seed)`, the same keys, its default stream (which `params`, `dropout` and every other
  stream name falls back to) an :class:`RngStream`.

  Args:
    seed: an int, or a key (possibly traced, e.g. a batch of keys under `jax.vmap`).
  """
  rngs = nnx.Rngs(seed)
  rngs.default = RngStream(rngs.default.key.get_value(), tag="default")
  return rngs
