r"""The demo's evaluation of the embedded default, next to the raw-pixel and random-init baselines.

    python -m lejepa_jax.evaluate --config=configs/probe/fashion_mnist.py \
        --workdir=workdirs/fashion_mnist [--follow]

The paper's protocol: probes read the pooled embedding (`features=embed`) and are fitted on all
60,000 training images. With `--follow` every kept checkpoint is evaluated, and
`eval/time_to_accuracy_fashion_mnist.png` shows accuracy against minutes of training.
`configs/probe/fashion_mnist_maps.py` probes the unpooled stage maps instead.
`:fast` fits the probes on the first 2000 training images and tests on the first 2000 test images
(the short CI demo). `:finetune` fine-tunes the whole encoder with a linear head instead
(lejepa_jax/evaluation/finetune.py, 1 epoch; results in DIR/eval/finetune.jsonl). `:sweep` runs the
linear and kNN probes only, without baselines (the sweeps of configs/sweeps/ evaluate every member
with it).
"""

import ml_collections

from lejepa_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = config_lib.parse_arg(arg, fast=False, sweep=False, finetune=False)
  c = config_lib.probe_config()
  c.name = "fashion_mnist"
  c.features = "embed"
  c.batch_size = 1024  # 28 px images: larger batches keep the CPU's kernels busy
  c.baselines = "pixels,random_init"
  c.evaluators = "linear,knn,fewshot,label_free,pictures"
  if args["finetune"]:  # the whole encoder + a head, beside the frozen probes of the same run
    c.baselines, c.evaluators = "", "finetune"
    c.finetune = dict(c.finetune, epochs=1.0, batch_size=128, lr=1e-3)
  if args["sweep"]:
    c.baselines, c.evaluators = "", "linear,knn"
  if args["fast"]:
    c.train_examples = c.eval_examples = 2000
    c.linear = dict(c.linear, epochs=10)
  return c
