"""The members of a sweep and their grouping into programs (`plan_sweep`)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import ml_collections

from lejepa_jax import config_lib
from lejepa_jax.losses import lejepa as lejepa_loss

# Config keys whose values a member's step receives as traced numbers -> their name in the step.
TRACED = {
  "loss.sigreg_weight": "sigreg_weight",
  "optim.lr": "lr",
  "optim.weight_decay": "weight_decay",
  "seed": "seed",
}


@dataclasses.dataclass(frozen=True)
class Member:
  """One configuration of the sweep: `overrides` {config key: value text} applied to the base."""

  name: str
  overrides: tuple[tuple[str, str], ...]
  config: ml_collections.ConfigDict

  def hparams(self) -> dict[str, float]:
    c = self.config
    return {
      "sigreg_weight": float(c.loss.sigreg_weight),
      "lr": float(c.optim.lr),
      "weight_decay": float(c.optim.weight_decay),
      "seed": int(c.seed),
    }


@dataclasses.dataclass(frozen=True)
class Group:
  """Members sharing one program: the same values of every swept key outside TRACED.

  `config` is the base config with those values; its seed (the data seed) is the base seed.
  """

  name: str
  config: ml_collections.ConfigDict
  members: tuple[Member, ...]


def _node_and_leaf(config: ml_collections.ConfigDict, key: str):
  """('a.b.c') -> (config.a.b, 'c')."""
  *path, leaf = key.split(".")
  node = config
  for part in path:
    node = node[part]
  return node, leaf


def with_overrides(
  config: ml_collections.ConfigDict, overrides: Sequence[tuple[str, str]]
) -> ml_collections.ConfigDict:
  """A copy of `config` with {dotted key: value text} set (values parsed as the key's type)."""
  config = config.copy_and_resolve_references()
  for key, text in overrides:
    try:
      node, leaf = _node_and_leaf(config, key)
      current = node[leaf]
    except (KeyError, AttributeError):
      raise ValueError(f"--sweep names {key!r}, which the config does not have.") from None
    try:
      node[leaf] = config_lib.parse_value(text, current)
    except ValueError as e:
      raise ValueError(f"--sweep {key}: {e}.") from None
  return config


def parse_sweep(text: str) -> tuple[str, list[str]]:
  """'loss.sigreg_weight=0,0.05' -> ('loss.sigreg_weight', ['0', '0.05'])."""
  key, sep, values = text.partition("=")
  if not sep or not key or not values:
    raise ValueError(f"--sweep must look like key=v1,v2,...; got {text!r}.")
  return key.strip(), [v.strip() for v in values.split(",") if v.strip()]


def _member_name(overrides: Sequence[tuple[str, str]], varying: set[str]) -> str:
  """'sigreg_weight=0.05,seed=1' from the keys that vary (their last component when unique)."""
  shorts = [key.split(".")[-1] for key in varying]

  def short(key: str) -> str:
    return key.split(".")[-1] if shorts.count(key.split(".")[-1]) == 1 else key

  return ",".join(f"{short(k)}={v}" for k, v in overrides if k in varying) or "base"


def plan_sweep(
  config: ml_collections.ConfigDict, sweeps: Sequence[tuple[str, Sequence[str]]], seeds: int = 1
) -> list[Group]:
  """The members (product of the sweeps, then `seeds` seeds from config.seed) in program groups."""
  sweeps = list(sweeps) + ([("seed", [str(config.seed + i) for i in range(seeds)])] if seeds > 1 else [])
  keys = [key for key, _ in sweeps]
  if len(set(keys)) != len(keys):
    raise ValueError(f"A key is swept twice: {keys}.")
  varying = {key for key, values in sweeps if len(values) > 1}
  groups: dict[tuple, list[Member]] = {}
  for values in itertools.product(*[values for _, values in sweeps]):
    overrides = tuple(zip(keys, values))
    member = Member(_member_name(overrides, varying), overrides, with_overrides(config, overrides))
    # Lambda is traced in the members' step, where the loss cannot check it: check it here.
    lejepa_loss.check_sigreg_weight(float(member.config.loss.sigreg_weight), member.config.loss.combine)
    static = tuple((k, v) for k, v in overrides if k not in TRACED)
    groups.setdefault(static, []).append(member)
  names = [m.name for ms in groups.values() for m in ms]
  if len(set(names)) != len(names):
    raise ValueError(f"Two members would share a name: {names}; sweep distinct values.")
  return [
    Group(_member_name(static, varying) if static else "all", with_overrides(config, static), tuple(ms))
    for static, ms in groups.items()
  ]
