r"""The demo's evaluation of the embedded default, next to the raw-pixel and random-init baselines.

    python -m lejepa_jax.evaluate --config=configs/probe/fashion_mnist.py \
        --workdir=workdirs/fashion_mnist [--follow]

`:fast` fits the probes on the first 2000 training images and tests on the first 2000 test images
(the short CI demo).
"""

import ml_collections

from lejepa_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = config_lib.parse_arg(arg, fast=False)
  c = config_lib.probe_config()
  c.name = "fashion_mnist"
  # The probes read the unpooled maps of the last two stages, concatenated (7 x 7 x 128 + 4 x 4 x 256
  # = 10368 values for the default ResNet-18 of width 32), as the paper's protocol concatenates the
  # last two blocks: see configs/fashion_mnist.py for the measurements behind this choice.
  c.features = "feature_map"
  c.feature_stages = 2
  c.baselines = "pixels,random_init"
  c.evaluators = "linear,knn,fewshot,label_free,pictures"
  if args["fast"]:
    c.train_examples = c.eval_examples = 2000
    c.linear = dict(c.linear, epochs=10)
  return c
