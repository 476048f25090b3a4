r"""Export a trained encoder as a plain Flax variables tree (+ JSON config) and load it back in one call.

From a training run's checkpoint (the latest, or --step):

    python -m lejepa_jax.export --workdir=<training workdir> --out=exported/vit_s16 [--step=N] \
        [--with_projector] [--safetensors] [--timm]

On-disk format of an exported encoder directory:

    config.json        {"format": "lejepa_jax.encoder", "version": 1, "model": {model config},
                        "with_projector": bool}
    variables/         orbax checkpoint of {"params": {...}, "batch_stats": {...}}: nested dicts of
                       float32 arrays keyed by module path, e.g. params/backbone/blocks/0/attn/qkv/kernel
    model.safetensors  (optional, `export_safetensors`) the same arrays, keys joined by ".", e.g.
                       "params.backbone.blocks.0.attn.qkv.kernel", "batch_stats.backbone.stem_bn.mean"
    timm_model.safetensors, timm.json
                       (optional, `--timm`) the backbone as a PyTorch timm model's state_dict, and
                       the timm model that loads it: lejepa_jax/export/timm_files.py

Kernels are laid out [in, out] for Linear and [kh, kw, in, out] for convolutions (Flax convention).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from lejepa_jax import models
from lejepa_jax.evaluation import restore
from lejepa_jax.export import timm_files, timm_layout
from lejepa_jax.scale import sharding
from lejepa_jax.training import checkpointing

FORMAT = "lejepa_jax.encoder"
VERSION = 1
COLLECTIONS = {"params": nnx.Param, "batch_stats": nnx.BatchStat}


def variables_tree(encoder: nnx.Module) -> dict[str, dict]:
  """{"params": nested dict, "batch_stats": nested dict} of the encoder's arrays, string keys."""
  tree = {}
  for name, kind in COLLECTIONS.items():
    flat = nnx.to_flat_state(nnx.state(encoder, kind))
    nested: dict = {}
    for path, variable in flat:
      node = nested
      for key in path[:-1]:
        node = node.setdefault(str(key), {})
      node[str(path[-1])] = variable.get_value()
    if nested:
      tree[name] = nested
  return tree


def _model_config(config: Mapping[str, Any], with_projector: bool) -> dict:
  config = json.loads(json.dumps(dict(config), default=dict))  # ConfigDicts and tuples -> JSON types
  if not with_projector:
    config["projector"] = None
  return config


def save_encoder(
  encoder: models.Encoder,
  model_config: Mapping[str, Any],
  directory: str,
  *,
  with_projector: bool = True,
) -> str:
  """Exports `encoder` (built from `model_config`) to `directory`; returns its absolute path.

  Args:
    encoder: the trained encoder.
    model_config: the config it was built from (`build_encoder`).
    directory: a new directory.
    with_projector: keep the projector; False exports the backbone alone (what probes read).
  """
  directory = os.path.abspath(directory)
  if os.path.exists(os.path.join(directory, "config.json")):
    raise FileExistsError(f"{directory} already holds an exported encoder; choose a new directory.")
  tree = variables_tree(encoder)
  if not with_projector:
    tree = {name: {k: v for k, v in sub.items() if k != "projector"} for name, sub in tree.items()}
    # A collection only the projector had (a ViT's batch_stats) is left out, as variables_tree
    # leaves out empty ones: the saved tree must match the backbone-only encoder on loading.
    tree = {name: sub for name, sub in tree.items() if sub}
  os.makedirs(directory, exist_ok=True)
  checkpointing.save_tree(os.path.join(directory, "variables"), tree)
  meta = {
    "format": FORMAT,
    "version": VERSION,
    "model": _model_config(model_config, with_projector),
    "with_projector": with_projector,
  }
  if jax.process_index() == 0:
    with open(os.path.join(directory, "config.json"), "w") as f:
      json.dump(meta, f, indent=2)
  return directory


def read_config(directory: str) -> dict:
  path = os.path.join(directory, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"{directory} is not an exported encoder (no config.json); "
      "create one with lejepa_jax.export.save_encoder."
    )
  with open(path) as f:
    meta = json.load(f)
  if meta.get("format") != FORMAT:
    raise ValueError(f"{path} is not a lejepa_jax encoder export (format {meta.get('format')!r}).")
  return meta


def load_encoder(
  directory: str,
  mesh: jax.sharding.Mesh | None = None,
  rules: sharding.LogicalRules = sharding.DEFAULT_RULES,
) -> models.Encoder:
  """Loads an exported encoder, ready to call, optionally laid out on `mesh` per `rules`.

  The module comes back in eval mode (BatchNorm uses its running statistics, no drop-path).
  """
  meta = read_config(directory)
  # The saved arrays are restored onto their abstract shapes and layouts: only the variables the
  # export does not hold (random streams) are initialised.
  saved = nnx.Any(*COLLECTIONS.values())
  encoder = models.create_encoder(meta["model"], mesh=mesh, rules=rules, initialise=nnx.Not(saved))
  default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding or default),
    variables_tree(encoder),
  )
  restored = checkpointing.restore_tree(os.path.join(directory, "variables"), target)
  _assign(encoder, restored)
  encoder.eval()
  return encoder


def _assign(encoder: nnx.Module, tree: Mapping[str, Any]) -> None:
  for name, kind in COLLECTIONS.items():
    flat = dict(nnx.to_flat_state(nnx.state(encoder, kind)))
    values = checkpointing.flat_arrays(tree.get(name, {}), separator="/")
    for path, variable in flat.items():
      variable.set_value(values["/".join(map(str, path))])


def export_safetensors(encoder: nnx.Module, path: str) -> str:
  """Writes the encoder's variables as one `.safetensors` file (keys as in the module docstring)."""
  from safetensors.numpy import save_file

  flat = checkpointing.flat_arrays(variables_tree(encoder))
  arrays = {k: np.asarray(jax.device_get(v)) for k, v in flat.items()}
  save_file(arrays, path, metadata={"format": FORMAT, "layout": "flax"})
  return path


def export_run(
  workdir: str,
  out: str,
  step: int | None = None,
  *,
  with_projector: bool = False,
  safetensors: bool = False,
  timm: bool = False,
) -> str:
  """Exports the encoder of a training run's checkpoint (the latest when `step` is None) to `out`
  (+ `out/model.safetensors`; + the backbone for PyTorch, `out/timm_model.safetensors` and
  `out/timm.json`: `timm_files`); returns the export's absolute path. Reads the model only
  (`lejepa_jax.evaluation.restore.restore_encoder`, whose errors it raises)."""
  encoder, config, step = restore.restore_encoder(workdir, step)
  if timm:  # refuse a model timm cannot hold before writing anything
    timm_layout.timm_spec(encoder.backbone)
  directory = save_encoder(encoder, config.model, out, with_projector=with_projector)
  if safetensors:
    # From the export itself, so the file holds exactly what the directory does (projector or not).
    export_safetensors(load_encoder(directory), os.path.join(directory, "model.safetensors"))
  if timm:
    preprocessing = {"mean": list(config.data.mean), "std": list(config.data.std)}
    timm_files.export_timm(load_encoder(directory), directory, preprocessing)
  return directory
