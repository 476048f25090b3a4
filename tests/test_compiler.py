"""XLA compiler options per backend (lejepa_jax.scale.compiler): parsing, effect on the program, no
effect on the values."""

import jax
import numpy as np
import pytest

from lejepa_jax.scale import compiler


def test_auto_is_the_backends_choice_and_nothing_on_accelerators():
  assert compiler.parse("auto", "cpu") == compiler.AUTO["cpu"]
  assert compiler.parse("auto", "tpu") == {} == compiler.parse("auto", "gpu")
  assert compiler.parse("none", "cpu") == {} == compiler.parse("", "cpu")


def test_listed_options_are_typed_and_override_auto():
  chosen = compiler.parse("auto; xla_cpu_enable_fast_math=false;xla_cpu_prefer_vector_width=512", "cpu")
  assert chosen["xla_cpu_enable_fast_math"] is False
  assert chosen["xla_cpu_prefer_vector_width"] == 512
  assert set(compiler.AUTO["cpu"]) <= set(chosen)
  name = next(iter(compiler.AUTO["cpu"]))
  assert compiler.parse(f"auto;{name}=", "cpu")[name] == ""  # later items win


def test_an_unreadable_item_names_itself():
  with pytest.raises(ValueError, match="fast_math"):
    compiler.parse("auto;fast_math", "cpu")


def _conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _numpy_conv(x, w):
  """float64 'SAME' 3x3 convolution, NHWC x HWIO."""
  x = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  h, wd = x.shape[1] - 2, x.shape[2] - 2
  return sum(
    np.einsum("nhwc,co->nhwo", x[:, i : i + h, j : j + wd], w[i, j].astype(np.float64))
    for i in range(3)
    for j in range(3)
  )


def test_cpu_choice_keeps_convolutions_out_of_ynnpack_with_the_same_values():
  if jax.default_backend() != "cpu":
    pytest.skip("the CPU choice applies to CPU backends")
  rng = np.random.default_rng(0)
  # Large enough for XLA to hand the convolution to YNNPACK by default (small ones it keeps).
  x = rng.normal(size=(8, 16, 16, 32)).astype(np.float32)
  w = rng.normal(size=(3, 3, 32, 32)).astype(np.float32)
  texts, outputs = {}, {}
  for setting in ("none", "auto"):
    compiled = jax.jit(_conv).lower(x, w).compile(compiler_options=compiler.parse(setting))
    texts[setting], outputs[setting] = compiled.as_text(), np.asarray(compiled(x, w))
  assert "ynn_fusion" in texts["none"]  # XLA's default routes the convolution to YNNPACK
  assert "ynn_fusion" not in texts["auto"] and "convolution(" in texts["auto"]
  reference = _numpy_conv(x, w)
  for setting, out in outputs.items():
    np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-4, err_msg=setting)


def test_config_setting_is_read_and_a_config_without_the_key_means_auto():
  import ml_collections

  with_key = ml_collections.ConfigDict({"compiler_options": "none"})
  assert compiler.options(with_key) == {}
  assert compiler.options(ml_collections.ConfigDict({})) == compiler.parse("auto")
