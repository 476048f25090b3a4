"""Meshes, logical-axis rules and sharded model creation.

Parameters carry logical axis names (see `lejepa_jax.models.layers`); rules map each name to mesh axes.
The defaults give data parallelism plus FSDP (parameters sharded over "fsdp" along their "embed" /
"conv_out" axis) and optional tensor parallelism ("mlp" and "heads" over "tensor"). Mesh axes a rule
names but the mesh lacks are dropped, so one rule set serves every mesh.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from lejepa_jax.scale import program_cache

LogicalRules = Sequence[tuple[str, Any]]

BATCH_AXES = ("data", "fsdp")
DEFAULT_RULES: LogicalRules = (
  ("batch", BATCH_AXES),
  ("embed", "fsdp"),
  ("conv_out", "fsdp"),
  ("mlp", "tensor"),
  ("heads", "tensor"),
  ("patch", None),
  ("conv_in", None),
  ("norm", None),
)
AXIS_TYPES = {"auto": AxisType.Auto, "explicit": AxisType.Explicit}


def make_mesh(
  axes: Mapping[str, int],
  axis_type: str = "auto",
  devices: Sequence[jax.Device] | None = None,
  dcn_axes: Mapping[str, int] | None = None,
) -> jax.sharding.Mesh:
  """A mesh over all (or the given) devices; one axis may be -1 to take the remaining devices.

  Args:
    axes: ordered {axis name: size}, e.g. {"data": -1, "fsdp": 8}. With `dcn_axes`, the sizes within
      one granule (a TPU slice, or a process where devices have no slice): the fast-network axes.
    axis_type: "auto" (XLA propagates shardings) or "explicit" (shardings are part of array types).
    dcn_axes: {axis name: number of granules along it}, e.g. {"data": 2} for two slices joined by
      the data-centre network; each mesh axis then has size axes[name] * dcn_axes.get(name, 1).
  """
  devices = list(devices if devices is not None else jax.devices())
  if axis_type not in AXIS_TYPES:
    raise ValueError(f"mesh axis_type must be one of {list(AXIS_TYPES)}, got {axis_type!r}.")
  types = (AXIS_TYPES[axis_type],) * len(axes)
  if dcn_axes and math.prod(dcn_axes.values()) > 1:
    array = hybrid_device_array(axes, dcn_axes, devices)
    return jax.sharding.Mesh(array, tuple(axes), axis_types=types)
  sizes = _axis_sizes(axes, len(devices))
  return jax.make_mesh(tuple(sizes.values()), tuple(sizes), devices=devices, axis_types=types)


def _axis_sizes(axes: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """{name: size} with the one -1 (if any) resolved so the sizes multiply to `num_devices`."""
  sizes = dict(axes)
  free = [name for name, size in sizes.items() if size == -1]
  if len(free) > 1:
    raise ValueError(f"At most one mesh axis may be -1, got {free} in {dict(axes)}.")
  fixed = math.prod(size for size in sizes.values() if size != -1)
  if free:
    if num_devices % fixed:
      raise ValueError(f"Mesh {dict(axes)} does not divide the {num_devices} devices.")
    sizes[free[0]] = num_devices // fixed
  if math.prod(sizes.values()) != num_devices:
    raise ValueError(
      f"Mesh {sizes} needs {math.prod(sizes.values())} devices, "
      f"but {num_devices} are available; use -1 for one axis to fill the rest."
    )
  return sizes


def hybrid_device_array(
  axes: Mapping[str, int], dcn_axes: Mapping[str, int], devices: Sequence[Any]
) -> np.ndarray:
  """Devices laid out [axes[a] * dcn_axes[a] for each axis a]: granules side by side along the DCN
  axes, each granule's devices arranged for its fast interconnect along the ICI axes.

  Granules are TPU slices when the devices carry `slice_index` and span as many slices as
  `dcn_axes` asks for, else processes (GPU nodes with one process each; CPU processes in tests).
  Only communication along DCN axes crosses granules, so put the axis whose collectives are rare
  or overlap well with compute there (usually "data").
  """
  unknown = sorted(set(dcn_axes) - set(axes))
  if unknown:
    raise ValueError(f"mesh.dcn_axes names {unknown}, which mesh.axes {list(axes)} lacks.")
  dcn_shape = tuple(int(dcn_axes.get(name, 1)) for name in axes)
  granules = math.prod(dcn_shape)
  if len(devices) % granules:
    raise ValueError(
      f"mesh.dcn_axes {dict(dcn_axes)} ({granules} granules) does not divide the {len(devices)} devices."
    )
  ici_shape = tuple(_axis_sizes(axes, len(devices) // granules).values())
  slices = {getattr(d, "slice_index", None) for d in devices}
  by_slice = None not in slices and len(slices) == granules
  if not by_slice and len({d.process_index for d in devices}) != granules:
    raise ValueError(
      f"mesh.dcn_axes {dict(dcn_axes)} asks for {granules} granules, but the "
      f"devices span {len(slices)} slice(s) and "
      f"{len({d.process_index for d in devices})} process(es)."
    )
  return mesh_utils.create_hybrid_device_mesh(
    ici_shape, dcn_shape, devices, process_is_granule=not by_slice
  )


def rules_for_mesh(mesh: jax.sharding.Mesh, rules: LogicalRules = DEFAULT_RULES) -> LogicalRules:
  """Drops mesh axes that `mesh` does not have from the rules' targets."""

  def keep(target):
    if target is None:
      return None
    names = (target,) if isinstance(target, str) else tuple(target)
    kept = tuple(name for name in names if name in mesh.axis_names)
    return None if not kept else kept[0] if len(kept) == 1 else kept

  return tuple((logical, keep(target)) for logical, target in rules)


