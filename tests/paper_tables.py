"""The paper's settings and published numbers, transcribed from its text (Balestriero & LeCun,
arXiv 2511.08544 v3) independently of configs/paper/, which tests/test_paper_configs.py holds to them.

Settings the paper leaves out and the configs take from the authors' code are not here: the tests
check what the paper states.
"""

# Section 6.1, "Experiment Details 1" and the recommendations: V = 8, 2 global views of 224 px, local
# views of 96 px (98 for patch-14 ViTs: a multiple of the patch), lambda 0.05, 1024 slices, 17
# integration points; ConvNets take every view as global (Algorithm 2).
VIEWS = 8
GLOBAL_VIEWS = 2
GLOBAL_SIZE = 224
LOCAL_SIZE = 96
LAMBDA = 0.05
SLICES = 1024
KNOTS = 17
FINAL_LR_FRACTION = 1e-3  # "warm-up cosine-annealing" to lr / 1000 (the authors' README)

IMAGENET_EPOCHS = 100  # Table 1's caption, Table 2's epochs column
IN_DOMAIN_EPOCHS = 400  # section 6.3 (Galaxy10)
IMAGENET100_EPOCHS = 400  # Table 4's caption, Figure 8's

# Table 1 (ViT-L/14, ImageNet-1k, 100 epochs, frozen linear top-1): (config arguments, number).
TABLE1 = [
  *[
    (dict(t_max=t, slices=m, knots=k), value)
    for (t, m), row in {
      (1, 512): (71.82, 72.13, 72.04),
      (1, 2048): (72.88, 72.30, 72.69),
      (3, 512): (73.95, 74.16, 74.04),
      (3, 2048): (75.02, 74.68, 74.77),
      (5, 512): (73.71, 74.21, 74.15),
      (5, 2048): (74.50, 74.80, 74.77),
    }.items()
    for k, value in zip((5, 17, 41), row)
  ],
  *[
    (dict(global_views=g, views=v), value)
    for v, row in {4: (53.06, 72.26, None), 6: (58.65, 73.07, 73.68), 8: (64.46, 74.24, 73.94)}.items()
    for g, value in zip((1, 2, 4), row)
    if value is not None
  ],
  (dict(global_views=1, views=10), 68.97),
  (dict(global_views=2, views=10), 74.06),
  (dict(global_views=4, views=10), 75.08),
  *[(dict(batch=b), value) for b, value in zip((128, 256, 512, 1024), (72.20, 74.15, 74.72, 74.07))],
  *[
    (dict(proj_dim=p, slices=m), value)
    for m, row in {
      1024: (75.29, 74.77, 74.56, 73.94, 73.65),
      4096: (75.50, 75.26, 75.08, 74.81, 74.71),
    }.items()
    for p, value in zip((64, 128, 256, 512, 1024), row)
  ],
  *[
    (dict(registers=r, slices=m), value)
    for m, row in {
      1024: (75.14, 75.18, 75.08, 75.34, 75.23),
      4096: (75.61, 75.58, 75.67, 75.63, 75.84),
    }.items()
    for r, value in zip((0, 1, 2, 4, 8), row)
  ],
]

# Table 5 (in-domain, frozen linear top-1): dataset -> (training images in its header, classes,
# {backbone: number}), every LeJEPA row of the table.
TABLE5_BACKBONES = ("convnextv2_nano", "resnet18", "resnet34", "resnext26ts", "swin_tiny")
TABLE5 = {
  dataset: (train_examples, classes, dict(zip(TABLE5_BACKBONES, row)))
  for dataset, train_examples, classes, row in [
    ("flowers102", 1020, 102, (64.34, 74.57, 71.85, 82.19, 63.94)),
    ("cifar100", 50000, 100, (69.26, 69.94, 70.44, 69.10, 65.08)),
    ("food101", 75750, 101, (69.59, 73.57, 74.95, 76.77, 78.40)),
    ("imagenet10", 13000, 10, (90.81, 92.36, 92.80, 92.82, 92.87)),
    ("cifar10", 50000, 10, (92.22, 92.51, 93.16, 91.59, 92.67)),
    ("galaxy10", 11008, 10, (76.05, 75.32, 77.29, 73.78, 74.89)),
  ]
}

