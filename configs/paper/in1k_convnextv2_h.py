r"""Section 6.4 and Table 2: ConvNeXt-V2-H pretrained on ImageNet-1k for 100 epochs.

    python -m lejepa_jax.main --config=configs/paper/in1k_convnextv2_h.py --workdir=DIR \
        --config.data.data_dir=TFDS_DIR
    python -m lejepa_jax.evaluate --config=configs/paper/probe/in1k_convnextv2_h.py --workdir=DIR

Published: 78.5% online linear probe on ImageNet-1k (section 6.4, the paper's best ImageNet-1k
number); Table 2's few-shot transfer row (configs/paper/probe/in1k_transfer.py): average 31.58 (1
shot), 60.70 (10 shots), 77.56 (all).

Settings (section 6.4: "the same recipe as described in Section 6.1"; lejepa_jax.recipes): 8 views
of 224 px, all global (Algorithm 2 for ConvNets), lambda 0.05, 1024 slices, AdamW lr 5e-4, warmup +
cosine to lr/1000, bfloat16, 100 epochs. Left out by the paper: batch 512 and crop scale (0.3, 1)
(authors' scripts and README), weight decay 5e-2 and drop-path 0.1 (ConvNeXt-V2's own; the authors'
README names weight decays for ViTs and ResNets only). Parameters FSDP-sharded over 4 devices. On 8
chips the step fits only with `--config.model.remat=full` (50 GiB per device, TPU v5p compile);
without remat it needs 64 chips of 95 GiB. Cost: docs/reproducing.md. Arguments: epochs=, runlocal.
"""

from lejepa_jax import config_lib, recipes


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, epochs=100.0, **config_lib.RUNLOCAL_ARGS)
  c = recipes.paper_config("imagenet2012", "convnextv2_huge", args["epochs"])
  c.model.drop_path = 0.1
  c.mesh.axes = dict(data=-1, fsdp=4)
  return config_lib.finish(c, args)
