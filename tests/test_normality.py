"""The alternative normality tests (losses.stats): SciPy and float64 references, power, sharding."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references as ref
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from scipy import special as scipy_special
from scipy import stats as scipy_stats

from lejepa_jax import config_lib, losses
from lejepa_jax.losses import normality

SORTING_TESTS = ["cramer_von_mises", "anderson_darling", "watson", "shapiro_wilk"]
MOMENT_TESTS = ["jarque_bera", "vcreg"]


def _columns(shape, seed=0, scale=1.3, shift=0.2):
  return (np.random.default_rng(seed).standard_normal(shape) * scale + shift).astype(np.float32)


def _all_tests(x):
  return {name: test(x) for name, test in normality.TESTS.items()}


# Every registered test in one compiled function: compiling once per input shape keeps the file fast.
_ALL_TESTS = jax.jit(_all_tests)


def _per_column(scipy_fn, x):
  return np.array([scipy_fn(np.asarray(col, np.float64)) for col in np.asarray(x).T])


# ------------------------------------------------------------------------------------------------
# Values against SciPy and float64 references.


@pytest.mark.parametrize("num_samples", [5, 500])
def test_cramer_von_mises_matches_scipy_and_the_integral(num_samples):
  x = _columns((num_samples, 6), seed=num_samples)
  got = normality.cramer_von_mises(x)
  assert got.shape == (6,) and got.dtype == jnp.float32
  want = _per_column(lambda c: scipy_stats.cramervonmises(c, "norm").statistic, x)
  np.testing.assert_allclose(got, want, rtol=2e-5)
  np.testing.assert_allclose(want, ref.cdf_statistic_by_integration(x), rtol=1e-9)


@pytest.mark.parametrize("num_samples", [5, 500])
def test_watson_matches_the_integral(num_samples):
  x = _columns((num_samples, 6), seed=num_samples)
  np.testing.assert_allclose(
    normality.watson(x), ref.cdf_statistic_by_integration(x, watson=True), rtol=5e-5
  )


@pytest.mark.parametrize("num_samples", [5, 500])
def test_anderson_darling_matches_formula_and_scipy_after_standardising(num_samples):
  x = _columns((num_samples, 6), seed=num_samples)
  # Float32: the sum cancels against -N, leaving an absolute error of about N * 1e-7.
  atol = 2e-7 * num_samples
  np.testing.assert_allclose(
    normality.anderson_darling(x), ref.anderson_darling(x), rtol=1e-5, atol=atol
  )
  # scipy.stats.anderson estimates the mean and (unbiased) scale: standardise, then they agree.
  standard = (x - x.mean(0)) / x.std(0, ddof=1)
  want = _per_column(lambda c: scipy_stats.anderson(c, "norm", method="interpolate").statistic, x)
  np.testing.assert_allclose(normality.anderson_darling(standard), want, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("num_samples", [3, 4, 6, 1000])  # exact; one, two corrections; large
def test_shapiro_wilk_matches_scipy(num_samples):
  x = _columns((num_samples, 8), seed=num_samples)
  w = _per_column(lambda c: scipy_stats.shapiro(c).statistic, x)
  np.testing.assert_allclose(1 - normality.shapiro_wilk(x), w, atol=2e-6)  # float32 rounding


def test_shapiro_wilk_coefficients_are_antisymmetric_unit_vectors():
  for n in (3, 4, 5, 6, 7, 50, 51):
    a = normality.shapiro_wilk_coefficients(n)
    np.testing.assert_allclose(a, -a[::-1], atol=1e-15)
    np.testing.assert_allclose(np.sum(a**2), 1.0, rtol=1e-12)
    assert np.all(np.diff(a) >= 0)


@pytest.mark.parametrize("num_samples", [8, 64, 500])
def test_moment_tests_match_scipy_and_the_paper_formula(num_samples):
  x = _columns((num_samples, 6), seed=num_samples)
  classic = _per_column(lambda c: scipy_stats.jarque_bera(c).statistic, x)
  np.testing.assert_allclose(normality.jarque_bera(x, extended=False), classic, rtol=2e-5, atol=1e-6)
  vc, ejb = ref.extended_jarque_bera(x)
  np.testing.assert_allclose(normality.vcreg(x), vc, rtol=2e-5)
  np.testing.assert_allclose(normality.jarque_bera(x), ejb, rtol=2e-5)
  assert normality.TESTS["jarque_bera"](x).shape == (6,)


def test_gaussian_columns_score_the_known_expectations():
  n = 64
  x = jax.random.normal(jax.random.key(0), (n, 4096))
  # E under N(0, 1), exact for every N: W^2 = 1/6, U^2 = 1/12, A^2 = 1; VC: E[t^2_{N-1}] + 1.
  expected = {
    "cramer_von_mises": 1 / 6,
    "watson": 1 / 12,
    "anderson_darling": 1.0,
    "vcreg": (n - 1) / (n - 3) + 1,
    "epps_pulley": ref.gaussian_expectation(),
  }
  values = _ALL_TESTS(x)
  for name, value in expected.items():
    np.testing.assert_allclose(float(jnp.mean(values[name])), value, rtol=0.05, err_msg=name)
  assert float(jnp.mean(values["shapiro_wilk"])) < 0.05


ALTERNATIVES = {  # all with mean 0 and variance 1, so mean and variance cannot tell them apart
  "uniform": lambda g, s: np.sqrt(12) * (g.random(s) - 0.5),
  "student_t3": lambda g, s: g.standard_t(3, s) / np.sqrt(3),
  "bimodal": lambda g, s: np.where(g.random(s) < 0.5, -0.9, 0.9) + np.sqrt(0.19) * g.standard_normal(s),
}


def test_power_against_unit_variance_alternatives():
  g, n, num_null = np.random.default_rng(0), 512, 512
  columns = [g.standard_normal((n, num_null))] + [draw(g, (n, 64)) for draw in ALTERNATIVES.values()]
  all_values = _ALL_TESTS(np.concatenate(columns, axis=1).astype(np.float32))
  for name, values in all_values.items():
    values = np.asarray(values)
    threshold = np.quantile(values[:num_null], 0.95)  # the 5% level, from the Gaussian columns
    power = {
      alt: float(np.mean(values[num_null + 64 * i : num_null + 64 * (i + 1)] > threshold))
      for i, alt in enumerate(ALTERNATIVES)
    }
    if name == "vcreg":  # only the first two moments: blind to shape
      assert power["uniform"] < 0.2 and power["bimodal"] < 0.2, power
    else:
      assert min(power.values()) > 0.9, (name, power)


# ------------------------------------------------------------------------------------------------
# As losses: gradients, degenerate input, transformations.

REFERENCES = {
  "cramer_von_mises": ref.cdf_statistic_by_integration,
  "watson": lambda x: ref.cdf_statistic_by_integration(x, watson=True),
  "anderson_darling": ref.anderson_darling,
  "shapiro_wilk": lambda x: 1 - _per_column(lambda c: scipy_stats.shapiro(c).statistic, x),
  "vcreg": lambda x: ref.extended_jarque_bera(x)[0],
  "jarque_bera": lambda x: ref.extended_jarque_bera(x)[1],
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_gradient_matches_finite_differences_of_reference(name):
  x = np.random.default_rng(4).standard_normal((12, 3)) * [[1.0, 2.0, 0.6]] + 0.2
  cot = np.array([1.0, -0.5, 2.0])
  got = jax.jit(jax.grad(lambda v: jnp.sum(normality.get_test(name)(v) * cot)))(x.astype(np.float32))
  want = ref.numerical_gradient(lambda v: np.sum(REFERENCES[name](v) * cot), x)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


@pytest.mark.slow
def test_values_and_gradients_are_finite_on_degenerate_columns():
  x = np.zeros((16, 3), np.float32)
  x[:, 1] = 2.5  # constant
  x[:, 2] = np.linspace(-1e-3, 1e-3, 16)  # tiny spread

  def values_and_grads(v):
    return {
      name: jax.value_and_grad(lambda u, t=test: jnp.sum(t(u)))(v)
      for name, test in normality.TESTS.items()
    }

  for name, (value, grad) in jax.jit(values_and_grads)(x).items():
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad))), name


def test_leading_axes_are_batch_axes_and_vmap_agrees():
  x = _columns((3, 40, 5), seed=1)
  batched = _ALL_TESTS(x)
  mapped = jax.jit(jax.vmap(_all_tests))(x)
  for name in normality.TESTS:
    assert batched[name].shape == (3, 5)
    np.testing.assert_allclose(mapped[name], batched[name], rtol=1e-5, err_msg=name)


def test_sample_order_does_not_matter():
  x = _columns((100, 4), seed=2)
  permuted = _ALL_TESTS(x[np.random.default_rng(3).permutation(100)])
  for name, values in _ALL_TESTS(x).items():
    np.testing.assert_allclose(permuted[name], values, rtol=1e-5, atol=1e-6, err_msg=name)


# ------------------------------------------------------------------------------------------------
# Sharding: the sorting tests gather the projections; values and gradients do not change.


def _mesh(axis_type):
  return jax.make_mesh((8,), ("data",), axis_types=(axis_type,))


def _sharded_step(names, x, axis_type):
  """value_and_grad of a weighted sum of the statistics, unsharded and N-sharded, and the HLO."""

  def total(v):
    values = {name: normality.get_test(name)(v) for name in names}
    weights = jnp.arange(v.shape[-1]) / v.shape[-1]
    return sum(jnp.sum(value * weights) for value in values.values()), values

  step = jax.jit(jax.value_and_grad(total, has_aux=True))
  mesh = _mesh(axis_type)
  with jax.set_mesh(mesh):
    x_sharded = jax.device_put(x, NamedSharding(mesh, P("data")))
    compiled = step.lower(x_sharded).compile()
    sharded = compiled(x_sharded)
  return step(x), sharded, compiled.as_text()


def _collectives(hlo):
  return re.findall(r"= (.+?) (all-gather|all-to-all|collective-permute)(?:-start)?\(", hlo)


def _assert_same(sharded, unsharded):
  ((s_total, s_values), s_grad), ((total, values), grad) = sharded, unsharded
  np.testing.assert_allclose(s_total, total, rtol=1e-5)
  for name in values:
    np.testing.assert_allclose(s_values[name], values[name], rtol=1e-5, atol=1e-6, err_msg=name)
  np.testing.assert_allclose(s_grad, grad, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(grad))))


@pytest.mark.parametrize(
  "axis_type,group",
  [(AxisType.Auto, "sorting"), (AxisType.Explicit, "sorting"), (AxisType.Explicit, "moments")],
)
def test_sharded_statistics_and_gradients_equal_unsharded(devices, axis_type, group):
  names = SORTING_TESTS if group == "sorting" else MOMENT_TESTS
  unsharded, sharded, hlo = _sharded_step(names, _columns((64, 16), seed=5), axis_type)
  _assert_same(sharded, unsharded)
  if group == "moments":  # moments only reduce over N
    assert not _collectives(hlo)
  elif axis_type == AxisType.Explicit:  # columns spread over devices: N never gathered
    assert "all-to-all" in {kind for _, kind in _collectives(hlo)}
    for shape, kind in _collectives(hlo):
      assert "64" not in shape, (shape, kind)


def test_sorting_gathers_columns_when_they_do_not_divide_over_devices(devices):
  unsharded, sharded, hlo = _sharded_step(
    ["shapiro_wilk"], _columns((64, 12), seed=5), AxisType.Explicit
  )
  _assert_same(sharded, unsharded)
  assert [kind for _, kind in _collectives(hlo)] == ["all-gather"]
  assert _collectives(hlo)[0][0].startswith("f32[64,12]")


@pytest.mark.slow
def test_lejepa_loss_with_a_sorting_test_is_the_same_sharded(devices):
  axis_type = AxisType.Explicit  # the mode where the loss itself must lay the columns out
  z, key = _columns((64, 4, 16), seed=6), jax.random.key(2)
  step = jax.jit(
    jax.value_and_grad(
      lambda v: losses.lejepa_loss(
        v, key, num_global=2, sigreg_weight=0.5, num_slices=32, test="anderson_darling"
      )[0]
    )
  )
  loss, grad = step(z)
  mesh = _mesh(axis_type)
  with jax.set_mesh(mesh):
    s_loss, s_grad = step(jax.device_put(z, NamedSharding(mesh, P("data"))))
  np.testing.assert_allclose(s_loss, loss, rtol=1e-5)
  np.testing.assert_allclose(s_grad, grad, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# Slicing, the registry and the loss / config plumbing.


def test_sliced_epps_pulley_is_sigreg_exactly():
  z, key = _columns((2, 32, 8), seed=7), jax.random.key(3)
  np.testing.assert_array_equal(
    normality.sliced(normality.epps_pulley)(z, key, 16), losses.sigreg(z, key, num_slices=16)
  )


def test_sliced_test_is_the_mean_over_projections():
  z, key = _columns((128, 24), seed=8), jax.random.key(4)
  directions = np.asarray(losses.random_directions(key, 24, 64), np.float64)
  want = np.mean(ref.cdf_statistic_by_integration(z.astype(np.float64) @ directions))
  np.testing.assert_allclose(normality.sliced(normality.cramer_von_mises)(z, key, 64), want, rtol=1e-5)


def test_unknown_test_name_lists_the_names():
  with pytest.raises(ValueError, match="Unknown normality test 'kolmogorov'.*epps_pulley.*watson"):
    normality.get_test("kolmogorov")
  with pytest.raises(ValueError, match="Unknown normality test"):
    losses.lejepa_loss(
      np.ones((8, 2, 4), np.float32),
      jax.random.key(0),
      num_global=1,
      sigreg_weight=0.1,
      test="kolmogorov",
    )


def test_lejepa_loss_default_is_the_fused_epps_pulley_bit_for_bit():
  z, key = _columns((16, 2, 8), seed=9), jax.random.key(5)
  kwargs = dict(num_global=1, sigreg_weight=0.05, num_slices=16)
  default, parts = losses.lejepa_loss(z, key, **kwargs)
  named, _ = losses.lejepa_loss(z, key, test="epps_pulley", **kwargs)
  np.testing.assert_array_equal(named, default)
  np.testing.assert_array_equal(parts["sigreg"], losses.sigreg(np.swapaxes(z, 0, 1), key, num_slices=16))


def test_test_chosen_in_the_config_reaches_the_loss():
  name, config = "shapiro_wilk", config_lib.base_config()
  assert config.loss.test == "epps_pulley"
  config.loss.test, config.loss.num_slices = name, 32
  z, key = _columns((40, 3, 8), seed=10), jax.random.key(6)
  # As the train step calls it: the loss config as keyword arguments.
  loss, parts = jax.jit(functools.partial(losses.lejepa_loss, num_global=2, **dict(config.loss)))(z, key)
  directions = np.asarray(losses.random_directions(key, 8, 32), np.float64)
  reg = np.mean([REFERENCES[name](z[:, v].astype(np.float64) @ directions) for v in range(3)])
  lam = config.loss.sigreg_weight
  np.testing.assert_allclose(parts["sigreg"], reg, rtol=1e-4)
  np.testing.assert_allclose(loss, (1 - lam) * ref.prediction_loss(z, 2) + lam * reg, rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# Multivariate tests.


def test_bhep_in_one_dimension_is_epps_pulley_over_the_line_divided_by_sqrt_2pi():
  x = _columns((50, 1), seed=11)
  # Float32: terms of size N cancel, leaving an absolute error of about N * 1e-7.
  np.testing.assert_allclose(
    normality.bhep(x), ref.epps_pulley_closed_form(x)[0] / np.sqrt(2 * np.pi), rtol=1e-5, atol=1e-6 * 50
  )


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_bhep_matches_pairwise_reference(beta):
  z = _columns((60, 5), seed=12, scale=0.9)
  np.testing.assert_allclose(normality.bhep(z, beta=beta), ref.bhep(z, beta), rtol=1e-5, atol=1e-6 * 60)


def test_henze_zirkler_matches_reference_and_is_affine_invariant():
  z = _columns((80, 4), seed=13)
  z[:, 1] += 0.5 * z[:, 0]  # correlated
  want = ref.henze_zirkler(z)
  np.testing.assert_allclose(normality.henze_zirkler(z), want, rtol=1e-4)
  mixing = np.random.default_rng(14).standard_normal((4, 4)) + 3 * np.eye(4)
  np.testing.assert_allclose(
    normality.henze_zirkler((z @ mixing + 5.0).astype(np.float32)), want, rtol=1e-4
  )


def test_bhep_loses_its_gradient_in_high_dimension():
  # Why the paper slices: in D = 512 every kernel term underflows in float32.
  z = jax.random.normal(jax.random.key(0), (16, 512))
  value, grad = jax.jit(jax.value_and_grad(normality.bhep))(z)
  assert float(value) == 1.0  # only the diagonal of the pairwise sum is left
  assert float(jnp.max(jnp.abs(grad))) == 0.0


@pytest.mark.parametrize(
  "call,match",
  [
    (lambda: normality.cramer_von_mises(np.ones((5,), np.float32)), "`x` must have shape"),
    (lambda: normality.watson(np.ones((1, 3), np.float32)), "at least 2 samples"),
    (lambda: normality.shapiro_wilk(np.ones((2, 3), np.float32)), "at least 3 samples"),
    (lambda: normality.vcreg(np.ones((4, 3), np.int32)), "floating-point"),
    (lambda: normality.bhep(np.ones((4, 3), np.float32), beta=0.0), "`beta`"),
    (lambda: normality.bhep(np.ones((2, 4, 3), np.float32)), "`z` must have shape"),
    (lambda: normality.henze_zirkler(np.ones((4, 4), np.float32)), "more samples than dimensions"),
  ],
)
def test_bad_input_is_rejected(call, match):
  with pytest.raises(ValueError, match=match):
    call()


# ------------------------------------------------------------------------------------------------
# Conventions: the authors' PyTorch code's definitions (convention="official"), against float64
# NumPy transcriptions of their formulas written here, and the mappings to this package's scales.


def _official_cramer_von_mises(x):
  """mean_i ((2i - 1) / (2N) - Phi(x_(i)))^2 per column."""
  u = scipy_stats.norm.cdf(np.sort(np.asarray(x, np.float64), axis=0))
  n = u.shape[0]
  positions = (2 * np.arange(1, n + 1)[:, None] - 1) / (2 * n)
  return np.mean((positions - u) ** 2, axis=0)


def _official_watson(x):
  """The official Cramer-von Mises minus (mean Phi(x) - 1/2)^2."""
  shift = np.mean(scipy_stats.norm.cdf(np.asarray(x, np.float64)), axis=0) - 0.5
  return _official_cramer_von_mises(x) - shift**2


def _official_jarque_bera(x):
  """VCReg + N/6 (skew^2 + (kurt - 3)^2 / 4), skewness and kurtosis over the unbiased std."""
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  mean, var = x.mean(0), x.var(0, ddof=1)
  standard = (x - mean) / np.sqrt(var)
  skew, kurt = np.mean(standard**3, 0), np.mean(standard**4, 0)
  return n * mean**2 / var + (n - 1) * (var - 1) ** 2 / 2 + n / 6 * (skew**2 + (kurt - 3) ** 2 / 4)


def _official_shapiro_wilk(x):
  """1 - |cos(m, x sorted)|, m = Phi^-1((i - pi/8) / (N + 1/4)), on the uncentred samples."""
  x = np.sort(np.asarray(x, np.float64), axis=0)
  n = x.shape[0]
  m = scipy_stats.norm.ppf((np.arange(1, n + 1) - np.pi / 8) / (n + 0.25))
  cosine = m @ x / (np.linalg.norm(m) * np.maximum(np.linalg.norm(x, axis=0), 1e-5))
  return 1 - np.abs(cosine)


def _log_phi_asymptotic(x):
  """log Phi as the authors' code computes it: exact for |x| <= 3, an asymptotic form beyond."""
  x = np.asarray(x, np.float64)
  denominator = np.sqrt(0.656 * np.abs(x) + 0.344 * x**2 + 5.334)
  left = -(x**2 + np.log(2 * np.pi)) / 2 - np.log(denominator)
  right = np.log1p(-np.exp(-(x**2) / 2) / np.sqrt(2 * np.pi) / denominator)
  return np.where(x < -3, left, np.where(x > 3, right, scipy_special.log_ndtr(x)))