# Table 3 (Galaxy10): samples per class of its columns besides "all", and its rows.
TABLE3_SHOTS = (1, 2, 5, 10, 100, 1000)
TABLE3 = {
  ("frozen", "convnextv2_nano"): (76.52, 28.74, 36.65, 50.60, 59.50, 72.62, 77.24),
  ("frozen", "levit_128"): (69.00, 25.85, 33.30, 45.52, 52.43, 64.37, 69.39),
  ("frozen", "resnet18"): (75.95, 30.48, 38.22, 50.85, 58.86, 72.70, 76.39),
  ("frozen", "resnet34"): (78.17, 31.08, 38.33, 52.26, 60.63, 74.77, 78.62),
  ("finetune", "convnextv2_nano"): (82.72, 29.42, 36.65, 50.94, 59.85, 75.34, 81.97),
  ("finetune", "levit_128"): (79.41, 18.45, 24.08, 33.11, 41.76, 64.59, 77.59),
  ("finetune", "resnet18"): (82.15, 23.34, 31.56, 43.82, 54.64, 73.53, 81.41),
  ("finetune", "resnet34"): (83.28, 24.27, 31.51, 44.23, 53.95, 74.93, 82.32),
}

# Table 7 (ResNet-50, ImageNet-100, 400 epochs): (views, lambda) -> linear top-1.
TABLE7 = {
  **dict(
    zip([(2, lam) for lam in (0.001, 0.005, 0.01, 0.02, 0.025)], (81.41, 82.73, 83.49, 82.99, 82.23))
  ),
  **dict(
    zip(
      [(4, lam) for lam in (0.001, 0.005, 0.01, 0.02, 0.025, 0.05, 0.1, 0.15, 0.2)],
      (79.88, 83.04, 84.36, 84.68, 84.33, 83.00, 82.91, 81.05, 78.58),
    )
  ),
  **dict(
    zip(
      [(8, lam) for lam in (0.001, 0.005, 0.01, 0.02, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)],
      (76.67, 81.58, 83.59, 83.49, 83.76, 84.32, 83.66, 83.07, 82.16, 81.00, 79.25, 77.72),
    )
  ),
}
# Table 4 (ImageNet-100, 400 epochs, no predictor, no SWA): (backbone, projector layers) -> top-1.
TABLE4 = {
  ("resnet50", 1): 79.71,
  ("resnet50", 2): 82.44,
  ("resnet50", 3): 83.93,
  ("vit_s8", 1): 76.59,
  ("vit_s8", 2): 80.77,
  ("vit_s8", 3): 81.07,
  ("vit_t8", 1): 71.79,
  ("vit_t8", 2): 76.87,
  ("vit_t8", 3): 80.37,
}

# Table 2's transfer datasets and shots; section 6.4's and the abstract's ImageNet-1k numbers.
TABLE2_DATASETS = ("dtd", "aircraft", "cars", "cifar10", "cifar100", "flowers102", "food101", "pets")
TABLE2_SHOTS = (1, 10)
TABLE2_AVERAGES = {"in1k_vit_l14": (29.55, 60.95, 79.48), "in1k_convnextv2_h": (31.58, 60.70, 77.56)}
IMAGENET_NUMBERS = {"in1k_vit_l14": "77.1%", "in1k_convnextv2_h": "78.5%", "in1k_vit_h14": "79%"}
FIGURE1_SPEARMAN = "94.52%"  # ViT-B/8 on ImageNet-1k

# Figure 9 (ImageNet-10, frozen linear top-1 of 50 timm models under 20M parameters, all between
# 91.5% and 95%): the 30 models its legend labels, by timm name.
FIGURE9_RANGE = (91.5, 95.0)
FIGURE9_LABELLED = (
  "convnext_atto_ols", "convnext_atto_rms", "convnext_femto", "convnext_nano", "convnext_nano_ols",
  "convnext_pico_ols", "convnext_zepto_rms", "convnext_zepto_rms_ols", "convnextv2_femto",
  "efficientnet_b0_g8_gn", "efficientnet_b0_gn", "inception_next_atto", "levit_128", "levit_128s",
  "levit_192", "levit_conv_256", "maxvit_nano_rw_256", "maxvit_pico_rw_256",
  "maxvit_rmlp_nano_rw_256", "maxvit_rmlp_pico_rw_256", "resnet14t", "resnet18d", "resnet26",
  "resnet26d", "resnet26t", "resnet32ts", "resnet33ts", "resnetblur18", "resnext26ts",
  "vit_pe_core_tiny_patch16_384",
)  # fmt: skip
