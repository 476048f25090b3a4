"""XLA compiler options, chosen by backend in this one place for every compiled program of the
project (the train step, the ablation members' step, evaluation's feature extraction, benchmarks).

`config.compiler_options` selects them:
  "auto"                  the project's choice for the backend (`AUTO`; nothing on GPU or TPU);
  "none"                  XLA's own defaults;
  "auto;name=value;..."   the project's choice plus (or overriding) the listed options;
  "name=value;..."        only the listed options.
Options are XLA debug options passed per compile (`jax.jit(..., compiler_options=...)`), so no
environment variable is needed; `XLA_FLAGS=--help python -c "import jax; jax.numpy.zeros(1)"`
lists them with their defaults. Values "true"/"false" become booleans, integers integers; enum
values take their full names (e.g. LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT). Items are separated by ';'
because one value can be a comma-separated list.
"""

from __future__ import annotations

import logging
from typing import Any

import jax

log = logging.getLogger("lejepa_jax")

# The project's choice per backend.
#
# cpu: jaxlib 0.10.2 hands float32 dots, convolutions and large reductions to YNNPACK by default.
# Its convolutions are slower than XLA's own here: keep YNNPACK for dots and reductions only.
# Measured on a 2-core AMD EPYC (AVX-512, no AMX), `python -m lejepa_jax.bench train`: the
# default ResNet-18 width-32 step 2.74 -> 2.01 s (all YNNPACK fusions off: 2.17 s); ViT steps,
# which have no convolutions, are unchanged. On a 2-core Intel Xeon with AMX the same option took
# that step from 2.72 to 2.14 s.
AUTO: dict[str, dict[str, Any]] = {
  "cpu": {
    "xla_cpu_experimental_ynn_fusion_type": (
      "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
    )
  },
}


def _value(text: str) -> Any:
  lowered = text.strip().lower()
  if lowered in ("true", "false"):
    return lowered == "true"
  try:
    return int(text)
  except ValueError:
    return text.strip()


def parse(setting: str, backend: str | None = None) -> dict[str, Any]:
  """The options a `compiler_options` setting selects on `backend` (default: JAX's backend).

  Example: `parse("auto;xla_cpu_enable_fast_math=false", "cpu")` -> the CPU choice plus that flag.
  """
  backend = backend or jax.default_backend()
  options: dict[str, Any] = {}
  for item in (part.strip() for part in str(setting).split(";")):
    if item in ("", "none"):
      continue
    if item == "auto":
      options.update(AUTO.get(backend, {}))
    elif "=" in item:
      name, text = item.split("=", 1)
      options[name.strip()] = _value(text)
    else:
      raise ValueError(
        f"compiler_options: cannot read {item!r} in {setting!r}; use 'auto', 'none', or "
        "'name=value' items separated by ';' (e.g. 'auto;xla_cpu_enable_fast_math=false')."
      )
  return options


_announced: set[tuple] = set()


def options(config_or_setting: Any = "auto") -> dict[str, Any]:
  """The compiler options for a config (its `compiler_options` key; "auto" if it has none) or a
  setting string, logged once per distinct choice so every run shows what it compiled with."""
  setting = config_or_setting
  if not isinstance(setting, str):
    setting = config_or_setting.get("compiler_options", "auto")
  chosen = parse(setting)
  key = (setting, tuple(sorted(chosen.items())))
  if key not in _announced:
    _announced.add(key)
    log.info(
      "XLA compiler options (%s backend, compiler_options=%r): %s",
      jax.default_backend(),
      setting,
      chosen or "XLA's defaults",
    )
  return chosen
