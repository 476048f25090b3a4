r"""Table 5, Flowers102: LeJEPA pretrained in-domain from random initialisation, frozen linear probe.

    python -m lejepa_jax.main --config=configs/paper/flowers102.py[:arch=resnet34] --workdir=DIR \
        --config.data.data_dir=TFDS_DIR
    python -m lejepa_jax.evaluate --config=configs/paper/probe/flowers102.py --workdir=DIR

Published (Table 5, frozen-backbone linear top-1 on the test split, 1,020 training images):

  resnet18          74.57%
  resnet34          71.85%
  convnextv2_nano   64.34%
  resnext26ts       82.19%
  swin_tiny         63.94%

Figures 11, 19 and 21 (ResNet-18 on Flowers102: Spearman of the training loss with the linear probe
0.60 raw, 0.95 with the loss * lambda^-0.4; Figure 19: 93.82%) come from sweeps over lambda (0.01,
0.02, 0.05, 0.1, 0.2), lr, weight decay and epochs, whose grids the paper does not give:

    python -m lejepa_jax.ablate --config=configs/paper/flowers102.py --workdir=DIR \
        --sweep=loss.sigreg_weight=0.01,0.02,0.05,0.1,0.2

Data: TFDS `oxford_flowers102` (train split of 1,020 images; test split of 6,149).

Settings (lejepa_jax.recipes: the paper's section 6.1 recipe): 8 global views of 224 px (every
backbone but the ViT takes every view global, Algorithm 2), lambda 0.05, 1024 slices, AdamW lr 5e-4
with weight decay 5e-4 (ResNets, ResNeXt) or 5e-2 (ConvNeXt-V2, Swin), warmup + cosine to lr/1000,
bfloat16 compute, projector 2048-2048-512. Left out by the paper, taken from the authors' code: crop
scale (0.3, 1) (README), batch 512 (launch scripts), 10 warmup epochs; the epochs (400) are
Galaxy10's (section 6.3) and those of the authors' ImageNet-10 script: the paper states none for
this table. Cost and the row to fill: docs/reproducing.md. Arguments: arch=
(lejepa_jax.recipes.ARCHITECTURES), epochs=, lam=, views=, runlocal.
"""

from lejepa_jax import recipes


def get_config(arg: str | None = None):
  return recipes.table5_config(arg, "flowers102")
