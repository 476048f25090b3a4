"""Programs a process keeps once built: compiled steps and jitted initialisers, by what decides them.

A second run of the same config in one process (a resumed run, a notebook, a sweep driver, the
tests) would otherwise trace, lower and compile its programs again: about 4 s for the tests' tiny
ViT train step on 2 cores, minutes for a large model. The caller names a program by a hashable key
that covers everything the program depends on (`program_key`: the config's JSON and the shapes,
dtypes and shardings of the arguments); equal keys must mean equal programs. Each cache keeps its
most recently used entries only.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

import jax
import ml_collections

T = TypeVar("T")

KEPT = 8  # entries per cache: a sweep driver alternates between a few programs at most

_compiled: collections.OrderedDict = collections.OrderedDict()
_built: collections.OrderedDict = collections.OrderedDict()


def program_key(config: Mapping[str, Any] | None, *trees: Any) -> tuple:
  """A hashable name for a program of `config` (a ConfigDict or a plain mapping) taking `trees`
  (arrays, ShapeDtypeStructs or hashable leaves such as a mesh): the config's JSON, then each
  tree's structure and its leaves' shapes, dtypes and shardings."""
  parts: list[Hashable] = [_json(config)]
  for tree in trees:
    leaves, structure = jax.tree.flatten(tree)
    parts.append(structure)
    parts.append(tuple(_abstract(leaf) for leaf in leaves))
  return tuple(parts)


def _json(config: Mapping[str, Any] | None) -> str | None:
  if config is None:
    return None
  if isinstance(config, ml_collections.ConfigDict):
    return config.to_json(sort_keys=True)
  return json.dumps(dict(config), sort_keys=True, default=repr)


def _abstract(leaf: Any) -> Hashable:
  if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
    return (tuple(leaf.shape), str(leaf.dtype), getattr(leaf, "sharding", None))
  return leaf


def _remember(cache: collections.OrderedDict, key: Hashable, make: Callable[[], T]) -> T:
  if key in cache:
    cache.move_to_end(key)
    return cache[key]
  value = make()
  cache[key] = value
  while len(cache) > KEPT:
    cache.popitem(last=False)
  return value


def compiled(key: Hashable, lower: Callable[[], jax.stages.Lowered], compiler_options: dict):
  """`lower().compile(compiler_options=...)`, done once per process for each `key`."""
  options_key = tuple(sorted(compiler_options.items()))
  return _remember(
    _compiled, (key, options_key), lambda: lower().compile(compiler_options=compiler_options)
  )


def built(key: Hashable, make: Callable[[], T]) -> T:
  """`make()` (e.g. a jitted initialiser with its graphdef), done once per process for each `key`:
  calling a kept jitted function again reuses JAX's trace and executable."""
  return _remember(_built, key, make)
