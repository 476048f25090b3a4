"""SIGReg / Epps-Pulley against independent float64 references, closed forms and properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references as ref

from lejepa_jax import losses


def _max_rel_err(actual, expected):
  return float(np.max(np.abs(np.asarray(actual, np.float64) - expected) / np.abs(expected)))


DISTRIBUTIONS = {
  "gaussian": lambda g, s: g.standard_normal(s),
  "scaled": lambda g, s: 1.7 * g.standard_normal(s),
  "shifted": lambda g, s: g.standard_normal(s) + 0.5,
  "uniform": lambda g, s: np.sqrt(12) * (g.random(s) - 0.5),
}


@pytest.mark.parametrize("num_samples", [2, 16, 256, 4096])
@pytest.mark.parametrize("t_max,num_knots", [(3.0, 17), (5.0, 17), (2.0, 5), (4.0, 33), (1.0, 2)])
@pytest.mark.parametrize("dist", sorted(DISTRIBUTIONS))
def test_epps_pulley_matches_float64_formula(num_samples, t_max, num_knots, dist):
  rng = np.random.default_rng(num_samples + num_knots)
  x = DISTRIBUTIONS[dist](rng, (num_samples, 24)).astype(np.float32)
  got = losses.epps_pulley(x, t_max=t_max, num_knots=num_knots)
  assert got.shape == (24,) and got.dtype == jnp.float32
  assert _max_rel_err(got, ref.epps_pulley(x, t_max, num_knots)) < 1e-5


def test_leading_axes_are_batch_axes():
  x = np.random.default_rng(0).standard_normal((3, 2, 64, 5)).astype(np.float32)
  got = np.asarray(losses.epps_pulley(x))
  assert got.shape == (3, 2, 5)
  for i, j in np.ndindex(3, 2):
    assert _max_rel_err(got[i, j], ref.epps_pulley(x[i, j])) < 1e-5


@pytest.mark.slow
def test_wide_quadrature_converges_to_closed_form():
  x = np.random.default_rng(1).standard_normal((64, 6)).astype(np.float32) * [[0.5, 1, 1, 2, 1, 3]]
  x[:, 2] += 1.0
  closed = ref.epps_pulley_closed_form(x)
  narrow = losses.epps_pulley(x, t_max=3.0, num_knots=17)
  wide = losses.epps_pulley(x, t_max=10.0, num_knots=301)
  assert _max_rel_err(wide, closed) < 1e-4
  # The defaults truncate the integral: the wide rule must be the one that converged.
  assert _max_rel_err(narrow, closed) > 10 * _max_rel_err(wide, closed)


@pytest.mark.slow
@pytest.mark.parametrize("num_samples", [16, 64, 256, 1024, 4096])
def test_gaussian_embeddings_score_the_expected_value(num_samples):
  # E[EP] = sum_k w_k (1 - exp(-t_k^2)) for N(0, 1) samples, whatever N
  # (docs/method.md, Values of SIGReg).
  expected = ref.gaussian_expectation()
  assert 1.0 < expected < 1.1
  repeats = max(2, 16384 // num_samples)
  z = jax.random.normal(jax.random.key(num_samples), (repeats, num_samples, 64))
  value = float(losses.sigreg(z, jax.random.key(7), num_slices=256))
  assert abs(value - expected) < 0.08 * expected, (value, expected)


@pytest.mark.slow
def test_non_gaussian_embeddings_score_far_higher():
  n, d = 1024, 4
  key = jax.random.key(3)
  gaussian = jax.random.normal(jax.random.key(0), (n, d))
  baseline = float(losses.sigreg(gaussian, key))
  dead = gaussian.at[:, 0].set(0.0)  # one of four dimensions dead
  cases = {
    "collapsed": jnp.zeros((n, d)),
    "one_dead_dimension": dead,
    "scaled_x2": 2.0 * gaussian,
    "scaled_x0.5": 0.5 * gaussian,
    "shifted": gaussian + 1.0,
  }
  for name, z in cases.items():
    assert float(losses.sigreg(z, key)) > 5 * baseline, name
  # A fully collapsed batch: ecf = 1 at every knot, so EP = N * sum_k w_k (1 - exp(-t_k^2/2))^2.
  t, w = ref.trapezoid_knots(3.0, 17)
  collapsed = n * np.sum(w * (1 - np.exp(-(t**2) / 2)) ** 2)
  np.testing.assert_allclose(float(losses.sigreg(jnp.zeros((n, d)), key)), collapsed, rtol=1e-5)
  assert 0.38 * n < collapsed < 0.42 * n


def test_invariant_to_permuting_samples():
  x = np.random.default_rng(2).standard_normal((500, 16)).astype(np.float32) * 1.3
  perm = np.random.default_rng(3).permutation(500)
  np.testing.assert_allclose(losses.epps_pulley(x[perm]), losses.epps_pulley(x), rtol=1e-5)


@pytest.mark.parametrize("t_max,num_knots", [(3.0, 17), (5.0, 9)])
def test_gradient_matches_finite_differences_of_float64_formula(t_max, num_knots):
  x = np.random.default_rng(4).standard_normal((12, 3)) * [[1.0, 2.0, 0.3]] + 0.2
  cot = np.array([1.0, -0.5, 2.0])
  got = jax.grad(lambda v: jnp.sum(losses.epps_pulley(v, t_max=t_max, num_knots=num_knots) * cot))(
    x.astype(np.float32)
  )
  want = ref.numerical_gradient(lambda v: np.sum(ref.epps_pulley(v, t_max, num_knots) * cot), x)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("case", ["zeros", "huge", "tiny", "mixed", "constant"])
def test_gradients_are_finite_everywhere(case):
  g = np.random.default_rng(5).standard_normal((32, 8)).astype(np.float32)
  z = {
    "zeros": 0 * g,
    "huge": 1e30 * g,
    "tiny": 1e-30 * g,
    "constant": 0 * g + 3.0,
    "mixed": g * np.logspace(-20, 20, 8, dtype=np.float32),
  }[case]
  value, grad = jax.value_and_grad(lambda v: losses.sigreg(v, jax.random.key(0)))(z)
  assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))


@pytest.mark.slow
def test_per_sample_gradient_is_bounded_for_large_inputs():
  x = 100.0 * jax.random.normal(jax.random.key(0), (256, 64))
  per_slice = jax.grad(lambda v: losses.epps_pulley(v).sum())(x)  # d EP_m / d x[n, m]
  assert float(jnp.max(jnp.abs(per_slice))) < 8.0
  z = 100.0 * jax.random.normal(jax.random.key(1), (256, 32))
  per_sample = jax.grad(lambda v: losses.sigreg(v, jax.random.key(2)))(z)
  assert float(jnp.max(jnp.linalg.norm(per_sample, axis=-1))) < 8.0
  assert float(jnp.max(jnp.abs(per_slice))) > 0.01  # not bounded by being zero


def test_jit_equals_eager():
  z = jax.random.normal(jax.random.key(0), (128, 16))
  key = jax.random.key(1)
  eager = losses.sigreg(z, key, num_slices=64)
  jitted = jax.jit(lambda a, k: losses.sigreg(a, k, num_slices=64))(z, key)
  np.testing.assert_allclose(jitted, eager, rtol=1e-6)


def test_bfloat16_input_is_computed_in_float32():
  z = jax.random.normal(jax.random.key(0), (256, 32)).astype(jnp.bfloat16)
  key = jax.random.key(1)
  value = losses.sigreg(z, key)
  assert value.dtype == jnp.float32
  np.testing.assert_allclose(value, losses.sigreg(z.astype(jnp.float32), key), rtol=1e-6)
  grad = jax.grad(lambda v: losses.sigreg(v, key))(z)
  assert grad.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(grad, np.float32)))


def test_random_directions_are_unit_gaussian_directions():
  a = losses.random_directions(jax.random.key(0), 64, 4096)
  assert a.shape == (64, 4096) and a.dtype == jnp.float32
  np.testing.assert_allclose(jnp.linalg.norm(a, axis=0), 1.0, rtol=1e-5)
  # Uniform on the sphere: E[a a^T] = I / D.
  np.testing.assert_allclose(a @ a.T / 4096 * 64, np.eye(64), atol=0.1)
  np.testing.assert_array_equal(a, losses.random_directions(jax.random.key(0), 64, 4096))
  assert not np.allclose(a, losses.random_directions(jax.random.key(1), 64, 4096))


def test_sigreg_is_mean_epps_pulley_of_projections():
  z = np.random.default_rng(6).standard_normal((2, 200, 24)).astype(np.float32)
  key = jax.random.key(9)
  directions = np.asarray(losses.random_directions(key, 24, 128), np.float64)
  got = float(losses.sigreg(z, key, num_slices=128))
  # Leading axes share the directions and are averaged.
  want = np.mean([ref.sigreg(z[i], directions) for i in range(2)])
  np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize(
  "bad,match",
  [
    (dict(x=np.ones((5,), np.float32)), "`x` must have shape"),
    (dict(x=np.ones((1, 4), np.float32)), "at least 2 samples"),
    (dict(x=np.ones((8, 4), np.int32)), "floating-point"),
    (dict(x=np.ones((8, 4), np.float32), num_knots=1), "`num_knots`"),
    (dict(x=np.ones((8, 4), np.float32), num_knots=3.5), "`num_knots`"),
    (dict(x=np.ones((8, 4), np.float32), t_max=0.0), "`t_max`"),
    (dict(x=np.ones((8, 4), np.float32), t_max=-1.0), "`t_max`"),
  ],
)
def test_epps_pulley_rejects_bad_input_at_trace_time(bad, match):
  x = bad.pop("x")
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(lambda v: losses.epps_pulley(v, **bad), jax.ShapeDtypeStruct(x.shape, x.dtype))


def test_sigreg_rejects_bad_input():
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="`z` must have shape"):
    losses.sigreg(jnp.ones((4,)), key)
  with pytest.raises(ValueError, match="`num_slices`"):
    losses.sigreg(jnp.ones((4, 3)), key, num_slices=0)
  with pytest.raises(ValueError, match="floating-point"):
    losses.sigreg(jnp.ones((4, 3), jnp.int32), key)
