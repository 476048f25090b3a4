"""The benchmarks' op-time breakdown files each op of a compiled program under what it computes."""

import jax
import jax.numpy as jnp
import numpy as np

from lejepa_jax.bench import profile


def _program(x, w, m):
  """A convolution, a matrix product and elementwise work, kept apart by their outputs."""
  conv = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return conv, m @ m, jnp.tanh(m) * 3.0


def test_breakdown_attributes_time_to_each_kind_of_op():
  rng = np.random.default_rng(0)
  args = (
    rng.standard_normal((32, 16, 16, 8), np.float32),
    rng.standard_normal((3, 3, 8, 8), np.float32),
    rng.standard_normal((256, 256), np.float32),
  )
  compiled = jax.jit(_program).lower(*args).compile()
  kinds = profile.hlo_op_kinds(compiled.as_text())
  # Every instruction is classified, and the program holds one of each kind.
  assert set(kinds.values()) == set(profile.KINDS)
  totals = profile.op_time_breakdown(compiled, lambda: jax.block_until_ready(compiled(*args)))
  assert all(totals[kind] > 0 for kind in profile.KINDS), totals
  assert "convolution" in profile.shares_text(totals)


def test_a_loop_is_not_counted_twice_and_its_body_ops_are():
  def looped(m):
    return jax.lax.fori_loop(0, 3, lambda i, x: jnp.tanh(x @ m), m)

  m = np.random.default_rng(1).standard_normal((128, 128), np.float32)
  compiled = jax.jit(looped).lower(m).compile()
  kinds = profile.hlo_op_kinds(compiled.as_text())
  loops = [name for name, kind in kinds.items() if kind == "container"]
  assert loops and all(name.startswith("while") for name in loops), kinds
  assert "product" in kinds.values()  # the product inside the body is still classified
