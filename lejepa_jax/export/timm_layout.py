r"""lejepa_jax backbones in PyTorch/timm's layout, both ways: an encoder's arrays as a timm `state_dict`
that `timm.create_model(name, **kwargs)` loads with `strict=True`, and a timm `state_dict` back into
a lejepa_jax encoder (to continue training or to compare).

One table per family says where each array goes; both directions read it, so they cannot disagree.

    family       timm model                 how the architecture is matched
    ResNet       resnet14t / 18 / 26 / 34 / 50   in_chans, channels from `width`, and for the deep
                                            stems and average-pooled shortcuts (timm's resnet*d,
                                            *t) stem_type, stem_width, avg_down; blur pooling as
                                            resnetblur18 / 50; the small stem (3x3,
                                            stride 1, no max-pool) has no timm equivalent: conv1
                                            becomes Conv2d(C, 64, 3, 1, 1, bias=False) and maxpool
                                            nn.Identity() (`create_timm_model` does it)
    ViT          vit_<size>_patch16_224     embed_dim, depth, heads, mlp_ratio, patch, img_size,
                                            registers; position embeddings cover the patches only
                                            (`no_embed_class=True`); without a CLS token the summary
                                            is the mean normalised patch token (`global_pool="avg"`,
                                            `fc_norm=False`)
    ConvNeXt-V2  convnextv2_<variant>       in_chans, and stem_type, norm_layer for the other stems
                                            and norms
    ConvNeXt     convnext_<variant>         the same (the first ConvNeXt; zepto as
                                            convnext_zepto_rms)
    ResNeXt      resnext26ts, resnet32ts/33ts   in_chans
    Swin         swin_tiny_patch4_window7_224   in_chans, img_size, and for the other sizes
                                            embed_dim, depths, num_heads, window_size
    LeViT        levit_128                  in_chans, img_size, embed_dim, key_dim, num_heads,
                                            depth
    EfficientNet efficientnet_b0, _b0_gn, _b0_g8_gn   in_chans (the name picks the norm and groups)
    InceptionNeXt inception_next_atto       in_chans
    MaxViT       maxvit_[rmlp_]pico_rw_256  in_chans, img_size (windows of img_size / 32), embed_dim,
                                            depths, stem_width
    PE ViT       vit_pe_core_tiny_patch16_384   in_chans, img_size, patch_size, embed_dim, depth,
                                            num_heads, mlp_ratio

The kwargs decide the architecture; the name only picks timm's model function (a ViT-Mi/4 is written
as vit_tiny_patch16_224 with its own dimensions), and timm's default preprocessing for that name does
not apply: standardise images as in training (`timm.json`'s "input", when the export came from a run).

What matches: `timm_model(images_nchw)` (eval mode, `num_classes=0`) equals the backbone's pooled
output, the vector the projector reads (ViT: the CLS token after the final norm). The timm ViT takes
only `img_size` inputs (lejepa_jax's takes any multiple of the patch, resizing its position
embeddings). Tested in tests/test_timm_interop.py. The projector stays in the lejepa_jax export; it
has no timm counterpart.

timm's ResNet stem has 64 channels whatever the stage widths. A lejepa_jax ResNet of another `width`
is written into it exactly: the stem's extra channels have zero weights and zero BatchNorm scale and
shift (so they carry zeros), and where lejepa_jax's first block has no projection shortcut, timm's
(64 -> width) is an identity (1x1 weights picking the first `width` channels, BatchNorm scale 1,
shift 0, mean 0, variance 1 - eps, a scale of 1 to float32 rounding). Reading such a state_dict back
crops the padding. The padding is exact in eval mode only: trained in PyTorch, the added BatchNorm
would normalise with batch statistics and the zero channels would learn, and the result would no
longer read back; keep those modules in eval mode (or frozen) when fine-tuning there.

Array conventions: Linear [in, out] -> weight [out, in]; convolutions [kh, kw, in, out] -> weight
[out, in, kh, kw]; the ViT patch embedding, a Linear over (row, column, channel)-flattened patches,
becomes timm's strided Conv2d; BatchNorm statistics become running_mean / running_var with a
num_batches_tracked of 0 (eval mode does not read it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
from flax import nnx

from lejepa_jax import models
from lejepa_jax.models import (
  convnext,
  efficientnet,
  inception_next,
  levit,
  maxvit,
  pe_vit,
  resnet,
  resnext,
  swin,
  vit,
)

# lejepa_jax ViT size -> the timm model of that size (its name; the kwargs pin every dimension, so
# the non-standard test sizes borrow a neighbour's name).
_VIT_NAMES = {
  "Mi": "vit_tiny_patch16_224",
  "Ti6": "vit_tiny_patch16_224",
  "Ti": "vit_tiny_patch16_224",
  "S": "vit_small_patch16_224",
  "B": "vit_base_patch16_224",
  "L": "vit_large_patch16_224",
  "H": "vit_huge_patch14_224",
  "g": "vit_giant_patch14_224",
}
# timm's ResNet stem width (fixed for its plain and small stems; `stem_width` only sets deep stems)
TIMM_RESNET_STEM = 64
_BN_EPS = 1e-5  # lejepa_jax's and PyTorch's BatchNorm epsilon
# nnx variable names -> torch parameter / buffer names
_LEAF_NAMES = {
  "kernel": "weight",
  "scale": "weight",
  "bias": "bias",
  "mean": "running_mean",
  "var": "running_var",
}


@dataclasses.dataclass(frozen=True)
class TimmSpec:
  """What builds the matching timm model.

  Attributes:
    name: the `timm.create_model` name.
    kwargs: its keyword arguments (JSON types; lists stand for tuples).
    small_stem: the ResNet small stem: replace conv1 and maxpool after creating the model.
  """

  name: str
  kwargs: dict[str, Any]
  small_stem: bool = False

  def as_json(self) -> dict[str, Any]:
    """{"model_name", "kwargs", and for the small stem "replace_modules": {attribute: {"type": a
    torch.nn class name, "args", "kwargs"}}}: what PyTorch code needs to build the model."""
    out: dict[str, Any] = {"model_name": self.name, "kwargs": self.kwargs}
    if self.small_stem:
      conv_args = [self.kwargs["in_chans"], TIMM_RESNET_STEM, 3]
      conv_kwargs = {"stride": 1, "padding": 1, "bias": False}
      out["replace_modules"] = {
        "conv1": {"type": "Conv2d", "args": conv_args, "kwargs": conv_kwargs},
        "maxpool": {"type": "Identity", "args": [], "kwargs": {}},
      }
    return out


def timm_spec(backbone: nnx.Module) -> TimmSpec:
  """The timm model (with `num_classes=0`) holding the same network as a lejepa_jax backbone.

  Read off the module, so an abstract one does (`nnx.eval_shape(lambda: build_backbone(...))`)."""
  if isinstance(backbone, resnet.ResNet):
    width = backbone.stem_bn.num_features
    _check_resnet_fits_timm(backbone)
    kwargs = {
      "in_chans": backbone.in_channels,
      "channels": [width * m for m in resnet.STAGE_MULTIPLES],
      "num_classes": 0,
    }
    # timm has ResNet-14 only as resnet14t: the stem and shortcuts, pinned, make any variant exact
    name = "resnet14t" if backbone.variant == "14" else f"resnet{backbone.variant}"
    if backbone.blur:  # timm's blur pooling comes with the model function, for 18 and 50 only
      if backbone.variant not in _TIMM_BLUR_VARIANTS:
        raise ValueError(
          f"A blur-pooled ResNet-{backbone.variant} has no timm model: timm has resnetblur"
          f"{' and resnetblur'.join(_TIMM_BLUR_VARIANTS)}. Use the Flax export (without --timm)."
        )
      name = f"resnetblur{backbone.variant}"
    if name == "resnet14t" or backbone.stem_type != "plain" or backbone.avg_down:
      stem_type = "" if backbone.stem_type == "plain" else backbone.stem_type
      kwargs.update(stem_type=stem_type, stem_width=width // 2, avg_down=backbone.avg_down)
    return TimmSpec(name, kwargs, backbone.small_stem)
  if isinstance(backbone, vit.ViT):
    kwargs = {
      **_vit_dimensions(backbone),
      "class_token": backbone.class_token,
      "reg_tokens": backbone.num_registers,
      "no_embed_class": True,
      "global_pool": "token" if backbone.class_token else "avg",
      "fc_norm": False,
      "num_classes": 0,
    }
    return TimmSpec(_VIT_NAMES[backbone.variant.split("/")[0]], kwargs)
  if isinstance(backbone, convnext.ConvNeXtV2):  # and the first ConvNeXt, a subclass of it
    kwargs = {"in_chans": backbone.in_channels, "num_classes": 0}
    if (backbone.stem_type, backbone.norm_type) != ("patch", "layer"):
      kwargs.update(stem_type=backbone.stem_type, norm_layer=_TIMM_NORMS[backbone.norm_type])
    family = "convnext" if backbone.version == 1 else "convnextv2"
    # timm has its smallest ConvNeXt with RMS/Simple norms only; the kwargs choose the norm
    variant = "zepto_rms" if backbone.variant == "zepto" else backbone.variant
    return TimmSpec(f"{family}_{variant}", kwargs)
  if isinstance(backbone, resnext.ResNeXt):
    name = f"{'resnext' if backbone.variant == '26ts' else 'resnet'}{backbone.variant}"
    return TimmSpec(name, {"in_chans": backbone.in_channels, "num_classes": 0})
  if isinstance(backbone, swin.Swin):
    size = swin.SWIN_SIZES[backbone.variant]
    kwargs = {
      "img_size": backbone.img_size,
      "in_chans": backbone.in_channels,
      "patch_size": size.patch,
      "window_size": size.window,
      "embed_dim": size.embed_dim,
      "depths": list(size.depths),
      "num_heads": list(size.num_heads),
      "num_classes": 0,
    }
    return TimmSpec("swin_tiny_patch4_window7_224", kwargs)
  if isinstance(backbone, levit.LeViT):
    size = levit.LEVIT_SIZES[backbone.variant]
    kwargs = {
      "img_size": backbone.img_size,
      "in_chans": backbone.in_channels,
      "embed_dim": list(size.widths),
      "key_dim": size.key_dim,
      "num_heads": list(size.num_heads),
      "depth": list(size.depths),
      "num_classes": 0,
    }
    return TimmSpec("levit_128", kwargs)
  if isinstance(backbone, efficientnet.EfficientNet):
    name = _TIMM_EFFICIENTNETS.get((backbone.variant, backbone.norm_type, backbone.group_size))
    if name is None:
      raise ValueError(
        f"An EfficientNet-{backbone.variant.upper()} with norm={backbone.norm_type!r} and "
        f"group_size={backbone.group_size} has no timm model; timm has "
        f"{sorted(_TIMM_EFFICIENTNETS.values())}. Use the Flax export (without --timm)."
      )
    return TimmSpec(name, {"in_chans": backbone.in_channels, "num_classes": 0})
  if isinstance(backbone, inception_next.InceptionNeXt):
    return TimmSpec(
      f"inception_next_{backbone.variant}", {"in_chans": backbone.in_channels, "num_classes": 0}
    )
  if isinstance(backbone, maxvit.MaxViT):
    rmlp = "rmlp_" if backbone.rel_pos == "mlp" else ""
    size = maxvit.MAXVIT_SIZES[backbone.variant]
    kwargs = {
      "img_size": backbone.img_size,
      "in_chans": backbone.in_channels,
      "embed_dim": list(size.widths),
      "depths": list(size.depths),
      "stem_width": list(size.stem),
      "num_classes": 0,
    }
    return TimmSpec(f"maxvit_{rmlp}pico_rw_256", kwargs)  # the sizes come with the kwargs
  if isinstance(backbone, pe_vit.PerceptionViT):
    kwargs = {**_vit_dimensions(backbone), "num_classes": 0}
    return TimmSpec("vit_pe_core_tiny_patch16_384", kwargs)  # the sizes come with the kwargs
  raise ValueError(
    f"No timm layout for {type(backbone).__name__}; known: ResNet, ViT, ConvNeXtV2, ResNeXt, Swin,"
    " LeViT, EfficientNet, InceptionNeXt, MaxViT, PerceptionViT."
  )


def _vit_dimensions(backbone: vit.ViT | pe_vit.PerceptionViT) -> dict[str, Any]:
  """timm's kwargs for a ViT's dimensions: image and patch size, channels, width, depth, heads."""
  size, patch = vit.parse_variant(backbone.variant)
  return {
    "img_size": backbone.grid * patch,
    "patch_size": patch,
    "in_chans": backbone.in_channels,
    "embed_dim": size.width,
    "depth": size.depth,
    "num_heads": size.num_heads,
    "mlp_ratio": size.mlp_dim / size.width,
  }


# (variant, norm, group size) -> timm's EfficientNet of that network
_TIMM_EFFICIENTNETS = {
  ("b0", "batch", 1): "efficientnet_b0",
  ("b0", "group", 1): "efficientnet_b0_gn",
  ("b0", "group", 8): "efficientnet_b0_g8_gn",
}


_TIMM_BLUR_VARIANTS = ("18", "50")


def _check_resnet_fits_timm(backbone: resnet.ResNet) -> None:
  """timm's plain ResNet stem has 64 channels, and its first block projects exactly when 64 differs
  from the first stage's output: lejepa_jax ResNets that cannot be written into that are refused.
  (timm's deep stems take any width: `stem_width`.)"""
  if backbone.deep_stem is not None:
    return
  width = backbone.stem_bn.num_features
  first_out = width * type(backbone.blocks[0]).expansion
  if width > TIMM_RESNET_STEM or (
    _first_block_projects(backbone) and first_out == TIMM_RESNET_STEM and width != TIMM_RESNET_STEM
  ):
    raise ValueError(
      f"A ResNet-{backbone.variant} of width {width} has no timm equivalent: timm's stem has "
      f"{TIMM_RESNET_STEM} channels, so timm holds widths up to {TIMM_RESNET_STEM} (for ResNet-50, "
      f"not 16, where timm's first block has no projection). Export another width, or use the "
      "Flax export (without --timm)."
    )


# --- where each array goes ------------------------------------------------------------------------


def _resnet_key(backbone: resnet.ResNet, path: tuple[str, ...]) -> str:
  head, rest = path[0], path[1:]
  if head == "deep_stem":  # timm's conv1 Sequential: conv, BN, ReLU, conv, BN, ReLU, conv
    return f"conv1.{3 * int(rest[0]) + {'conv': 0, 'bn': 1}[rest[1]]}"
  if head == "stem":
    return "conv1" if backbone.deep_stem is None else "conv1.6"
  if head == "stem_bn":
    return "bn1"
  block, module = int(rest[0]), rest[1:]
  stage, index = _stage_of(block, backbone.depths)
  prefix = f"layer{stage + 1}.{index}"
  if module[0] == "shortcut":  # avg_down: downsample is (pool, conv, BN), else (conv, BN)
    first = 1 if backbone.avg_down else 0
    return f"{prefix}.downsample.{first + {'conv': 0, 'bn': 1}[module[1]]}"
  return f"{prefix}.{module[0]}"


def _stage_of(block: int, depths: tuple[int, ...]) -> tuple[int, int]:
  for stage, depth in enumerate(depths):
    if block < depth:
      return stage, block
    block -= depth
  raise ValueError(f"block {block} beyond the network's depths {depths}")


_VIT_BLOCK_MODULES = {
  "norm1": "norm1",
  "norm2": "norm2",
  "attn.qkv": "attn.qkv",
  "attn.out": "attn.proj",
  "mlp.fc1": "mlp.fc1",
  "mlp.fc2": "mlp.fc2",
}


def _vit_key(backbone: vit.ViT, path: tuple[str, ...]) -> str:
  head = path[0]
  if head == "blocks":
    return f"blocks.{path[1]}." + _VIT_BLOCK_MODULES[".".join(path[2:])]
  return {"patch_embed": "patch_embed.proj", "norm": "norm"}[head]


_CONVNEXT_BLOCK_MODULES = {
  "dwconv": "conv_dw",
  "norm": "norm",
  "pwconv1": "mlp.fc1",
  "pwconv2": "mlp.fc2",
  "grn": "mlp.grn",
}


# timm's norm_layer names for lejepa_jax's ConvNeXt norms
_TIMM_NORMS = {"layer": "layernorm", "rms": "rmsnorm", "simple": "simplenorm"}


def _convnext_key(backbone: convnext.ConvNeXtV2, path: tuple[str, ...]) -> str:
  head = path[0]
  if head in (
    "stem",
    "stem_norm",
  ):  # timm's stem Sequential: (conv, norm), or (conv, [GELU,] conv, norm)
    act = backbone.stem_type == "overlap_act"
    position = {("stem",): 0, ("stem", "conv1"): 0, ("stem", "conv2"): 1 + act}
    position[("stem_norm",)] = 1 if backbone.stem_type == "patch" else 2 + act
    return f"stem.{position[path]}"
  if head == "head_norm":
    return "head.norm"
  stage, index = int(path[1]), int(path[2])
  if stage > 0 and index == 0:  # the stage's downsampling layer comes first in lejepa_jax's list
    return f"stages.{stage}.downsample." + {"norm": "0", "conv": "1"}[path[3]]
  block = f"stages.{stage}.blocks.{index - (1 if stage > 0 else 0)}"
  if len(path) == 3:  # the block's own array: the first ConvNeXt's layer scale
    return block
  return f"{block}." + _CONVNEXT_BLOCK_MODULES[path[3]]


def _timm_names(backbone: nnx.Module, path: tuple[str, ...]) -> str:
  """The key of a module whose variables carry timm's own names, module by module."""
  return ".".join(path)


def _resnext_key(backbone: resnext.ResNeXt, path: tuple[str, ...]) -> str:
  if path[0] == "stem":  # stem.<i>.<conv|bn> -> stem.conv<i + 1>.<conv|bn>
    return f"stem.conv{int(path[1]) + 1}.{path[2]}"
  return _timm_names(backbone, path)  # stages.<s>.<b>.<conv1_1x1|...|shortcut>.<conv|bn>


def _swin_key(backbone: swin.Swin, path: tuple[str, ...]) -> str:
  head = path[0]
  if head in ("patch_embed", "patch_norm"):
    return {"patch_embed": "patch_embed.proj", "patch_norm": "patch_embed.norm"}[head]
  if head == "norm":
    return "norm"
  stage, index, module = int(path[1]), int(path[2]), ".".join(path[3:])
  if stage > 0 and index == 0:  # the stage's patch merging comes first in lejepa_jax's list
    return f"layers.{stage}.downsample.{module}"
  block = index - (1 if stage > 0 else 0)
  return f"layers.{stage}.blocks.{block}.{module}"


def _levit_key(backbone: levit.LeViT, path: tuple[str, ...]) -> str:
  if path[0] == "stem":  # stem.<i>.<conv|bn> -> stem.conv<i + 1>.<linear|bn>
    return f"stem.conv{int(path[1]) + 1}." + {"conv": "linear", "bn": "bn"}[path[2]]
  stage, index = int(path[1]), int(path[2])
  # timm wraps the output projection and the subsampled queries in a Sequential with their input op
  module = ".".join({"proj": "proj.ln", "q": "q.ln"}.get(part, part) for part in path[3:])
  if stage > 0 and index == 0:  # the stage's query-subsampling attention comes first here
    return f"stages.{stage}.downsample.{module}"
  return f"stages.{stage}.blocks.{index - (1 if stage > 0 else 0)}.{module}"


_MODULE_KEYS: dict[type, Callable[[Any, tuple[str, ...]], str]] = {
  resnet.ResNet: _resnet_key,
  vit.ViT: _vit_key,
  convnext.ConvNeXtV2: _convnext_key,
  convnext.ConvNeXt: _convnext_key,
  resnext.ResNeXt: _resnext_key,
  swin.Swin: _swin_key,
  levit.LeViT: _levit_key,
  efficientnet.EfficientNet: _timm_names,
  inception_next.InceptionNeXt: _timm_names,
  maxvit.MaxViT: _timm_names,
  pe_vit.PerceptionViT: _timm_names,
}
# whole-array parameters of the ViT (no module around them)
_VIT_ARRAYS = {"pos_embed": "pos_embed", "cls": "cls_token", "registers": "reg_token"}
# leaves named otherwise than _LEAF_NAMES says: ConvNeXt-V2's GRN, the first ConvNeXt's layer
# scale, Swin's and LeViT's bias tables, the PE ViT's whole arrays
_OTHER_LEAVES = {
  "gamma": "weight",
  "beta": "bias",
  "relative_position_bias_table": "relative_position_bias_table",
  "attention_biases": "attention_biases",
  "layer_scale": "gamma",
  "cls_token": "cls_token",
  "pos_embed": "pos_embed",
  "latent": "latent",
}
# timm defines its small ConvNeXt-V2s with `conv_mlp=True`: the pointwise MLP as 1x1 convolutions,
# weights [out, in, 1, 1]; the larger ones as Linear layers, [out, in].
_CONVNEXT_CONV_MLP = ("zepto", "atto", "femto", "pico", "nano")


def _timm_key(backbone: nnx.Module, path: tuple[str, ...]) -> str:
  """The timm state_dict key of the backbone variable at `path` (nnx path, leaf last)."""
  if isinstance(backbone, vit.ViT) and len(path) == 1:
    return _VIT_ARRAYS[path[0]]
  leaf = path[-1]
  name = _OTHER_LEAVES.get(leaf) or _LEAF_NAMES[leaf]
  if len(path) == 1:  # an array at the top of a timm-named backbone (the PE ViT's)
    return name
  return f"{_MODULE_KEYS[type(backbone)](backbone, path[:-1])}.{name}"


def _backbone_variables(backbone: nnx.Module) -> Iterator[tuple[tuple[str, ...], nnx.Variable]]:
  for kind in (nnx.Param, nnx.BatchStat):
    for path, variable in nnx.to_flat_state(nnx.state(backbone, kind)):
      yield tuple(map(str, path)), variable


def _is_pointwise_conv(backbone: nnx.Module, path: tuple[str, ...]) -> bool:
  return (
    isinstance(backbone, convnext.ConvNeXtV2)
    and backbone.variant in _CONVNEXT_CONV_MLP
    and path[-2:] in (("pwconv1", "kernel"), ("pwconv2", "kernel"))
  )


def _to_torch(backbone: nnx.Module, path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  if isinstance(backbone, vit.ViT) and path == ("patch_embed", "kernel"):
    p, c = backbone.patch, backbone.in_channels
    return value.reshape(p, p, c, -1).transpose(3, 2, 0, 1)  # [(p, p, c), W] -> [W, c, p, p]
  if _is_pointwise_conv(backbone, path):
    return value.T[:, :, None, None]
  if path[-1] == "kernel":
    return value.T if value.ndim == 2 else value.transpose(3, 2, 0, 1)
  return value


def _from_torch(backbone: nnx.Module, path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  if isinstance(backbone, vit.ViT) and path == ("patch_embed", "kernel"):
    return value.transpose(2, 3, 1, 0).reshape(-1, value.shape[0])
  if _is_pointwise_conv(backbone, path) and value.ndim == 4:
    return value[:, :, 0, 0].T
  if path[-1] == "kernel":
    return value.T if value.ndim == 2 else value.transpose(2, 3, 1, 0)
  return value


def _batch_norm_counters(backbone: nnx.Module) -> list[str]:
  """timm keys of the BatchNorm step counters (torch buffers with no lejepa_jax counterpart)."""
  return sorted(
    {
      _timm_key(backbone, path).rsplit(".", 1)[0] + ".num_batches_tracked"
      for path, _ in _backbone_variables(backbone)
      if path[-1] == "mean"
    }
  )


# --- the ResNet stem in timm's 64 channels ----------------------------------------------------------


def _first_block_projects(backbone: resnet.ResNet) -> bool:
  return backbone.blocks[0].shortcut.project


def _pad_resnet_stem(backbone: resnet.ResNet, state: dict[str, np.ndarray]) -> None:
  """Widens a `width`-channel stem to timm's 64 channels in place (module docstring)."""
  extra = TIMM_RESNET_STEM - backbone.stem_bn.num_features
  if extra == 0 or backbone.deep_stem is not None:  # timm's deep stems are as wide as asked
    return

  def pad(key: str, axis: int, value: float = 0.0) -> None:
    widths = [(0, 0)] * state[key].ndim
    widths[axis] = (0, extra)
    state[key] = np.pad(state[key], widths, constant_values=value)

  pad("conv1.weight", 0)
  for name in ("weight", "bias", "running_mean"):
    pad(f"bn1.{name}", 0)
  pad("bn1.running_var", 0, 1.0)
  pad("layer1.0.conv1.weight", 1)
  if _first_block_projects(backbone):
    pad("layer1.0.downsample.0.weight", 1)
    return
  out = state["layer1.0.conv1.weight"].shape[0]  # == width for basic blocks
  state["layer1.0.downsample.0.weight"] = np.eye(out, TIMM_RESNET_STEM, dtype=np.float32)[
    :, :, None, None
  ]
  state["layer1.0.downsample.1.weight"] = np.ones(out, np.float32)
  state["layer1.0.downsample.1.bias"] = np.zeros(out, np.float32)
  state["layer1.0.downsample.1.running_mean"] = np.zeros(out, np.float32)
  state["layer1.0.downsample.1.running_var"] = np.full(out, 1 - _BN_EPS, np.float32)
  state["layer1.0.downsample.1.num_batches_tracked"] = np.zeros((), np.int64)


def _is_identity_projection(state: Mapping[str, np.ndarray]) -> bool:
  """Whether layer1.0's projection is the identity `_pad_resnet_stem` writes for basic blocks."""
  prefix = "layer1.0.downsample."
  if prefix + "0.weight" not in state:
    return False
  weight = state[prefix + "0.weight"][:, :, 0, 0]
  scale = state[prefix + "1.weight"] / np.sqrt(state[prefix + "1.running_var"] + _BN_EPS)
  shift = state[prefix + "1.bias"] - state[prefix + "1.running_mean"] * scale
  return (
    np.array_equal(weight, np.eye(*weight.shape))
    and np.allclose(scale, 1, atol=1e-6)
    and np.allclose(shift, 0, atol=1e-6)
  )


def _crop_resnet_stem(backbone: resnet.ResNet, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The inverse of `_pad_resnet_stem`: a 64-channel timm stem back to `width` channels. Refuses a
  stem whose extra channels carry anything (no `width`-channel network computes the same)."""
  width = backbone.stem_bn.num_features
  if width == TIMM_RESNET_STEM or "bn1.weight" not in state or backbone.deep_stem is not None:
    return state
  state = dict(state)
  padding = [state["conv1.weight"][width:], state["bn1.weight"][width:], state["bn1.bias"][width:]]
  if any(np.any(p != 0) for p in padding):
    raise ValueError(
      f"The timm ResNet uses all {TIMM_RESNET_STEM} channels of its stem, and a lejepa_jax ResNet's "
      f"stem is as wide as its first stage ({width} here, model.width): only a state_dict whose "
      f"stem channels beyond {width} are zero (what `--timm` writes) fits. A standard timm ResNet "
      f"loads into model.width={TIMM_RESNET_STEM}."
    )
  if not _first_block_projects(backbone) and not _is_identity_projection(state):
    raise ValueError(
      "The timm ResNet's first block projects its input (layer1.0.downsample), and this model "
      f"config's first block (width {width}) has no projection: only the identity projection "
      "`--timm` writes fits."
    )
  state["conv1.weight"] = state["conv1.weight"][:width]
  for name in ("weight", "bias", "running_mean", "running_var"):
    state[f"bn1.{name}"] = state[f"bn1.{name}"][:width]
  state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"][:, :width]
  if _first_block_projects(backbone):
    state["layer1.0.downsample.0.weight"] = state["layer1.0.downsample.0.weight"][:, :width]
  else:
    for key in [k for k in state if k.startswith("layer1.0.downsample.")]:
      del state[key]
  return state


# --- the two directions -----------------------------------------------------------------------------


def to_timm_state_dict(backbone: nnx.Module) -> dict[str, np.ndarray]:
  """A backbone's arrays as a timm state_dict: {key: float32 array in torch layout}."""
  state = {
    _timm_key(backbone, path): np.ascontiguousarray(
      _to_torch(backbone, path, np.array(variable.get_value(), np.float32))  # a writable copy
    )
    for path, variable in _backbone_variables(backbone)
  }
  for key in _batch_norm_counters(backbone):
    state[key] = np.zeros((), np.int64)
  if isinstance(backbone, resnet.ResNet):
    _pad_resnet_stem(backbone, state)
  return state


def _as_numpy(value: Any) -> np.ndarray:
  """A torch tensor (any device or dtype, with or without grad) or array as a NumPy array."""
  if hasattr(value, "detach"):
    value = value.detach().cpu()
    return value.numpy() if not value.is_floating_point() else value.float().numpy()
  return np.asarray(value)


def load_timm_state_dict(backbone: nnx.Module, state_dict: Mapping[str, Any]) -> None:
  """Assigns a timm state_dict (arrays or torch tensors) to `backbone` in place, strictly: every
  key must be used and every variable found, with its shape."""
  arrays = {key: _as_numpy(value) for key, value in state_dict.items()}
  if isinstance(backbone, resnet.ResNet):
    arrays = _crop_resnet_stem(backbone, arrays)
  unused = set(arrays) - set(_batch_norm_counters(backbone))
  problems = []
  for path, variable in _backbone_variables(backbone):
    key = _timm_key(backbone, path)
    if key not in arrays:
      problems.append(f"missing {key}")
      continue
    unused.discard(key)
    expected = _to_torch(backbone, path, np.zeros(variable.get_value().shape, np.float32)).shape
    if arrays[key].shape != expected:
      problems.append(f"{key}: shape {arrays[key].shape}, this model config needs {expected}")
      continue
    variable.set_value(_from_torch(backbone, path, arrays[key].astype(np.float32)))
  problems += [f"unexpected {key}" for key in sorted(unused)]
  if problems:
    raise ValueError(
      "The timm state_dict does not match this model config (build the timm model "
      "`timm_spec(encoder.backbone)` describes):\n  " + "\n  ".join(problems[:20])
    )


def encoder_from_timm(
  state_dict: Mapping[str, Any], model_config: Mapping[str, Any], seed: int = 0
) -> models.Encoder:
  """A lejepa_jax encoder whose backbone holds a timm state_dict's weights.

  Args:
    state_dict: timm's `model.state_dict()` (tensors or arrays), for the model `timm_spec(backbone)`
      describes.
    model_config: the lejepa_jax model config; its projector (if any) starts from `seed`'s
      initialisation, since timm has none.
    seed: initialisation seed of what timm does not hold.

  Returns the encoder in eval mode, as `load_encoder` does (`.train()` before training it further).
  """
  # The backbone's weights come from the state_dict: only the rest is initialised.
  not_from_timm = nnx.Not(nnx.All(nnx.PathContains("backbone"), nnx.Any(nnx.Param, nnx.BatchStat)))
  encoder = models.create_encoder(model_config, seed=seed, initialise=not_from_timm)
  load_timm_state_dict(encoder.backbone, state_dict)
  encoder.eval()
  return encoder
