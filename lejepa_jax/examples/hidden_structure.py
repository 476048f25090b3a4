"""The paper's synthetic test of SIGReg: can a sliced normality test find a 2-D structure hidden in D-D?

    python -m lejepa_jax.examples.hidden_structure [--out_dir workdirs/hidden_structure] [--dims 8,512]

N = 100 samples in D dimensions are isotropic Gaussian except in two dimensions, which hold an "X":
(t, s t) with t ~ N(0, 1) and a random sign s. Both of its marginals are N(0, 1) and its covariance is
the identity, so every projection has the mean and variance of N(0, 1): only the shape gives it away.
For each univariate test in `losses.normality.TESTS`, the embeddings themselves are optimised (Adam) to
minimise the sliced test, with M = 16 random directions redrawn every step. Writes
`hidden_structure.png` (the two hidden dimensions at the start and after each optimisation, one row per
D) and `results.json` (per D and test: the sliced statistic before and after, over 1024 fresh
directions, and how much X is left in the hidden plane). The paper's setting is D = 512 to 1024;
a small D shows the mechanism within a CPU-minute's budget of steps. Adam normalises every
coordinate's step, so the noise of redrawing directions alone slowly blurs the X whatever the test:
compare each test with VCReg, which cannot see the X at all.

References: Balestriero & LeCun, LeJEPA, arXiv 2511.08544, 2025, section 4.2 (figures 5 and 6).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from absl import flags

from lejepa_jax import cli
from lejepa_jax.losses import normality

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

HIDDEN = (0, 1)  # the two dimensions holding the X
EVAL_SLICES = 1024  # directions for the before/after statistics (not the M used to optimise)


def _check_dims(dims: list[str]) -> bool:
  if not dims or not all(d.strip().isdigit() and int(d) > 0 for d in dims):
    raise flags.ValidationError("the dimensions must be positive integers")
  return True


def _check_tests(names: list[str]) -> bool:
  for name in names:
    try:
      normality.get_test(name)
    except ValueError as e:
      raise flags.ValidationError(str(e)) from None
  return True


_PROG = "python -m lejepa_jax.examples.hidden_structure"
_FLAGS = flags.FlagValues()  # this command's own flags (`lejepa_jax.cli`)
_OUT_DIR = flags.DEFINE_string(
  "out_dir",
  "workdirs/hidden_structure",
  "where hidden_structure.png and results.json go",
  flag_values=_FLAGS,
)
_STEPS = flags.DEFINE_integer("steps", 1500, "optimisation steps per test", flag_values=_FLAGS)
_SEED = flags.DEFINE_integer(
  "seed", 0, "seed of the data, directions and evaluation", flag_values=_FLAGS
)
_DIMS = flags.DEFINE_list("dims", ["8", "512"], "comma-separated dimensions D", flag_values=_FLAGS)
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 100, "N", flag_values=_FLAGS)
_NUM_SLICES = flags.DEFINE_integer("num_slices", 16, "directions per step (M)", flag_values=_FLAGS)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.01, "Adam's learning rate", flag_values=_FLAGS)
_TESTS = flags.DEFINE_list(
  "tests", list(normality.TESTS), "comma-separated names from losses.normality.TESTS", flag_values=_FLAGS
)
flags.register_validator("dims", _check_dims, flag_values=_FLAGS)
flags.register_validator("tests", _check_tests, flag_values=_FLAGS)


def hidden_x_data(key: jax.Array, num_samples: int = 100, dim: int = 512) -> jax.Array:
  """[N, D] isotropic Gaussian samples whose dimensions 0 and 1 hold an X with N(0, 1) marginals."""
  gauss_key, t_key, sign_key = jax.random.split(key, 3)
  z = jax.random.normal(gauss_key, (num_samples, dim))
  t = jax.random.normal(t_key, (num_samples,))
  sign = jax.random.rademacher(sign_key, (num_samples,), dtype=z.dtype)
  return z.at[:, HIDDEN[0]].set(t).at[:, HIDDEN[1]].set(sign * t)


def optimise(
  z: jax.Array, key: jax.Array, test_name: str, *, steps: int, num_slices: int, learning_rate: float
) -> tuple[jax.Array, jax.Array]:
  """Adam on the embeddings z [N, D] against the sliced test; directions redrawn every step.

  Returns the final embeddings [N, D] and the loss at every step [steps].
  """
  loss_fn = normality.sliced(normality.get_test(test_name))
  optimizer = optax.adam(learning_rate)

  def step(carry, index):
    z, opt_state = carry
    loss, grad = jax.value_and_grad(loss_fn)(z, jax.random.fold_in(key, index), num_slices)
    updates, opt_state = optimizer.update(grad, opt_state)
    return (optax.apply_updates(z, updates), opt_state), loss

  (z, _), losses = jax.lax.scan(step, (z, optimizer.init(z)), jnp.arange(steps))
  return z, losses


def hidden_plane_measures(z: np.ndarray) -> dict[str, float]:
  """How much X is left in the two hidden dimensions of z [N, D].

  abs_correlation = |corr(|z_0|, |z_1|)|: 1 for an X, about 0 for a Gaussian; henze_zirkler: the
  multivariate normality statistic of the 2-D points (any mean and covariance).
  """
  plane = np.asarray(z[:, HIDDEN], np.float64)
  abs_corr = np.corrcoef(np.abs(plane[:, 0]), np.abs(plane[:, 1]))[0, 1]
  return {
    "abs_correlation": float(abs(abs_corr)),
    "henze_zirkler": float(normality.henze_zirkler(plane.astype(np.float32))),
  }


def evaluate(z: jax.Array, test_name: str, key: jax.Array) -> float:
  """The sliced test over many fresh directions: the statistic the optimisation minimised."""
  return float(
    jax.jit(normality.sliced(normality.get_test(test_name)), static_argnums=2)(z, key, EVAL_SLICES)
  )


def plot(runs: dict[int, dict[str, np.ndarray]], path: str) -> None:
  """Scatter plots of the two hidden dimensions: one row per D, the data then each test's result."""
  cols = max(len(panels) for panels in runs.values())
  fig, axes = plt.subplots(len(runs), cols, figsize=(2.4 * cols, 2.5 * len(runs)), squeeze=False)
  for row, (dim, panels) in zip(axes, runs.items()):
    for ax, (title, z) in zip(row, panels.items()):
      ax.scatter(z[:, HIDDEN[0]], z[:, HIDDEN[1]], s=4)
      ax.set_title(f"{title}, D={dim}", fontsize=8)
      ax.set(xlim=(-4, 4), ylim=(-4, 4), aspect="equal", xticks=[], yticks=[])
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def run_dim(
  dim: int,
  keys: tuple[jax.Array, ...],
  tests: Sequence[str],
  *,
  steps: int,
  num_slices: int,
  learning_rate: float,
  num_samples: int,
) -> tuple[dict, dict[str, np.ndarray]]:
  """One dimension D: the data, then each test's optimisation; returns (results, hidden planes)."""
  data_key, opt_key, eval_key = keys
  z0 = hidden_x_data(data_key, num_samples, dim)
  results = {"start": hidden_plane_measures(np.asarray(z0)), "tests": {}}
  finals = {"start": np.asarray(z0)}
  jitted = jax.jit(optimise, static_argnames=("test_name", "steps", "num_slices"))
  for name in tests:
    z, curve = jitted(z0, opt_key, name, steps=steps, num_slices=num_slices, learning_rate=learning_rate)
    finals[name] = np.asarray(z)
    results["tests"][name] = {
      "initial": evaluate(z0, name, eval_key),
      "final": evaluate(z, name, eval_key),
      "first_step_loss": float(curve[0]),
      "last_step_loss": float(curve[-1]),
      "hidden_plane": hidden_plane_measures(finals[name]),
    }
    print(f"D={dim:<4} {name:>17}: {json.dumps(results['tests'][name])}", flush=True)
  return results, finals


