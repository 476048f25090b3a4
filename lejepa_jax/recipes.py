"""The paper's recipes as config builders: what the configs of configs/paper/ share.

Each function fills a `config_lib.base_config()` with the settings the paper states (its "Experiment
Details 1" box, section 6.1, and the recommendations of 6.1), and where the paper is silent with the
authors' code's choice (their README's "GOTO" hyperparameters, MINIMAL.md and their launch scripts);
docs/reproducing.md lists every such choice beside the number it serves.

- Views (paper 6.1): V = 8. ViTs: 2 global views at 224 px and 6 local views at 96 (98 for patch 14, a
  multiple of the patch, as in the authors' scripts); crop scales (0.3, 1) and (0.05, 0.3) are the
  authors' README's (the paper gives none). Every other backbone (ConvNets, Swin, LeViT): every view
  global (Algorithm 2: "For non-ViT architectures (e.g., ResNet), set global_views = all_views").
- Objective: lambda 0.05, 1024 slices, 17 knots (paper 6.1's recommendations); t_max 3 (the authors'
  library default, within noise of the recommended [-5, 5] in Table 1a).
- Optimizer: AdamW, linear warmup + cosine to lr/1000; lr 5e-4, weight decay 5e-2 for ViTs and 5e-4
  for ResNets (the authors' README; WEIGHT_DECAY for the others); 10 warmup epochs; bfloat16
  compute on accelerators.
- Projector: MLP 2048-2048-512 with BatchNorm (the authors' scripts: projector_dim=512).
"""

from __future__ import annotations

import ml_collections

from lejepa_jax import config_lib

# Backbones the paper's tables name that lejepa_jax builds: name -> (family, variant). Table 5's
# resnext26ts and swin_tiny, Table 3's LeViT-128 and Figure 9's other timm families are not built.
ARCHITECTURES = {
  "resnet18": ("resnet", "18"),
  "resnet34": ("resnet", "34"),
  "resnet50": ("resnet", "50"),
  "resnet14t": ("resnet", "14"),
  "resnet18d": ("resnet", "18"),
  "resnet26": ("resnet", "26"),
  "resnet26d": ("resnet", "26"),
  "resnet26t": ("resnet", "26"),
  "resnetblur18": ("resnet", "18"),
  "resnext26ts": ("resnext", "26ts"),
  "resnet32ts": ("resnext", "32ts"),
  "resnet33ts": ("resnext", "33ts"),
  "swin_tiny": ("swin", "tiny"),
  "levit_128s": ("levit", "128s"),
  "levit_128": ("levit", "128"),
  "levit_192": ("levit", "192"),
  # timm's levit_conv_256 is levit_256 with 1x1 convolutions for its linear layers: the same network
  "levit_conv_256": ("levit", "256"),
  "convnextv2_atto": ("convnextv2", "atto"),
  "convnextv2_femto": ("convnextv2", "femto"),
  "convnextv2_pico": ("convnextv2", "pico"),
  "convnextv2_nano": ("convnextv2", "nano"),
  "convnextv2_huge": ("convnextv2", "huge"),
  "convnext_atto": ("convnext", "atto"),
  "convnext_femto": ("convnext", "femto"),
  "convnext_pico": ("convnext", "pico"),
  "convnext_nano": ("convnext", "nano"),
  "convnext_atto_ols": ("convnext", "atto"),
  "convnext_atto_rms": ("convnext", "atto"),
  "convnext_nano_ols": ("convnext", "nano"),
  "convnext_pico_ols": ("convnext", "pico"),
  "convnext_zepto_rms": ("convnext", "zepto"),
  "convnext_zepto_rms_ols": ("convnext", "zepto"),
  "efficientnet_b0_gn": ("efficientnet", "b0"),
  "efficientnet_b0_g8_gn": ("efficientnet", "b0"),
  "inception_next_atto": ("inception_next", "atto"),
  # timm's _256 MaxViTs, laid out here for the views' 224 px (windows of 7 tokens instead of 8)
  "maxvit_pico_rw_256": ("maxvit", "pico"),
  "maxvit_nano_rw_256": ("maxvit", "nano"),
  "maxvit_rmlp_pico_rw_256": ("maxvit", "pico"),
  "maxvit_rmlp_nano_rw_256": ("maxvit", "nano"),
  # timm's 384 px PE-core-T, laid out here for the views' 224 px (its RoPE is rescaled per grid)
  "vit_pe_core_tiny_patch16_384": ("pe_vit", "Ti/16"),
  "vit_t8": ("vit", "Ti/8"),
  "vit_s8": ("vit", "S/8"),
}
# timm's names for the options beyond the variant (Figure 9's ResNets with other stems, shortcuts
# or blur pooling, its ConvNeXts with overlapping stems (_ols) and RMS or Simple norms (timm's _rms names
# both: zepto_rms is timm's SimpleNorm))
ARCHITECTURE_OPTIONS = {
  "resnet14t": dict(stem="deep_tiered", avg_down=True),
  "resnet18d": dict(stem="deep", avg_down=True),
  "resnet26d": dict(stem="deep", avg_down=True),
  "resnet26t": dict(stem="deep_tiered", avg_down=True),
  "resnetblur18": dict(blur=True),
  "convnext_atto_ols": dict(stem="overlap_tiered"),
  "convnext_atto_rms": dict(norm="rms"),
  "convnext_nano_ols": dict(stem="overlap"),
  "convnext_pico_ols": dict(stem="overlap_tiered"),
  "convnext_zepto_rms": dict(norm="simple"),
  "convnext_zepto_rms_ols": dict(norm="simple", stem="overlap_act"),
  "efficientnet_b0_gn": dict(norm="group"),
  "efficientnet_b0_g8_gn": dict(norm="group", group_size=8),
  "maxvit_rmlp_pico_rw_256": dict(rel_pos="mlp"),
  "maxvit_rmlp_nano_rw_256": dict(rel_pos="mlp"),
}
PAPER_LAMBDA = 0.05
PAPER_SLICES = 1024
PAPER_BATCH = 512  # the authors' launch scripts (ViT-L ablations, ImageNet-10)
PAPER_PROJECTOR = dict(hidden_dim=2048, out_dim=512, num_layers=3)
# The authors' README: 5e-2 for ViTs, 5e-4 for ResNets; the families not named there take those of
# their kind: the ConvNeXts, InceptionNeXt, Swin, MaxViT and LeViT as the ViTs (the ConvNeXts,
# InceptionNeXt, Swin and MaxViT were designed with 5e-2, LeViT with 2.5e-2), ResNeXt and
# EfficientNet as the ResNets.
WEIGHT_DECAY = {
  "vit": 5e-2,
  "resnet": 5e-4,
  "convnextv2": 5e-2,
  "convnext": 5e-2,
  "resnext": 5e-4,
  "swin": 5e-2,
  "levit": 5e-2,
  "efficientnet": 5e-4,
  "inception_next": 5e-2,
  "maxvit": 5e-2,
  "pe_vit": 5e-2,
}