def _official_anderson_darling(x, log_phi=scipy_special.log_ndtr):
  """-N - (1/N) sum_i (2i - 1) (log Phi(x_(i)) + log Phi(-x_(N+1-i))), with the given log Phi."""
  x = np.sort(np.asarray(x, np.float64), axis=0)
  n = x.shape[0]
  weights = 2 * np.arange(1, n + 1)[:, None] - 1
  return -n - np.sum(weights * (log_phi(x) + log_phi(-x[::-1])), axis=0) / n


def _official_bhep(z, beta=0.1):
  """mean_jk e^(-b^2 |z_j - z_k|^2 / 2) - 2 (1 + b^2)^(-D/2) mean_j e^(-b^2 |z_j|^2 / (2 + 2b^2))
  + (1 + 2b^2)^(-D/2): the weighted ECF distance without the factor N."""
  z = np.asarray(z, np.float64)
  d, b2 = z.shape[1], beta**2
  pairs = np.mean(np.exp(-b2 / 2 * np.sum((z[:, None] - z[None]) ** 2, axis=-1)))
  to_target = np.mean(np.exp(-b2 / (2 + 2 * b2) * np.sum(z**2, axis=-1)))
  return pairs - 2 * (1 + b2) ** (-d / 2) * to_target + (1 + 2 * b2) ** (-d / 2)


