r"""Probes on the unpooled maps of the last two stages of the Fashion-MNIST default, concatenated.

    python -m lejepa_jax.evaluate --config=configs/probe/fashion_mnist_maps.py \
        --workdir=workdirs/fashion_mnist

The analogue, on unpooled maps, of the paper's last-two-blocks protocol: for the default ResNet-18
of width 16, 7 x 7 x 64 + 4 x 4 x 128 = 5184 values per image (the pooled embedding has 128).
Pooling discards where in the image each feature fired, so these probes score higher for every
encoder, random ones included; the demo's probe config (`fashion_mnist.py`) keeps the paper's
pooled protocol. Several minutes and a few GB of memory per encoder on 2 cores.
"""

import ml_collections

from lejepa_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config_lib.parse_arg(arg)  # takes no arguments
  c = config_lib.probe_config()
  c.name = "fashion_mnist_maps"
  c.features = "feature_map"
  c.feature_stages = 2
  c.batch_size = 1024
  c.baselines = "random_init"
  c.evaluators = "linear,knn"
  return c
