"""Exported encoders: a plain Flax variables tree (+ JSON config, optionally safetensors) that
`load_encoder` turns back into a ready-to-call encoder. The format: `encoder_files`' docstring;
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

__all__ = [
  "COLLECTIONS",
  "FORMAT",
  "VERSION",
  "export_run",
  "export_safetensors",
  "load_encoder",
  "main",
  "read_config",
  "save_encoder",
  "variables_tree",
]