def model(arch: str, projector: dict | None = None) -> ml_collections.ConfigDict:
  """config.model of a backbone of ARCHITECTURES with the paper's projector (or `projector`)."""
  if arch not in ARCHITECTURES:
    raise ValueError(
      f"Unknown architecture {arch!r}; lejepa_jax builds: {sorted(ARCHITECTURES)} (the paper's other "
      "timm backbones are not implemented)."
    )
  family, variant = ARCHITECTURES[arch]
  return config_lib.model_config(
    family, variant, projector=projector or dict(PAPER_PROJECTOR), **ARCHITECTURE_OPTIONS.get(arch, {})
  )


def set_views(c: ml_collections.ConfigDict, views: int = 8, global_views: int = 2, size: int = 224):
  """The paper's multi-crop: every backbone but the ViT takes every view global; ViTs
  `global_views` at `size` and the rest local at 96 px (98 for patch 14)."""
  if c.model.name in ("vit", "pe_vit"):
    local = 98 if c.model.variant.endswith("/14") else 96
    c.data.global_views = dict(count=global_views, size=size, scale=(0.3, 1.0))
    c.data.local_views = dict(count=views - global_views, size=local, scale=(0.05, 0.3))
    c.model.img_size = size
  else:
    c.data.global_views = dict(count=views, size=size, scale=(0.3, 1.0))
    c.data.local_views = dict(count=0, size=96, scale=(0.05, 0.3))


def paper_config(
  dataset: str, arch: str, epochs: float, *, views: int = 8, lam: float = PAPER_LAMBDA
) -> ml_collections.ConfigDict:
  """The paper's default recipe (section 6.1) for `arch` pretrained on `dataset` for `epochs`."""
  c = config_lib.base_config()
  data = config_lib.set_dataset(c, dataset)
  c.model = model(arch)
  set_views(c, views)
  c.data.global_batch_size = PAPER_BATCH
  c.loss.sigreg_weight = lam
  c.loss.num_slices = PAPER_SLICES
  c.optim.lr = 5e-4
  c.optim.weight_decay = WEIGHT_DECAY[c.model.name]
  if c.model.name in ("vit", "pe_vit"):
    c.model.drop_path = 0.1  # the authors' MINIMAL.md and ViT-L scripts (the paper gives none)
  config_lib.set_schedule(c, epochs, data.train_examples)
  return c


def table5_config(arg: str | None, dataset: str) -> ml_collections.ConfigDict:
  """An in-domain run of Table 5 (and Table 3, Figure 9): `arch` pretrained from random
  initialisation on `dataset` with the paper's default recipe; `arg` may set arch=, epochs=, lam=,
  views=, runlocal, steps=."""
  args = config_lib.parse_arg(
    arg, arch="resnet18", epochs=400.0, lam=PAPER_LAMBDA, views=8, **config_lib.RUNLOCAL_ARGS
  )
  c = paper_config(dataset, args["arch"], args["epochs"], views=args["views"], lam=args["lam"])
  return config_lib.finish(c, args)


def probe_config(name: str, evaluators: str = "linear,knn", **options) -> ml_collections.ConfigDict:
  """A probe config of the paper's linear protocol: frozen backbone, the encoder's embedding (ViT:
  CLS tokens of the last two blocks concatenated; ConvNets: the pooled final map), LayerNorm +
  Linear trained with AdamW (weight decay 1e-6, warmup + cosine), the whole training split.
  `options` set other probe keys (e.g. linear_shots=dict(...), dataset="dtd")."""
  c = config_lib.probe_config()
  c.name = name
  c.features = "embed"
  c.evaluators = evaluators
  c.baselines = ""
  for key, value in options.items():
    c[key] = dict(c[key], **value) if isinstance(value, dict) else value
  return c