def _official_henze_zirkler(z):
  """The official BHEP of z, not whitened, at beta = ((2D + 1) N / 4)^(1/(D+4)) / sqrt 2."""
  n, d = z.shape
  return _official_bhep(z, ((2 * d + 1) * n / 4) ** (1 / (d + 4)) / np.sqrt(2))


OFFICIAL_REFERENCES = {
  "cramer_von_mises": _official_cramer_von_mises,
  "watson": _official_watson,
  "jarque_bera": _official_jarque_bera,
  "shapiro_wilk": _official_shapiro_wilk,
  "anderson_darling": _official_anderson_darling,  # the exact log Phi
  "vcreg": lambda x: ref.extended_jarque_bera(x)[0],
  "epps_pulley": ref.epps_pulley,
}


def _mixed_columns(num_samples, seed):
  """[N, 4] float64: shifted, scaled Gaussian; Student t(2) (|x| > 3 likely); uniform; bimodal."""
  g = np.random.default_rng(seed)
  draws = [
    1.3 * g.standard_normal(num_samples) + 0.2,
    g.standard_t(2, num_samples),
    np.sqrt(12) * (g.random(num_samples) - 0.5),
    np.where(g.random(num_samples) < 0.5, -1.0, 1.0) + 0.4 * g.standard_normal(num_samples),
  ]
  return np.stack(draws, axis=1)


