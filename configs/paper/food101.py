r"""Table 5, Food101: LeJEPA pretrained in-domain from random initialisation, frozen linear probe.

    python -m lejepa_jax.main --config=configs/paper/food101.py[:arch=resnet34] --workdir=DIR \
        --config.data.data_dir=TFDS_DIR
    python -m lejepa_jax.evaluate --config=configs/paper/probe/food101.py --workdir=DIR

Published (Table 5, frozen-backbone linear top-1 on the test split, 75,750 training images):

  resnet18          73.57%
  resnet34          74.95%
  convnextv2_nano   69.59%
  resnext26ts       76.77%
  swin_tiny         78.40%

Data: TFDS `food101` (validation split as the test set).

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
  return recipes.table5_config(arg, "food101")
