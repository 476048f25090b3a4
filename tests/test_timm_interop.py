"""lejepa_jax encoders and PyTorch timm models hold the same network: the export loads into
`timm.create_model` strictly and computes the same pooled features (timm's own forward pass is the
reference), and a timm state_dict loads back into a lejepa_jax encoder that computes timm's features."""

import json
import os

import helpers
import jax
import numpy as np
import pytest
from flax import nnx

from lejepa_jax import export, models, recipes
from lejepa_jax.export import timm_files, timm_layout

torch = timm = None  # imported by the fixture below


@pytest.fixture(autouse=True, scope="module")
def _torch_and_timm():
  """Imports torch and timm when this module's first test runs, skipping the module if either is
  missing: importing them takes about 5 s, and every pytest worker collects this module though only
  one runs it."""
  global torch, timm
  torch, timm = pytest.importorskip("torch"), pytest.importorskip("timm")


# A tiny member of every family and stem: (model config, image side).
CASES = {
  "resnet18_small_stem": (
    {"name": "resnet", "variant": "18", "small_stem": True, "width": 8, "in_channels": 1},
    28,
  ),
  "resnet50_imagenet_stem": ({"name": "resnet", "variant": "50", "width": 8}, 64),
  "vit_cls_registers": (
    {"name": "vit", "variant": "Mi/4", "img_size": 16, "num_registers": 2, "in_channels": 1},
    16,
  ),
  "vit_mean_token": ({"name": "vit", "variant": "Mi/8", "img_size": 32, "class_token": False}, 32),
  "convnextv2_atto": ({"name": "convnextv2", "variant": "atto", "in_channels": 3}, 64),
  "convnextv2_tiny": ({"name": "convnextv2", "variant": "tiny"}, 32),  # timm: Linear MLP layout
  "convnext_v1_atto": ({"name": "convnext", "variant": "atto"}, 32),  # layer scale, no GRN
  # timm's other stems and norms: convnext_zepto_rms_ols (SimpleNorm, a GELU in the overlapping
  # stem) and convnext_atto_ols's tiered stem with convnext_atto_rms's RMSNorm
  "convnext_zepto_simple_norm": (
    {"name": "convnext", "variant": "zepto", "norm": "simple", "stem": "overlap_act"},
    32,
  ),
  "convnext_atto_rms_tiered_stem": (
    {"name": "convnext", "variant": "atto", "norm": "rms", "stem": "overlap_tiered"},
    32,
  ),
  "resnext26ts": ({"name": "resnext", "variant": "26ts"}, 64),
  # no stem pool (the third stem convolution strides), ungrouped, a final 1x1 convolution to 1280
  "resnet33ts": ({"name": "resnext", "variant": "33ts"}, 64),
  # BatchNorm and GroupNorm (timm's efficientnet_b0 and efficientnet_b0_g8_gn)
  "efficientnet_b0": ({"name": "efficientnet", "variant": "b0"}, 32),
  "efficientnet_b0_g8_gn": (
    {"name": "efficientnet", "variant": "b0", "norm": "group", "group_size": 8},
    32,
  ),
  # the Inception depthwise mixer (identity, 3x3, 1x9, 9x1 parts) and timm's MLP head
  "inception_next_atto": ({"name": "inception_next", "variant": "atto"}, 32),
  # MBConv, attention in 2x2 windows and across a 2x2 grid (64 px: windows of 64 / 32 tokens),
  # relative-position biases from a table and from an MLP of log offsets
  "maxvit_mini": ({"name": "maxvit", "variant": "mini", "img_size": 64}, 64),
  "maxvit_rmlp_mini": ({"name": "maxvit", "variant": "mini", "img_size": 64, "rel_pos": "mlp"}, 64),
  # the Perception Encoder ViT: rotary embeddings on an 8x8 grid, position embeddings with the CLS
  # token's, a pre-block norm, attention pooling with 8 heads
  "pe_vit_mini": ({"name": "pe_vit", "variant": "Mi/8", "img_size": 64}, 64),
  # blur pooling (reflect-padded at odd sides) in the stem and the strided bottlenecks
  "resnetblur50d_narrow": (
    {"name": "resnet", "variant": "50", "blur": True, "stem": "deep", "avg_down": True, "width": 16},
    33,
  ),
  # 10x10 tokens padded to windows of 4, shifted in every other block; merged (odd sides padded)
  # to 5x5, padded to windows of 4 and shifted again
  "swin_padded_windows": ({"name": "swin", "variant": "mini", "img_size": 40, "in_channels": 1}, 40),
  # 4x4 tokens, then query-subsampling attention to 2x2 and 1x1
  "levit_subsampling": ({"name": "levit", "variant": "mini", "img_size": 64}, 64),
  # timm's resnet14t layout at width 16: tiered 3-conv stem, average-pooled shortcuts; odd sides
  # give the pools partial windows
  "resnet14t_narrow": (
    {"name": "resnet", "variant": "14", "stem": "deep_tiered", "avg_down": True, "width": 16},
    33,
  ),
}


