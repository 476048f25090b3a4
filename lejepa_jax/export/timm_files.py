r"""An encoder export for PyTorch: `timm_model.safetensors` (a timm `state_dict`) and `timm.json` (the
timm model that loads it), written beside the Flax files by `python -m lejepa_jax.export ... --timm`.

In PyTorch, with this package installed:

    from lejepa_jax.export import create_timm_model
    model = create_timm_model("exported/fmnist")        # eval mode, strict load
    features = model(images_nchw)   # the backbone's pooled output; images standardised as in
                                    # training (timm.json's "input": mean, std)

or with torch, timm and safetensors alone (what `create_timm_model` does):

    import json, timm, torch, safetensors.torch
    spec = json.load(open("exported/fmnist/timm.json"))
    model = timm.create_model(spec["model_name"], **spec["kwargs"])
    for name, m in spec.get("replace_modules", {}).items():   # only the ResNet small stem
        setattr(model, name, getattr(torch.nn, m["type"])(*m["args"], **m["kwargs"]))
    model.load_state_dict(safetensors.torch.load_file("exported/fmnist/timm_model.safetensors"))

The mapping itself: `lejepa_jax.export.timm_layout`.
"""

from __future__ import annotations

import json
import os

from lejepa_jax.export import timm_layout
from lejepa_jax.models import Encoder

STATE_FILE = "timm_model.safetensors"
SPEC_FILE = "timm.json"


def export_timm(encoder: Encoder, directory: str, preprocessing: dict | None = None) -> str:
  """Writes `directory/timm_model.safetensors` and `directory/timm.json` for `encoder`'s backbone;
  returns the safetensors path.

  Args:
    encoder: the encoder (its backbone is written; `timm_layout.timm_spec` refuses what timm lacks).
    directory: an existing directory.
    preprocessing: recorded as timm.json's "input", e.g. {"mean": [...], "std": [...]} of training.
  """
  from safetensors.numpy import save_file

  spec = timm_layout.timm_spec(encoder.backbone)
  path = os.path.join(directory, STATE_FILE)
  # "pt": the metadata safetensors.torch itself writes
  save_file(timm_layout.to_timm_state_dict(encoder.backbone), path, metadata={"format": "pt"})
  meta = {**spec.as_json(), "state_dict": STATE_FILE}
  if preprocessing:
    meta["input"] = preprocessing
  with open(os.path.join(directory, SPEC_FILE), "w") as f:
    json.dump(meta, f, indent=2)
  return path


def create_timm_model(directory: str):
  """The timm model of an export written with `--timm`, weights loaded strictly, in eval mode.

  Needs torch and timm (`pip install -e '.[torch]'`)."""
  import safetensors.torch

  spec_path = os.path.join(directory, SPEC_FILE)
  if not os.path.exists(spec_path):
    raise FileNotFoundError(
      f"{directory} has no {SPEC_FILE}; write it with `python -m lejepa_jax.export ... --timm`."
    )
  with open(spec_path) as f:
    spec = json.load(f)
  model = timm_model_from_spec(spec)
  state = safetensors.torch.load_file(os.path.join(directory, spec["state_dict"]))
  model.load_state_dict(state, strict=True)
  return model.eval()


def timm_model_from_spec(spec: dict):
  """The (randomly initialised) timm model a `TimmSpec.as_json()` dict describes, small-stem
  replacements applied."""
  import timm
  import torch

  model = timm.create_model(spec["model_name"], **spec["kwargs"])
  for name, module in spec.get("replace_modules", {}).items():
    setattr(model, name, getattr(torch.nn, module["type"])(*module["args"], **module["kwargs"]))
  return model