# Every official statistic in one compiled function, selected by name as a config would.
_ALL_OFFICIAL = jax.jit(
  lambda x: {name: normality.get_test(f"{name}@official")(x) for name in OFFICIAL_REFERENCES}
)


@pytest.mark.parametrize("num_samples", [5, 200])
def test_official_convention_matches_float64_transcription_of_the_authors_formula(num_samples):
  x = _mixed_columns(num_samples, seed=num_samples)
  with jax.enable_x64(True):
    values = _ALL_OFFICIAL(x)
  for name, got in values.items():
    assert got.dtype == jnp.float64 and got.shape == (4,), name
    np.testing.assert_allclose(got, OFFICIAL_REFERENCES[name](x), rtol=1e-10, atol=1e-13, err_msg=name)


def test_official_anderson_darling_takes_the_exact_log_phi_not_the_asymptotic_one():
  # The authors' tail formula is off by 0.018 at -3, 0.35 at -8, and tends to -log(0.344) / 2.
  tails = np.array([-3.0001, -8.0, -100.0])
  np.testing.assert_allclose(
    _log_phi_asymptotic(tails) - scipy_special.log_ndtr(tails), [0.018, 0.352, 0.523], atol=1e-3
  )
  g = np.random.default_rng(23)
  x = np.stack(
    [
      g.standard_t(2, 200),
      g.standard_t(1, 200),
      np.clip(g.standard_normal(200), -3, 3),
      3 * g.standard_normal(200),
    ],
    axis=1,
  )
  with jax.enable_x64(True):
    got = np.asarray(jax.jit(functools.partial(normality.anderson_darling, convention="official"))(x))
  exact = _official_anderson_darling(x)
  asymptotic = _official_anderson_darling(x, _log_phi_asymptotic)
  np.testing.assert_allclose(got, exact, rtol=1e-12)
  # Within [-3, 3] both forms are the same; with tails beyond, A^2 moves by 0.1 to 1.2 here.
  np.testing.assert_allclose(asymptotic[2], exact[2], rtol=1e-12)
  assert np.all(np.abs(asymptotic - exact)[[0, 1, 3]] > 0.05), asymptotic - exact