# Every case compiles a forward (3-30 s on 2 cores): outside the fast loop (`-m "not slow"`).
ALL_CASES = [pytest.param(c, marks=[pytest.mark.slow]) for c in sorted(CASES)]


def _config(case: str, **overrides) -> dict:
  return {**CASES[case][0], "dtype": "float32", "projector": None, **overrides}


def _timm_width(case: str) -> dict:
  """timm's plain ResNet stem has 64 channels: the width a timm model can come from (its deep stems
  take any width)."""
  config = CASES[case][0]
  return {"width": 64} if config["name"] == "resnet" and config.get("stem", "plain") == "plain" else {}


def _images(case: str, seed: int = 0) -> np.ndarray:
  config, side = CASES[case]
  channels = config.get("in_channels", 3)
  return np.random.default_rng(seed).normal(size=(3, side, side, channels)).astype(np.float32)


def _random_encoder(config: dict, seed: int) -> models.Encoder:
  """An encoder of `config` whose every parameter and BatchNorm statistic is drawn here: N(0, 0.1)
  noise, around 1 for the norms' scales, variances exp(N(0, 0.3)) (the initialisers' zero biases,
  GRN scales and unit statistics would hide a misplaced array). Only the random streams are
  initialised by the model: compiling its parameter initialisers would take longer than the test."""
  arrays = nnx.Any(nnx.Param, nnx.BatchStat)
  encoder = models.create_encoder(config, initialise=nnx.Not(arrays))
  rng = np.random.default_rng(seed)
  for path, variable in nnx.to_flat_state(nnx.state(encoder, arrays)):
    noise = rng.normal(scale=0.1, size=variable.get_value().shape).astype(np.float32)
    if path[-1] == "var":
      variable.set_value(np.exp(noise * 3))
    else:
      variable.set_value(noise + (1.0 if path[-1] == "scale" else 0.0))
  return encoder


@nnx.jit
def _pooled(encoder: models.Encoder, images: jax.Array) -> jax.Array:
  return encoder.backbone(images)[0]


def _jax_pooled(encoder: models.Encoder, images: np.ndarray) -> np.ndarray:
  encoder.eval()
  return np.asarray(_pooled(encoder, images))


