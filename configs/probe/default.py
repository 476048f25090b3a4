r"""All evaluators on a training run's checkpoints, with the paper's protocol for the features.

    python -m lejepa_jax.evaluate --config=configs/probe/default.py --workdir=<training workdir> \
        [--step=N | --follow] [--config.evaluators=linear,knn] [--config.train_examples=10000]
"""

import ml_collections

from lejepa_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config_lib.parse_arg(arg)  # takes no arguments: anything after ':' is an error, not ignored
  return config_lib.probe_config()