_MIXING = np.array([[2.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.3, 0.0, 0.7]])


@jax.jit
def _both_conventions(x):
  """The statistics whose definitions differ, in both conventions, on x [N, 4] and z = x[:, :3]."""

  def official(test, *args, **kwargs):
    return test(*args, convention="official", **kwargs)

  z = x[:, :3]
  return {
    "cramer_von_mises": (official(normality.cramer_von_mises, x), normality.cramer_von_mises(x)),
    "watson": (official(normality.watson, x), normality.watson(x)),
    "classic_jarque_bera": official(normality.jarque_bera, x, extended=False),
    "jarque_bera": official(normality.jarque_bera, x),
    "vcreg": normality.vcreg(x),
    "shapiro_wilk": official(normality.shapiro_wilk, x),
    "shapiro_wilk_scaled": official(normality.shapiro_wilk, 3 * x),
    "shapiro_wilk_shifted": official(normality.shapiro_wilk, x + 0.5),
    "bhep": (official(normality.bhep, z), normality.bhep(z, beta=0.1)),
    "bhep_beta_2": official(normality.bhep, z, beta=2.0),
    "henze_zirkler": (
      official(normality.henze_zirkler, z),
      normality.bhep(z, beta=normality.henze_zirkler_beta(*z.shape)),
    ),
    "henze_zirkler_mixed": official(normality.henze_zirkler, z @ _MIXING),
  }


