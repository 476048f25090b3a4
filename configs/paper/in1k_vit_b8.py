r"""Figure 1 (top left) and Figure 19: ViT-B/8 on ImageNet-1k, the training loss ranks the runs.

    python -m lejepa_jax.main --config=configs/paper/in1k_vit_b8.py:lam=0.04 --workdir=DIR_0.04 \
        --config.data.data_dir=TFDS_DIR      # and lam=0.08, 0.12, 0.16, 0.20
    python -m lejepa_jax.evaluate --config=configs/paper/probe/in1k_vit_b8.py --workdir=DIR_0.04

Published: Spearman correlation 94.52% between the final training loss and the linear probe's
top-1 over ViT-B/8 runs on ImageNet-1k whose lambda spans 0.04 to 0.20 (Figure 1's colour bar;
Figure 19); 0.88 raw and 0.93 with the loss * lambda^-0.4 (Figure 11); Figure 10's panel reaches
72.90% top-1. The paper does not list the runs (they vary lambda, lr, weight decay and epochs), their
lengths or their recipe: lejepa_jax uses the Table 1 recipe (configs/paper/in1k_vit_l14.py: 2 x 224 +
6 x 96 px views, 1024 slices, AdamW lr 5e-4, weight decay 5e-2, batch 512, drop-path 0.1, bfloat16)
for 100 epochs with `lam=` per run. The Spearman correlation of the runs' summary.json losses with
their eval/linear.jsonl accuracies is what the ablation report computes for a sweep; with each
member as a separate run, compute it from those files. Arguments: lam=, epochs=, runlocal.
"""

from lejepa_jax import config_lib


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, lam=0.05, epochs=100.0, **config_lib.RUNLOCAL_ARGS)
  c = config_lib.imagenet_vit_config(None, variant="B/8", fsdp=1)
  c.loss.sigreg_weight = args["lam"]
  config_lib.set_schedule(c, args["epochs"], config_lib.IMAGENET_TRAIN_EXAMPLES)
  return config_lib.finish(c, args)
