r"""The paper's evaluation of configs/paper/imagenet100.py: frozen backbone, linear probe (LayerNorm +
Linear, AdamW with weight decay 1e-6, warmup + cosine) on the ViTs' CLS tokens of the last two
blocks, the ResNets' pooled final map, trained on the whole training split; top-1 on the validation
split (kNN beside it).

    python -m lejepa_jax.evaluate --config=configs/paper/probe/imagenet100.py --workdir=DIR [--follow]

The probe's epochs and learning rate are not in the paper (the authors' README: "same schedule as
pre-training"); lejepa_jax's defaults: 30 epochs, lr 1e-3. The training run's own online probe
(metrics.jsonl, probe_acc) is the paper's "online linear probe" of section 6.4.
"""

from lejepa_jax import config_lib, recipes


def get_config(arg: str | None = None):
  config_lib.parse_arg(arg)
  return recipes.probe_config("paper_imagenet100")