def test_official_convention_mappings():
  x, n, r = _mixed_columns(50, 24), 50, 49 / 50
  with jax.enable_x64(True):
    values = jax.tree.map(np.asarray, _both_conventions(x))
  for name in ("cramer_von_mises", "watson"):  # official = (ours - 1 / (12 N)) / N
    official, ours = values[name]
    np.testing.assert_allclose(official, (ours - 1 / (12 * n)) / n, rtol=1e-12, err_msg=name)
  # Jarque-Bera: skewness and kurtosis over the unbiased std, i.e. scaled by r^1.5 and r^2.
  skew, kurt = scipy_stats.skew(x), scipy_stats.kurtosis(x, fisher=False)  # over the biased std
  np.testing.assert_allclose(
    values["classic_jarque_bera"], n / 6 * (r**3 * skew**2 + (r**2 * kurt - 3) ** 2 / 4), rtol=1e-12
  )
  np.testing.assert_allclose(
    values["jarque_bera"] - values["classic_jarque_bera"], values["vcreg"], rtol=1e-12
  )
  # Shapiro-Wilk: the cosine with unit-norm Elfving-Blom scores, scale- but not shift-invariant.
  m = scipy_stats.norm.ppf((np.arange(1, n + 1) - np.pi / 8) / (n + 0.25))
  np.testing.assert_allclose(
    normality.official_shapiro_wilk_weights(n), m / np.linalg.norm(m), rtol=1e-12
  )
  np.testing.assert_allclose(values["shapiro_wilk_scaled"], values["shapiro_wilk"], rtol=1e-12)
  assert np.all(np.abs(values["shapiro_wilk_shifted"] - values["shapiro_wilk"]) > 1e-4)
  # BHEP: beta 0.1 by default and no factor N; Henze-Zirkler: that at its bandwidth, not whitened.
  z = x[:, :3]
  official, ours = values["bhep"]
  np.testing.assert_allclose(official, ours / n, rtol=1e-12)
  np.testing.assert_allclose(official, _official_bhep(z), rtol=1e-9)  # a cancelling sum at beta 0.1
  np.testing.assert_allclose(values["bhep_beta_2"], _official_bhep(z, 2.0), rtol=1e-10)
  official, ours = values["henze_zirkler"]
  np.testing.assert_allclose(official, ours / n, rtol=1e-12)
  np.testing.assert_allclose(official, _official_henze_zirkler(z), rtol=1e-10)
  assert abs(values["henze_zirkler_mixed"] - official) > 1e-3  # not affine-invariant
  # The same function in both conventions: Epps-Pulley, VCReg, Anderson-Darling (exact log Phi).
  for name in ("epps_pulley", "vcreg", "anderson_darling"):
    assert normality.get_test(name, "official") is normality.TESTS[name]