def batch_spec(mesh: jax.sharding.Mesh, rank: int = 1) -> P:
  """PartitionSpec sharding an array's leading (batch) axis over the mesh's data-parallel axes."""
  axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
  return P(axes if axes else None, *([None] * (rank - 1)))


def abstract_state(
  build: Callable[[], nnx.Module], mesh: jax.sharding.Mesh, rules: LogicalRules = DEFAULT_RULES
):
  """(graphdef, state of ShapeDtypeStructs carrying NamedShardings) of `build()`; nothing allocated."""
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules_for_mesh(mesh, rules)):
    with nnx.use_eager_sharding(False):
      abstract = nnx.eval_shape(build)
    graphdef, state = nnx.split(abstract)
    shardings = nnx.get_named_sharding(state, mesh)
  state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state, shardings)
  return graphdef, state


def create_sharded(
  build: Callable[[], nnx.Module],
  mesh: jax.sharding.Mesh | None = None,
  rules: LogicalRules = DEFAULT_RULES,
  *,
  cache_key: Hashable | None = None,
  initialise: nnx.filterlib.Filter = ...,
) -> nnx.Module:
  """Creates `build()` inside one jit, with every variable laid out per the rules on `mesh`.

  The jit's outputs carry the target shardings, so no device ever holds a full copy of a sharded
  parameter; compiling the initialisers once is also much faster than running them op by op.
  Without a mesh the module lands on the default device.

  `cache_key`, if given, names what `build` makes (equal keys: equal modules, e.g.
  `program_cache.program_key(config)`): a later call in this process with the same key, mesh and
  rules reuses the traced and compiled initialiser and only runs it (fresh arrays each call).

  `initialise` (an nnx filter; default: every variable) picks the variables the jit creates; the
  others stay `jax.ShapeDtypeStruct`s (with their shardings) for the caller to assign, e.g. from a
  file. XLA then drops their initialisers from the program, and compiling a random initialiser
  costs more than anything else about it: 60-120 ms per parameter on the CPU (EfficientNet-B0's
  174 draws: 7.5-9.4 s on the 2-core AMD EPYC, at LLVM -O0).
  """
  if cache_key is None:
    graphdef, init, rest = _initialiser(build, mesh, rules, initialise)
  else:
    key = ("create_sharded", cache_key, mesh, repr(tuple(rules)), repr(initialise))
    graphdef, init, rest = program_cache.built(key, lambda: _initialiser(build, mesh, rules, initialise))
  if mesh is None:
    return nnx.merge(graphdef, init(), rest)
  with jax.set_mesh(mesh):
    return nnx.merge(graphdef, init(), rest)


def _initialiser(build: Callable[[], nnx.Module], mesh, rules, initialise: nnx.filterlib.Filter):
  """(graphdef, jitted function returning the `initialise` part of a new `build()`'s state, the
  rest of its state as ShapeDtypeStructs) for create_sharded."""
  if mesh is None:
    with nnx.use_eager_sharding(False):
      graphdef, abstract = nnx.split(nnx.eval_shape(build))
  else:
    graphdef, abstract = abstract_state(build, mesh, rules)
  if initialise is ...:
    created, rest = abstract, nnx.State({})
  else:
    created, rest = nnx.split_state(abstract, initialise, ...)
  shardings = None if mesh is None else jax.tree.map(lambda a: a.sharding, created)

  @functools.partial(jax.jit, out_shardings=shardings)
  def init():
    with nnx.use_eager_sharding(False):
      return nnx.state(build(), initialise)

  return graphdef, init, rest


def bytes_per_device(state) -> dict[int, int]:
  """Bytes each device holds of a state of arrays or sharded ShapeDtypeStructs, by device id."""
  totals: dict[int, int] = {}
  for leaf in jax.tree.leaves(state):
    sharding = leaf.sharding
    shard_bytes = math.prod(sharding.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize
    for device in sharding.device_set:
      totals[device.id] = totals.get(device.id, 0) + shard_bytes
  return totals
