r"""The lambda sweep on Fashion-MNIST as one batched ablation, sized for a 2-core CPU (~15 minutes).

    python -m lejepa_jax.ablate --config=configs/fashion_mnist_ablation.py \
        --workdir=workdirs/fashion_mnist_ablation \
        --sweep=loss.sigreg_weight=0.0,0.01,0.02,0.05,0.1,0.2

The embedded default recipe (configs/fashion_mnist.py: views, augmentation, optimizer) with a
ResNet-18 of width 16, batches of 64 and 120 steps (0.13 epochs), so that six members train together
in about 15 minutes. Prepare the data first (see configs/fashion_mnist.py).
"""

import os

import ml_collections

from lejepa_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = config_lib.parse_arg(arg, **config_lib.RUNLOCAL_ARGS)
  c = config_lib.load_config_file(os.path.join(os.path.dirname(__file__), "fashion_mnist.py"))
  c.model.width = 16  # ResNet stage widths 16, 32, 64, 128
  c.data.global_batch_size = 64
  c.total_steps, c.optim.warmup_steps, c.checkpoint_every = 120, 12, 60
  return config_lib.finish(c, args)  # runlocal shrinks the sweep's members too
