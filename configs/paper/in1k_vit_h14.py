r"""The abstract's ImageNet-1k result: ViT-H/14, frozen linear probe 79%.

    python -m lejepa_jax.main --config=configs/paper/in1k_vit_h14.py --workdir=DIR \
        --config.data.data_dir=TFDS_DIR
    python -m lejepa_jax.evaluate --config=configs/paper/probe/in1k_vit_h14.py --workdir=DIR

Published: "LeJEPA reaches 79% with a ViT-H/14" on ImageNet-1k (abstract, frozen linear probe). The
paper gives no recipe for this run: lejepa_jax trains it with the recipe of Table 1 and section 6.4
(configs/paper/in1k_vit_l14.py: 2 x 224 + 6 x 98 px views, lambda 0.05, 1024 slices, AdamW lr 5e-4,
weight decay 5e-2, warmup + cosine to lr/1000, batch 512, drop-path 0.1, bfloat16, 100 epochs);
the epochs are the paper's ImageNet-1k length, not stated for this run. Parameters FSDP-sharded over 8
devices. Cost: docs/reproducing.md. Arguments: epochs=, runlocal.
"""

from lejepa_jax import config_lib


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, epochs=100.0, **config_lib.RUNLOCAL_ARGS)
  c = config_lib.imagenet_vit_config(None, variant="H/14", fsdp=8)
  config_lib.set_schedule(c, args["epochs"], config_lib.IMAGENET_TRAIN_EXAMPLES)
  return config_lib.finish(c, args)