def _torch_pooled(model, images: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model.eval()(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()


def _assert_close(actual: np.ndarray, reference: np.ndarray) -> None:
  """Equal to 1e-4 of the reference's scale."""
  assert actual.shape == reference.shape
  scale = np.abs(reference).max()
  assert scale > 0
  np.testing.assert_allclose(actual, reference, rtol=0, atol=1e-4 * scale)


def _timm_model(config: dict):
  abstract = nnx.eval_shape(lambda: models.build_backbone(config, models.make_rngs(0)))
  return timm_files.timm_model_from_spec(timm_layout.timm_spec(abstract).as_json())


@pytest.mark.parametrize("case", ALL_CASES)
def test_exported_backbone_runs_in_timm_with_the_same_features(case, tmp_path):
  config = _config(case)
  encoder = _random_encoder(config, seed=2)
  x = _images(case)
  ours = _jax_pooled(encoder, x)
  export.save_encoder(encoder, config, str(tmp_path / "export"))
  export.export_timm(encoder, str(tmp_path / "export"))
  model = export.create_timm_model(str(tmp_path / "export"))  # strict load, from the files alone
  _assert_close(_torch_pooled(model, x), ours)


@pytest.mark.parametrize("case", ALL_CASES)
def test_timm_state_dict_loads_into_an_encoder_with_the_same_features(case):
  config = _config(case, **_timm_width(case))
  torch.manual_seed(3)
  model = _timm_model(config)
  # timm starts residual branches, GRN, tokens and norms at zeros and ones, which would hide a
  # misplaced array: every float array of the state_dict gets noise, variances stay positive
  # (buffers outside it, such as Swin's shifted-window mask, are the architecture's own).
  with torch.no_grad():
    for name, tensor in model.state_dict().items():  # views of the model's own tensors
      if tensor.is_floating_point():
        if name.endswith("running_var"):
          tensor.uniform_(0.5, 2.0)
        else:
          tensor.add_(0.1 * torch.randn_like(tensor))
  x = _images(case, seed=4)
  reference = _torch_pooled(model, x)
  encoder = export.encoder_from_timm(model.state_dict(), config)
  _assert_close(_jax_pooled(encoder, x), reference)


@pytest.mark.slow
def test_a_narrow_resnet_round_trips_through_timms_64_channel_stem():
  """A width-8 ResNet written into timm's 64-channel stem (zero channels, an identity projection)
  reads back as the same arrays; a real 64-channel stem does not fit it and is refused. (The
  bottleneck ResNet's padded stem is checked by its features in timm, above.)"""
  config = _config("resnet18_small_stem")
  encoder = _random_encoder(config, seed=2)
  state = export.to_timm_state_dict(encoder.backbone)
  assert state["conv1.weight"].shape[0] == 64
  assert _timm_model(config).state_dict()["conv1.weight"].shape == state["conv1.weight"].shape
  back = export.encoder_from_timm(state, config, seed=7)
  for kind in (nnx.Param, nnx.BatchStat):
    ours, theirs = (dict(nnx.to_flat_state(nnx.state(e, kind))) for e in (encoder, back))
    assert ours.keys() == theirs.keys()
    for path in ours:
      np.testing.assert_array_equal(ours[path].get_value(), theirs[path].get_value(), err_msg=path)
  with pytest.raises(ValueError, match="uses all 64 channels of its stem"):
    export.encoder_from_timm(_timm_model(config).state_dict(), config)


@pytest.mark.slow
def test_a_mismatched_state_dict_is_refused_naming_the_keys():
  config = _config("resnet18_small_stem", width=64)
  state = _timm_model(config).state_dict()
  state.pop("layer2.0.downsample.0.weight")
  state["extra.weight"] = torch.zeros(3)
  with pytest.raises(
    ValueError, match=r"missing layer2\.0\.downsample\.0\.weight(.|\n)*unexpected extra"
  ):
    export.encoder_from_timm(state, config)
  with pytest.raises(
    ValueError, match=r"shape \(64, 1, 3, 3\), this model config needs \(64, 3, 3, 3\)"
  ):
    export.encoder_from_timm(_timm_model(config).state_dict(), {**config, "in_channels": 3})


@pytest.mark.slow
def test_export_command_writes_a_timm_model_of_a_training_run(tmp_path):
  """`python -m lejepa_jax.export --timm` on a real run's checkpoint (tests/data): the PyTorch model
  computes the exported encoder's pooled features."""
  run = os.path.join(helpers.ROOT, "tests", "data", "written_by_043f0af", "run")
  out = str(tmp_path / "export")
  export.main([f"--workdir={run}", f"--out={out}", "--timm"])
  # The run's input standardisation travels with the timm model (3 channels, as the run trained).
  preprocessing = json.load(open(os.path.join(out, "timm.json")))["input"]
  assert len(preprocessing["mean"]) == len(preprocessing["std"]) == 3
  encoder = export.load_encoder(out)
  x = np.random.default_rng(5).normal(size=(4, 16, 16, 3)).astype(np.float32)
  ours = _jax_pooled(encoder, x)
  _assert_close(_torch_pooled(export.create_timm_model(out), x), ours)


LAYOUT_CASES = {
  "resnet34": {"name": "resnet", "variant": "34", "width": 16},
  "vit_ti14_registers": {"name": "vit", "variant": "Ti/14", "img_size": 28, "num_registers": 4},
  "resnet18d_narrow": {"name": "resnet", "variant": "18", "stem": "deep", "avg_down": True, "width": 16},
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(LAYOUT_CASES))
def test_more_variants_load_into_timm_strictly(case):
  """Variants the feature tests above do not run (ResNet-34 with the ImageNet stem and a cropped
  narrow stem, ViT patch 14 with 4 registers): the export loads into timm's model strictly (every
  key, every shape) and reads back as the same arrays, parameters and BatchNorm statistics."""
  config = {**LAYOUT_CASES[case], "dtype": "float32", "projector": None}
  encoder = _random_encoder(config, seed=2)
  state = export.to_timm_state_dict(encoder.backbone)
  _timm_model(config).load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
  back = export.encoder_from_timm(state, config, seed=2)
  for kind in (nnx.Param, nnx.BatchStat):
    ours, theirs = (dict(nnx.to_flat_state(nnx.state(e, kind))) for e in (encoder, back))
    assert ours.keys() == theirs.keys()
    for path in ours:
      np.testing.assert_array_equal(ours[path].get_value(), theirs[path].get_value(), err_msg=str(path))


@pytest.mark.parametrize(
  "config",
  [
    {"name": "resnet", "variant": "18", "width": 128},
    {"name": "resnet", "variant": "50", "width": 16},  # timm's first block would not project
  ],
)
def test_a_resnet_timm_cannot_hold_is_refused_naming_the_reason(config):
  abstract = nnx.eval_shape(lambda: models.build_backbone(config, models.make_rngs(0)))
  with pytest.raises(ValueError, match="has no timm equivalent"):
    timm_layout.timm_spec(abstract)


# recipes.ARCHITECTURES uses timm's model names, but for these (timm has no ViT-Ti/8: its Ti/16 with
# patch_size=8); lejepa_jax's ViT position embeddings cover the patches only (no_embed_class=True).
_TIMM_NAMES = {
  "swin_tiny": ("swin_tiny_patch4_window7_224", {}),
  "vit_s8": ("vit_small_patch8_224", {"no_embed_class": True}),
  "vit_t8": ("vit_tiny_patch16_224", {"patch_size": 8, "no_embed_class": True}),
  # timm's _256 MaxViTs laid out for 224 px, as recipes builds them (the window's bias table)
  **{arch: (arch, {"img_size": 224}) for arch in recipes.ARCHITECTURES if arch.startswith("maxvit_")},
  # and timm's 384 px PE ViT at 224 px (its position embeddings)
  "vit_pe_core_tiny_patch16_384": ("vit_pe_core_tiny_patch16_384", {"img_size": 224}),
}


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(recipes.ARCHITECTURES))
def test_every_paper_architecture_has_as_many_parameters_as_timms_model_of_its_name(arch):
  name, kwargs = _TIMM_NAMES.get(arch, (arch, {}))
  model = timm.create_model(name, num_classes=0, device="meta", **kwargs)  # nothing allocated
  config = recipes.model(arch)
  options = {k: v for k, v in config.items() if k in models.BACKBONES[config.name][1]}
  want = sum(p.numel() for p in model.parameters())
  assert models.count_params(config.name, config.variant, **options) == want, arch