def test_official_gradients_match_finite_differences_of_the_transcriptions():
  x = np.random.default_rng(25).standard_normal((12, 3)) * [[1.0, 2.0, 0.6]] + 0.2
  cot = np.array([1.0, -0.5, 2.0])
  names = ["cramer_von_mises", "watson", "jarque_bera", "shapiro_wilk"]
  grads = jax.jit(
    lambda v: {
      name: jax.grad(lambda u, n=name: jnp.sum(normality.get_test(n, convention="official")(u) * cot))(v)
      for name in names
    }
  )(x.astype(np.float32))
  for name in names:
    want = ref.numerical_gradient(lambda v, n=name: np.sum(OFFICIAL_REFERENCES[n](v) * cot), x)
    np.testing.assert_allclose(
      grads[name], want, rtol=2e-4, atol=1e-5 * np.abs(want).max(), err_msg=name
    )


def test_official_values_and_gradients_are_finite_on_degenerate_columns():
  x = np.zeros((16, 3), np.float32)
  x[:, 1] = 2.5  # constant
  x[:, 2] = np.linspace(-1e-3, 1e-3, 16)  # tiny spread

  def values_and_grads(v):  # the tests whose official definition differs, and BHEP / HZ
    tests = {
      name: functools.partial(normality.TESTS[name], convention="official")
      for name in ("cramer_von_mises", "watson", "jarque_bera", "shapiro_wilk")
    }
    tests |= {
      name: lambda u, t=test: t(u, convention="official")
      for name, test in (("bhep", normality.bhep), ("henze_zirkler", normality.henze_zirkler))
    }
    return {name: jax.value_and_grad(lambda u, t=test: jnp.sum(t(u)))(v) for name, test in tests.items()}

  for name, (value, grad) in jax.jit(values_and_grads)(x).items():
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad))), name


