r"""The normality tests compared as SIGReg's univariate test on the embedded default, at the authors'
scales: 7 members, one per test, each trained for 700 steps (half the default's 1400), then evaluated
with the paper's protocol. One command:

    python -m lejepa_jax.ablate --config=configs/sweeps/fashion_mnist_tests.py \
        --workdir=workdirs/sweep_tests --probe=configs/probe/fashion_mnist.py:sweep \
        --sweep=loss.test=epps_pulley,anderson_darling@official,cramer_von_mises@official,watson@official,jarque_bera@official,shapiro_wilk@official,vcreg

Every member is `configs/fashion_mnist.py` with its own test; "@official" selects the definition and
scale of the authors' code (docs/normality_tests.md). A test changes the program, so each member is
its own group and the members train one after another. Its time and results: docs/results.md ("The
normality tests as SIGReg's univariate test").
"""

import os

import ml_collections

from lejepa_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.load_config_file(
    os.path.join(os.path.dirname(os.path.dirname(__file__)), "fashion_mnist.py"), arg
  )
  c.total_steps = 700
  c.checkpoint_every = 700
  c.keep_checkpoints = 1
  return c