def run(
  out_dir: str,
  *,
  dims: Sequence[int] = (8, 512),
  steps: int = 1500,
  seed: int = 0,
  num_slices: int = 16,
  learning_rate: float = 0.01,
  num_samples: int = 100,
  tests: Sequence[str] = tuple(normality.TESTS),
) -> dict:
  """Runs the experiment for each D and test; writes hidden_structure.png and results.json."""
  os.makedirs(out_dir, exist_ok=True)
  keys = tuple(jax.random.split(jax.random.key(seed), 3))
  results = {
    "settings": dict(
      steps=steps, seed=seed, num_slices=num_slices, learning_rate=learning_rate, num_samples=num_samples
    ),
    "dims": {},
  }
  planes = {}
  for dim in dims:
    results["dims"][str(dim)], planes[dim] = run_dim(
      dim,
      keys,
      tests,
      steps=steps,
      num_slices=num_slices,
      learning_rate=learning_rate,
      num_samples=num_samples,
    )
  plot(planes, os.path.join(out_dir, "hidden_structure.png"))
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  return results


def main(argv: list[str] | None = None) -> None:
  """The command line (module docstring); `argv` without the program name, None: sys.argv[1:]."""
  cli.parse(_FLAGS, argv, prog=_PROG, doc=__doc__)
  run(
    _OUT_DIR.value,
    dims=[int(d) for d in _DIMS.value],
    steps=_STEPS.value,
    seed=_SEED.value,
    num_slices=_NUM_SLICES.value,
    learning_rate=_LEARNING_RATE.value,
    num_samples=_NUM_SAMPLES.value,
    tests=_TESTS.value,
  )


if __name__ == "__main__":
  main()