@pytest.mark.slow
def test_convention_is_chosen_by_name_in_get_test_and_sliced():
  x = _columns((40, 5), seed=26)
  official = normality.get_test("watson@official")
  assert official.__name__ == "watson_official"
  np.testing.assert_array_equal(official(x), normality.watson(x, convention="official"))
  np.testing.assert_array_equal(normality.get_test("watson", convention="official")(x), official(x))
  assert normality.get_test("watson") is normality.get_test("watson@lejepa_jax") is normality.watson
  by_name = normality.sliced("cramer_von_mises", convention="official")
  assert by_name.__name__ == "sliced_cramer_von_mises_official"

  def slice_all(z, key):
    return {
      "ours": normality.sliced(normality.cramer_von_mises)(z, key, 16),
      "by_name": by_name(z, key, 16),
      "qualified": normality.sliced("cramer_von_mises@official")(z, key, 16),
      "bound": normality.sliced(normality.cramer_von_mises, convention="official")(z, key, 16),
    }

  values = jax.jit(slice_all)(_columns((2, 64, 8), seed=27), jax.random.key(7))
  np.testing.assert_allclose(values["by_name"], (values["ours"] - 1 / (12 * 64)) / 64, rtol=1e-5)
  np.testing.assert_array_equal(values["qualified"], values["by_name"])
  np.testing.assert_array_equal(values["bound"], values["by_name"])
  # Epps-Pulley takes a convention by name (the same statistic in both): the plain function.
  assert normality.sliced("epps_pulley", convention="official").__name__ == "sliced_epps_pulley"


@pytest.mark.parametrize(
  "call,match",
  [
    (lambda: normality.get_test("watson@torch"), "`convention` must be one of"),
    (lambda: normality.get_test("watson", convention="paper"), "`convention` must be one of"),
    (lambda: normality.get_test("watson@official", convention="lejepa_jax"), "contradicts"),
    (lambda: normality.get_test("kolmogorov@official"), "Unknown normality test.*@<convention>"),
    (lambda: normality.cramer_von_mises(np.ones((4, 2), np.float32), convention="torch"), "one of"),
    (lambda: normality.bhep(np.ones((4, 2), np.float32), convention="Official"), "one of"),
  ],
)
def test_bad_convention_is_rejected(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_official_test_chosen_in_the_config_reaches_the_loss():
  name, config = "shapiro_wilk", config_lib.base_config()
  config.loss.test, config.loss.num_slices = f"{name}@official", 16
  z, key = _columns((40, 3, 8), seed=28), jax.random.key(8)
  # As the train step calls it: the loss config as keyword arguments, nothing else to set.
  _, parts = jax.jit(functools.partial(losses.lejepa_loss, num_global=2, **dict(config.loss)))(z, key)
  directions = np.asarray(losses.random_directions(key, 8, 16), np.float64)
  want = np.mean([OFFICIAL_REFERENCES[name](z[:, v].astype(np.float64) @ directions) for v in range(3)])
  np.testing.assert_allclose(parts["sigreg"], want, rtol=1e-4)
