r"""Table 3, Figure 12, Figure 1 (bottom right) and Table 5: LeJEPA pretrained on Galaxy10 in-domain.

    python -m lejepa_jax.main --config=configs/paper/galaxy10.py[:arch=convnextv2_nano] --workdir=DIR \
        --config.data.data_dir=TFDS_DIR
    python -m lejepa_jax.evaluate --config=configs/paper/probe/galaxy10.py --workdir=DIR
    python -m lejepa_jax.evaluate --config=configs/paper/probe/galaxy10.py:finetune --workdir=DIR

Published (Table 3, top-1 on the test split, mean of 3 seeds; columns: training examples per class):

  frozen backbone (linear probe)   all     1      2      5      10     100    1000
  ConvNeXt-V2 Nano                76.52  28.74  36.65  50.60  59.50  72.62  77.24
  LeViT-128                       69.00  25.85  33.30  45.52  52.43  64.37  69.39
  ResNet-18                       75.95  30.48  38.22  50.85  58.86  72.70  76.39
  ResNet-34 (the default arch)    78.17  31.08  38.33  52.26  60.63  74.77  78.62
  full fine-tuning                 all     1      2      5      10     100    1000
  ConvNeXt-V2 Nano                82.72  29.42  36.65  50.94  59.85  75.34  81.97
  LeViT-128                       79.41  18.45  24.08  33.11  41.76  64.59  77.59
  ResNet-18                       82.15  23.34  31.56  43.82  54.64  73.53  81.41
  ResNet-34                       83.28  24.27  31.51  44.23  53.95  74.93  82.32

Against transfer from natural images (same table): DINOv2 ViT-S 67.62 frozen / 78.34 fine-tuned,
DINOv3 ViT-S/16 71.38 / 81.60 with all examples. Table 5's Galaxy10 column (frozen, all): ResNet-18
75.32, ResNet-34 77.29, ConvNeXt-V2 Nano 76.05, resnext26ts 73.78 (`arch=resnext26ts`), swin_tiny
74.89 (`arch=swin_tiny`). LeViT-128: `arch=levit_128`. Figures 10, 11 and 19 (ResNet-50 and ViT-S/8
on Galaxy10: Spearman of the training loss with the linear probe 0.85 / 0.88 raw, 0.98 with the loss
* lambda^-0.4) come from sweeps: `python -m lejepa_jax.ablate
--config=configs/paper/galaxy10.py:arch=resnet50 --workdir=DIR
--sweep=loss.sigreg_weight=0.01,0.02,0.05,0.1,0.2`.

Data: Galaxy10 (section 6.3: "11,000 training samples across 10 galaxy types"; Table 5: 11,008). The
paper names neither the release nor the split; 11,008 matches neither Galaxy10 SDSS (21,785 images,
69 px) nor Galaxy10 DECaLS (17,736, 256 px). lejepa_jax reads Galaxy10 DECaLS (the authors' later
data library's choice) from an image folder, DIR/train/<class>/ and DIR/test/<class>/ with the
paper's 11,008 training images: `python -m lejepa_jax.prepare folder --name=galaxy10_decals
--source=DIR --out=DATA_DIR`.

Settings: section 6.3, "we use the default hyper-parameters and pretrain for 400 epochs"
(lejepa_jax.recipes: 8 global views of 224 px, lambda 0.05, 1024 slices, AdamW lr 5e-4, weight decay
5e-4 for ResNets and ResNeXt, 5e-2 for ConvNeXt-V2, Swin and LeViT, warmup + cosine to lr/1000,
bfloat16). Left out by the paper, from the authors' code: crop scale (0.3, 1), batch 512, 10 warmup
epochs, the probe protocol. The fine-tuning recipe is the paper's omission too: lejepa_jax's
(lejepa_jax/evaluation/finetune.py). Cost: docs/reproducing.md. Arguments: arch=, epochs=, lam=,
views=, runlocal.
"""

from lejepa_jax import recipes


def get_config(arg: str | None = None):
  text = arg or ""
  if "arch=" not in text:  # Figure 1's and Table 3's best in-domain backbone
    text = ",".join(filter(None, ["arch=resnet34", text]))
  return recipes.table5_config(text, "galaxy10")
