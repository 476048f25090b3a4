r"""The lambda sweep of the embedded default: 6 members trained as long as the default, as one
batched ablation, then evaluated with the paper's protocol. One command (about 88 minutes on a
2-core AMD EPYC: 3.52 s per step for the six members, measured with `python -m lejepa_jax.bench
ablate --end_to_end --members 6`, is 83 minutes of training with set-up, then 5 of evaluation):

    python -m lejepa_jax.ablate --config=configs/sweeps/fashion_mnist_lambda.py \
        --workdir=workdirs/sweep_lambda --probe=configs/probe/fashion_mnist.py:sweep \
        --sweep=loss.sigreg_weight=0.0,0.01,0.02,0.05,0.1,0.2

Every member is `configs/fashion_mnist.py` (ResNet-18 width 16, 2 x 28 px views, batch 128, 1400
steps) with its own lambda. The report (`DIR/ablation.json`, `DIR/ablation.png`, the printed table)
gives each member's loss, its parts, linear and kNN accuracy on the pooled embedding (probes fitted
on all 60,000 training images), RankMe, and Spearman(loss, accuracy) over all members and over
lambda > 0, also with the loss rescaled by lambda^-0.4. Results: docs/results.md.

Only the final checkpoint of each member is kept and evaluated, which keeps the sweep inside 90
minutes; `--config.keep_checkpoints=2` also evaluates the halfway (step-700) checkpoints, about 5
minutes more, to see how the correlation moves with training (docs/results.md has both).
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
