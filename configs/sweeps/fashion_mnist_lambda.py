r"""The lambda sweep of the embedded default: 6 members trained as long as the default, as one
batched ablation, then evaluated with the paper's protocol. One command:

    python -m lejepa_jax.ablate --config=configs/sweeps/fashion_mnist_lambda.py \
        --workdir=workdirs/sweep_lambda --probe=configs/probe/fashion_mnist.py:sweep \
        --sweep=loss.sigreg_weight=0.0,0.01,0.02,0.05,0.1,0.2

Every member is `configs/fashion_mnist.py` with its own lambda. The report (`DIR/ablation.json`,
`DIR/ablation.png`, the printed table) gives each member's loss, its parts, linear and kNN accuracy
on the pooled embedding (probes fitted on all 60,000 training images), RankMe, and Spearman(loss,
accuracy) over all members and over lambda > 0, also with the loss rescaled by lambda^-0.4.

Only the final checkpoint of each member is kept and evaluated; `--config.keep_checkpoints=2` also
evaluates the halfway checkpoints, to see how the correlation moves with training. Its time and
results: docs/results.md ("The lambda sweep of the default").
"""

import os

import ml_collections

from lejepa_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = config_lib.load_config_file(
    os.path.join(os.path.dirname(os.path.dirname(__file__)), "fashion_mnist.py"), arg
  )
  config.keep_checkpoints = 1  # the evaluation job evaluates the final checkpoints only
  return config
