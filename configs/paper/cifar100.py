r"""Table 5, CIFAR-100: LeJEPA pretrained in-domain from random initialisation, frozen linear probe.

    python -m lejepa_jax.main --config=configs/paper/cifar100.py[:arch=resnet34] --workdir=DIR \
        --config.data.data_dir=TFDS_DIR
    python -m lejepa_jax.evaluate --config=configs/paper/probe/cifar100.py --workdir=DIR

Published (Table 5, frozen-backbone linear top-1 on the test split, 50,000 training images):

  resnet18          69.94%
  resnet34          70.44%
  convnextv2_nano   69.26%
  resnext26ts       69.10%
  swin_tiny         65.08%

Data: TFDS `cifar100` (32 px images, upsampled by the 224 px crops).

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
  return recipes.table5_config(arg, "cifar100")
