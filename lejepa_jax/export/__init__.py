"""Exported encoders: a plain Flax variables tree (+ JSON config, optionally safetensors) that
`load_encoder` turns back into a ready-to-call encoder, and the backbone as a PyTorch timm model's
state_dict (`timm_files`; the mapping, both ways: `timm_layout`). The format: `encoder_files`' docstring;
the command `python -m lejepa_jax.export`: `command`."""

from lejepa_jax.export.command import main
from lejepa_jax.export.encoder_files import (
  COLLECTIONS,
  FORMAT,
  VERSION,
  export_run,
  export_safetensors,
  load_encoder,
  read_config,
  save_encoder,
  variables_tree,
)
from lejepa_jax.export.timm_files import create_timm_model, export_timm
from lejepa_jax.export.timm_layout import encoder_from_timm, timm_spec, to_timm_state_dict

__all__ = [
  "COLLECTIONS",
  "FORMAT",
  "VERSION",
  "create_timm_model",
  "encoder_from_timm",
  "export_timm",
  "export_run",
  "export_safetensors",
  "load_encoder",
  "main",
  "read_config",
  "save_encoder",
  "timm_spec",
  "to_timm_state_dict",
  "variables_tree",
]
