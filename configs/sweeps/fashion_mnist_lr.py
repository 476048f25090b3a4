r"""The learning-rate sweep of the embedded default: 5 members trained as long as the default, as
one batched ablation, then evaluated with the paper's protocol. One command:

    python -m lejepa_jax.ablate --config=configs/sweeps/fashion_mnist_lr.py \
        --workdir=workdirs/sweep_lr --probe=configs/probe/fashion_mnist.py:sweep \
        --sweep=optim.lr=5e-4,1e-3,2e-3,4e-3,8e-3

Every member is `configs/fashion_mnist.py` with its own peak learning rate. The report is as for
configs/sweeps/fashion_mnist_lambda.py. Its time and results: docs/results.md ("The learning-rate
sweep of the default").
"""

import os

import ml_collections

from lejepa_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return config_lib.load_config_file(
    os.path.join(os.path.dirname(os.path.dirname(__file__)), "fashion_mnist.py"), arg
  )
