"""Prediction term and the full LeJEPA objective against loop-based float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references as ref

from lejepa_jax import losses


@pytest.mark.parametrize("num_global", [1, 2, 4])
def test_prediction_loss_matches_loops(num_global):
  z = np.random.default_rng(num_global).standard_normal((5, 4, 7)).astype(np.float32)
  np.testing.assert_allclose(
    losses.prediction_loss(z, num_global), ref.prediction_loss(z, num_global), rtol=1e-6
  )


def test_prediction_loss_is_zero_iff_views_agree():
  same = np.repeat(np.random.default_rng(0).standard_normal((3, 1, 8)), 6, axis=1)
  assert float(losses.prediction_loss(same, 2)) == 0.0
  assert float(losses.prediction_loss(same + np.eye(6)[None, :, :1] * 0.1, 2)) > 0.0


def test_prediction_gradient_flows_through_the_global_mean():
  z = np.random.default_rng(1).standard_normal((3, 4, 2))
  got = jax.grad(lambda v: losses.prediction_loss(v, 2))(z.astype(np.float32))
  want = ref.numerical_gradient(lambda v: ref.prediction_loss(v, 2), z)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  # With a stop-gradient on the mean, the global views' gradient would differ: check it does not.
  stopped = jax.grad(
    lambda v: jnp.mean((jax.lax.stop_gradient(v[:, :2].mean(1, keepdims=True)) - v) ** 2)
  )(z.astype(np.float32))
  assert not np.allclose(got[:, :2], stopped[:, :2])


def _reference_lejepa(z, key, num_global, lam, num_slices, combine="convex", views="per_view"):
  directions = np.asarray(losses.random_directions(key, z.shape[-1], num_slices), np.float64)
  pred = ref.prediction_loss(z, num_global)
  if views == "per_view":
    reg = np.mean([ref.sigreg(z[:, v], directions) for v in range(z.shape[1])])
  else:
    reg = ref.sigreg(z.reshape(-1, z.shape[-1]), directions)
  total = (1 - lam) * pred + lam * reg if combine == "convex" else pred + lam * reg
  return total, pred, reg


@pytest.mark.parametrize("combine", ["convex", "sum"])
@pytest.mark.parametrize("views", ["per_view", "pooled"])
def test_lejepa_loss_matches_reference(combine, views):
  z = (np.random.default_rng(2).standard_normal((64, 6, 16)) * 1.3).astype(np.float32)
  key = jax.random.key(5)
  loss, parts = losses.lejepa_loss(
    z, key, num_global=2, sigreg_weight=0.05, num_slices=64, combine=combine, sigreg_views=views
  )
  total, pred, reg = _reference_lejepa(z, key, 2, 0.05, 64, combine, views)
  np.testing.assert_allclose(parts["pred"], pred, rtol=1e-5)
  np.testing.assert_allclose(parts["sigreg"], reg, rtol=1e-5)
  np.testing.assert_allclose(loss, total, rtol=1e-5)


@pytest.mark.slow
def test_lejepa_gradient_matches_finite_differences():
  z = np.random.default_rng(3).standard_normal((6, 3, 4))
  key = jax.random.key(1)
  directions = np.asarray(losses.random_directions(key, 4, 8), np.float64)
  lam = 0.3

  def reference(v):
    reg = np.mean([ref.sigreg(v[:, j], directions) for j in range(3)])
    return (1 - lam) * ref.prediction_loss(v, 2) + lam * reg

  got = jax.grad(lambda v: losses.lejepa_loss(v, key, num_global=2, sigreg_weight=lam, num_slices=8)[0])(
    z.astype(np.float32)
  )
  np.testing.assert_allclose(got, ref.numerical_gradient(reference, z), rtol=2e-4, atol=1e-6)


@pytest.mark.slow
def test_vmap_over_sigreg_weights_and_keys_matches_loop():
  z = jax.random.normal(jax.random.key(0), (32, 4, 8))
  weights = jnp.array([0.0, 0.02, 0.05, 0.2, 1.0])
  keys = jax.random.split(jax.random.key(1), 5)

  def loss(w, k):
    return losses.lejepa_loss(z, k, num_global=2, sigreg_weight=w, num_slices=32)[0]

  batched = jax.jit(jax.vmap(loss))(weights, keys)
  looped = [loss(float(w), k) for w, k in zip(weights, keys)]
  np.testing.assert_allclose(batched, looped, rtol=1e-6)
  by_weight = jax.vmap(loss, in_axes=(0, None))(weights, keys[0])
  np.testing.assert_allclose(by_weight, [loss(float(w), keys[0]) for w in weights], rtol=1e-6)


def test_bfloat16_embeddings_give_float32_loss():
  z = jax.random.normal(jax.random.key(0), (32, 4, 8)).astype(jnp.bfloat16)
  loss, parts = losses.lejepa_loss(z, jax.random.key(1), num_global=2, sigreg_weight=0.05)
  assert loss.dtype == parts["pred"].dtype == parts["sigreg"].dtype == jnp.float32


@pytest.mark.parametrize(
  "kwargs,match",
  [
    (dict(num_global=0), "`num_global`"),
    (dict(num_global=5), "`num_global`"),
    (dict(num_global=1.5), "`num_global`"),
    (dict(sigreg_weight=1.5), "`sigreg_weight`"),
    (dict(sigreg_weight=-0.1), "`sigreg_weight`"),
    (dict(combine="mean"), "`combine`"),
    (dict(sigreg_views="all"), "`sigreg_views`"),
    (dict(num_knots=1), "`num_knots`"),
    (dict(t_max=0), "`t_max`"),
    (dict(shape=(8, 4)), "`z` must have shape"),
    (dict(shape=(1, 4, 8)), "at least 2 samples"),
    (dict(dtype=jnp.int32), "floating-point"),
  ],
)
def test_lejepa_loss_rejects_bad_input_at_trace_time(kwargs, match):
  shape, dtype = kwargs.pop("shape", (8, 4, 16)), kwargs.pop("dtype", jnp.float32)
  args = dict(num_global=2, sigreg_weight=0.05) | kwargs
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(
      lambda v: losses.lejepa_loss(v, jax.random.key(0), **args), jax.ShapeDtypeStruct(shape, dtype)
    )
  with pytest.raises(ValueError, match=match):
    jax.jit(lambda v: losses.lejepa_loss(v, jax.random.key(0), **args)).lower(
      jax.ShapeDtypeStruct(shape, dtype)
    )


@pytest.mark.parametrize(
  "module",
  ["lejepa", "normality", "prediction", pytest.param("sliced_epps_pulley", marks=pytest.mark.slow)],
)
def test_the_docstring_examples_run_and_show_what_they_say(module):
  import doctest
  import importlib

  result = doctest.testmod(
    importlib.import_module(f"lejepa_jax.losses.{module}"), optionflags=doctest.NORMALIZE_WHITESPACE
  )
  assert result.attempted > 0 and result.failed == 0, result
