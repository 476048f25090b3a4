r"""Table 5, ImageNet-10: LeJEPA pretrained in-domain from random initialisation, frozen linear probe.

    python -m lejepa_jax.main --config=configs/paper/imagenet10.py[:arch=resnet34] --workdir=DIR \
        --config.data.data_dir=TFDS_DIR
    python -m lejepa_jax.evaluate --config=configs/paper/probe/imagenet10.py --workdir=DIR

Published (Table 5, frozen-backbone linear top-1 on the test split, 13,000 training images):

  resnet18          92.36%
  resnet34          92.80%
  convnextv2_nano   90.81%
  resnext26ts       92.82%
  swin_tiny         92.87%

Figure 9 (ImageNet-10, 50 timm models under 20M parameters, 400 epochs, lr and weight decay
cross-validated): every model between 91.5% and 95% frozen linear top-1 (the figure gives no
per-model numbers). All 30 backbones its legend labels, built as timm defines them (`arch=` their
timm name; tests/test_timm_interop.py holds their features to timm's):

  convnext_atto_ols convnext_atto_rms convnext_femto convnext_nano convnext_nano_ols
  convnext_pico_ols convnext_zepto_rms convnext_zepto_rms_ols convnextv2_femto
  efficientnet_b0_g8_gn efficientnet_b0_gn inception_next_atto levit_128 levit_128s levit_192
  levit_conv_256 maxvit_nano_rw_256 maxvit_pico_rw_256 maxvit_rmlp_nano_rw_256
  maxvit_rmlp_pico_rw_256 resnet14t resnet18d resnet26 resnet26d resnet26t resnet32ts resnet33ts
  resnetblur18 resnext26ts vit_pe_core_tiny_patch16_384

(timm's `_256` MaxViTs are laid out here for the 224 px views: windows and grids of 7 tokens
instead of 8; `--config.model.img_size=256` with 256 px views gives timm's layout. Its 384 px
Perception Encoder ViT takes 2 global views of 224 px and 6 local of 96, as the ViTs: its position
embeddings are defined on the 224 px grid and resized, its rotary embeddings rescaled, per view.)

The authors' script for it
(scripts/launch_inet10.py) sets batch 512, 8 views at 224 px without multi-crop, drop-path 0, lambda
in {0.01, 0.02, 0.05, 0.1}, lr in {3e-3, 1e-4}, weight decay in {3e-2, 1e-5}:

    python -m lejepa_jax.ablate --config=configs/paper/imagenet10.py:arch=convnextv2_femto \
        --workdir=DIR --sweep=optim.lr=3e-3,1e-4 --sweep=optim.weight_decay=3e-2,1e-5

Figures 10, 11, 19 and 21 (ResNet-50 on ImageNet-10: Spearman of the training loss with the
linear probe 0.81 raw, 0.99 with the loss * lambda^-0.4; Figure 19: 99.16%) come from such sweeps
(`arch=resnet50`, `--sweep=loss.sigreg_weight=0.01,0.02,0.05,0.1,0.2`); the ablation's report
prints the Spearman correlations.

Data: an image folder of 10 ImageNet-1k classes (the paper names neither the classes nor the split;
13,000 training images is 1,300 per class): `python -m lejepa_jax.prepare folder
--name=imagenet10 --source=DIR --out=DATA_DIR` with DIR/train/<class>/ and DIR/validation/<class>/.

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
  return recipes.table5_config(arg, "imagenet10")
