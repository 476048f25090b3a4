"""Flax NNX encoders built by name: ViT, ResNet, ResNeXt, ConvNeXt (V1 and V2), Swin, LeViT,
EfficientNet, InceptionNeXt, MaxViT and Perception Encoder ViT backbones plus the LeJEPA projector.

encoder = build_encoder({"name": "vit", "variant": "S/16", "projector": {"out_dim": 128}},
                        make_rngs(0))
features, projections = encoder(images)   # images [N, H, W, C], float
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lejepa_jax.models.convnext import ConvNeXt, ConvNeXtV2
from lejepa_jax.models.efficientnet import EfficientNet
from lejepa_jax.models.encoder import Encoder, Projector
from lejepa_jax.models.inception_next import InceptionNeXt
from lejepa_jax.models.levit import LeViT
from lejepa_jax.models.maxvit import MaxViT
from lejepa_jax.models.pe_vit import PerceptionViT
from lejepa_jax.models.resnet import ResNet
from lejepa_jax.models.resnext import ResNeXt
from lejepa_jax.models.rngs import make_rngs
from lejepa_jax.models.swin import Swin
from lejepa_jax.models.vit import ViT

# name -> (class, the config keys it accepts besides name/variant/dtype/projector)
BACKBONES: dict[str, tuple[Callable[..., nnx.Module], tuple[str, ...]]] = {
  "vit": (ViT, ("img_size", "in_channels", "class_token", "num_registers", "drop_path", "remat")),
  "resnet": (ResNet, ("in_channels", "small_stem", "stem", "avg_down", "blur", "width")),
  "convnextv2": (ConvNeXtV2, ("in_channels", "drop_path", "remat", "stem", "norm")),
  "convnext": (ConvNeXt, ("in_channels", "drop_path", "remat", "stem", "norm")),
  "resnext": (ResNeXt, ("in_channels",)),
  "swin": (Swin, ("img_size", "in_channels", "drop_path")),
  "levit": (LeViT, ("img_size", "in_channels", "drop_path")),
  "efficientnet": (EfficientNet, ("in_channels", "norm", "group_size", "drop_path")),
  "inception_next": (InceptionNeXt, ("in_channels", "drop_path")),
  "maxvit": (MaxViT, ("img_size", "rel_pos", "in_channels", "drop_path")),
  "pe_vit": (PerceptionViT, ("img_size", "in_channels", "drop_path")),
}
PROJECTOR_KEYS = ("hidden_dim", "out_dim", "num_layers")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _dtype(name: str):
  """Computation dtype; "auto" is bfloat16 on accelerators and float32 on the CPU."""
  if name == "auto":
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  if name not in DTYPES:
    raise ValueError(f"model.dtype must be 'auto' or one of {list(DTYPES)}, got {name!r}.")
  return DTYPES[name]


def _check_keys(config: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
  unknown = sorted(set(config) - set(allowed))
  if unknown:
    raise ValueError(f"Unknown key(s) {unknown} in {where}; accepted keys: {sorted(allowed)}.")


def build_backbone(config: Mapping[str, Any], rngs: nnx.Rngs) -> nnx.Module:
  """Builds a backbone from {"name", "variant", "dtype", ...backbone options}."""
  name = config.get("name")
  if name not in BACKBONES:
    raise ValueError(f"Unknown model.name {name!r}; available: {sorted(BACKBONES)}.")
  cls, keys = BACKBONES[name]
  _check_keys(
    {k: v for k, v in config.items() if k != "projector"},
    ("name", "variant", "dtype") + keys,
    f"the {name} model config",
  )
  kwargs = {k: config[k] for k in keys if k in config}
  kwargs["dtype"] = _dtype(config.get("dtype", "auto"))
  if "variant" in config:
    kwargs["variant"] = config["variant"]
  return cls(rngs=rngs, **kwargs)


def build_encoder(config: Mapping[str, Any], rngs: nnx.Rngs) -> Encoder:
  """Builds backbone + projector from a model config; `projector: None` builds the backbone alone.

  Args:
    config: {"name": one of BACKBONES, "variant": ..., "dtype": "auto" (bfloat16 on
      accelerators, float32 on CPU) | "float32" | "bfloat16", backbone options..., "projector":
      {"hidden_dim", "out_dim", "num_layers"} or None}.
    rngs: parameter (and drop-path) random streams; `make_rngs(seed)` traces deep models fastest.
  """
  config = dict(config)
  projector_config = config.get("projector", {})
  if projector_config is not None:  # checked before the backbone is built: a typo fails at once
    projector_config = dict(projector_config)
    _check_keys(projector_config, PROJECTOR_KEYS, "model.projector")
  backbone = build_backbone(config, rngs)
  if projector_config is None:
    return Encoder(backbone, None)
  projector = Projector(
    backbone.pooled_dim, dtype=_dtype(config.get("dtype", "auto")), rngs=rngs, **projector_config
  )
  return Encoder(backbone, projector)


def create_encoder(
  config: Mapping[str, Any],
  seed: int = 0,
  mesh: jax.sharding.Mesh | None = None,
  rules=None,
  initialise: nnx.filterlib.Filter = ...,
) -> Encoder:
  """Builds an encoder inside one jit (fast), laid out on `mesh` per the logical-axis `rules`.

  Args:
    config: model config, as for :func:`build_encoder`.
    seed: parameter initialisation seed.
    mesh: optional mesh; parameters are created already sharded on it.
    rules: logical-axis rules (default `lejepa_jax.scale.sharding.DEFAULT_RULES`).
    initialise: the variables to initialise (an nnx filter, default all); the others are left as
      `jax.ShapeDtypeStruct`s for the caller to assign (loading weights: their random
      initialisers are not compiled).
  """
  from lejepa_jax.scale import program_cache, sharding

  rules = sharding.DEFAULT_RULES if rules is None else rules
  # Named by config and an integer seed: a second encoder of both in this process reuses the
  # initialiser (a seed given as a key array is data, not part of the name: no reuse).
  key = program_cache.program_key(config, "encoder", seed) if isinstance(seed, int) else None
  config = copy.deepcopy(config)  # a kept initialiser must not see the caller's later changes
  return sharding.create_sharded(
    lambda: build_encoder(config, make_rngs(seed)), mesh, rules, cache_key=key, initialise=initialise
  )


def count_params(name: str, variant: str, **options: Any) -> int:
  """Parameter count of a backbone (no projector, no head) from abstract shapes; nothing is allocated.

  Example: `count_params("vit", "L/14")` -> about 303M.
  """
  config = {"name": name, "variant": variant, **options}
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: build_backbone(config, make_rngs(0)))
  params = nnx.state(abstract, nnx.Param)
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


__all__ = [
  "BACKBONES",
  "ConvNeXt",
  "ConvNeXtV2",
  "EfficientNet",
  "Encoder",
  "InceptionNeXt",
  "LeViT",
  "MaxViT",
  "PerceptionViT",
  "Projector",
  "ResNeXt",
  "ResNet",
  "Swin",
  "ViT",
  "build_backbone",
  "build_encoder",
  "count_params",
  "create_encoder",
  "make_rngs",
]
