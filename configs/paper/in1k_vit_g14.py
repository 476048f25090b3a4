r"""Figure 1 (top right): ViT-g/14 on ImageNet-1k, a stable training loss without heuristics.

    python -m lejepa_jax.main --config=configs/paper/in1k_vit_g14.py --workdir=DIR \
        --config.data.data_dir=TFDS_DIR
    python -m lejepa_jax.evaluate --config=configs/paper/probe/in1k_vit_g14.py --workdir=DIR --follow

Published: a curve, no number: the training loss decreasing smoothly and the online probe's accuracy
rising over about 72 epochs (the plot's last tick) of a "1.8B" ViT-g. What to reproduce: the loss
of DIR/metrics.jsonl (curves.png) with no spike or plateau, and the probe rising with it.

lejepa_jax's ViT-g/14 is Zhai et al.'s (width 1408, depth 40, MLP 6144, 16 heads: 1.0B parameters);
the paper's "1.8B" matches ViT-G (1.8B), which it does not name. No recipe is given: lejepa_jax
uses the Table 1 recipe (configs/paper/in1k_vit_l14.py) at 100 epochs, with parameters and optimizer
state FSDP-sharded over 16 devices and every block rematerialised (remat=full: the memory plan in
docs/reproducing.md). Arguments: epochs=, runlocal.
"""

from lejepa_jax import config_lib


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, epochs=100.0, **config_lib.RUNLOCAL_ARGS)
  c = config_lib.imagenet_vit_config(None, variant="g/14", fsdp=16)
  c.model.remat = "full"
  config_lib.set_schedule(c, args["epochs"], config_lib.IMAGENET_TRAIN_EXAMPLES)
  return config_lib.finish(c, args)
