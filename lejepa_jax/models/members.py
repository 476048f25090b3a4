"""Convolutions of many models at once (`jax.vmap` over their weights), fast on the CPU.

`lejepa_jax.ablate` trains the members of a sweep as one program by vmapping the train step over
stacked parameters. `jax.vmap` turns a convolution whose kernel is batched into one grouped
convolution (feature_group_count = members), and XLA's CPU backend runs grouped convolutions on a
slow generic path: for the default Fashion-MNIST ResNet-18, 8 members took about 10x longer per step
than 8 separate steps. Inside `per_member_convolutions()`, convolutions built by `layers.conv`
(routed by `cpu_kernels.conv_general_dilated`) get a vmap rule that, when the kernel is batched,
runs each member's convolution on its own (forward and backward), which keeps XLA's fast convolution
path. Elsewhere (only the input batched) the usual batching applies. Results are identical either
way.

`config.member_convolutions` chooses the strategy: "per_member", "grouped" (jax.vmap's grouped
convolutions) or "auto", which is `AUTO[backend]`, measured with `python -m lejepa_jax.bench ablate
--member_convolutions=per_member,grouped` (the numbers are in docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

_ENABLED = contextvars.ContextVar("per_member_convolutions", default=False)

STRATEGIES = ("per_member", "grouped")
# The strategy per backend. cpu: measured on a 2-core AMD EPYC (AVX-512, no AMX) with the CPU
# compiler options of lejepa_jax/scale/compiler.py, 4 members of the default Fashion-MNIST ResNet-18:
# grouped convolutions took several times as long per step as per-member ones (docs/benchmarks.md).
# Accelerators batch grouped convolutions well: there vmapped members are the point.
AUTO = {"cpu": "per_member"}


def strategy(setting: str = "auto", backend: str | None = None) -> str:
  """The member-convolution strategy a `member_convolutions` setting selects on `backend`."""
  if setting == "auto":
    return AUTO.get(backend or jax.default_backend(), "grouped")
  if setting not in STRATEGIES:
    raise ValueError(f"member_convolutions must be 'auto' or one of {STRATEGIES}, got {setting!r}.")
  return setting


@contextlib.contextmanager
def member_convolutions(setting: str = "auto") -> Iterator[None]:
  """Trace (jit / lower) a vmapped-over-members function inside this to get the convolutions the
  setting selects (see `strategy`)."""
  token = _ENABLED.set(strategy(setting) == "per_member")
  try:
    yield
  finally:
    _ENABLED.reset(token)


@contextlib.contextmanager
def per_member_convolutions() -> Iterator[None]:
  """Trace (jit / lower) a vmapped-over-members function inside this to get the per-member rule."""
  token = _ENABLED.set(True)
  try:
    yield
  finally:
    _ENABLED.reset(token)


def enabled() -> bool:
  return _ENABLED.get()


def _unrolled_over_members(fn: Callable[..., Any]) -> Callable[..., Any]:
  """`fn(input, kernel, ...)` whose vmap, when the kernel is batched, calls `fn` once per member on
  that member's slices and stacks the results (any pytree of arrays)."""
  wrapped = jax.custom_batching.custom_vmap(fn)

  @wrapped.def_vmap
  def rule(axis_size: int, in_batched: list[bool], *args):
    if not in_batched[1]:
      out = jax.vmap(fn, in_axes=[0 if b else None for b in in_batched])(*args)
    else:
      outs = [fn(*[a[i] if b else a for a, b in zip(args, in_batched)]) for i in range(axis_size)]
      out = jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
    return out, jax.tree.map(lambda _: True, out)

  return wrapped


def conv(
  conv_fn: Callable[[jax.Array, jax.Array], jax.Array], lhs: jax.Array, rhs: jax.Array
) -> jax.Array:
  """`conv_fn(lhs, rhs)` with the per-member vmap rule in the forward and the backward pass.

  The backward pass needs its own rule: differentiating under vmap would otherwise batch the
  transposed convolutions into grouped ones again. It is `jax.vjp` of `conv_fn` itself, so the
  gradients are exactly those of `conv_fn`.
  """
  forward = _unrolled_over_members(conv_fn)
  backward = _unrolled_over_members(lambda l, r, g: jax.vjp(conv_fn, l, r)[1](g))

  @jax.custom_vjp
  def f(l, r):
    return forward(l, r)

  f.defvjp(lambda l, r: (forward(l, r), (l, r)), lambda res, g: backward(*res, g))
  return f(lhs, rhs)
