"""Convolutions of many models at once (`jax.vmap` over their weights), fast on the CPU.

`lejepa_jax.ablate` trains the members of a sweep as one program by vmapping the train step over
stacked parameters. `jax.vmap` turns a convolution whose kernel is batched into one grouped
convolution (feature_group_count = members), and XLA's CPU backend runs grouped convolutions on a
slow generic path: for the default Fashion-MNIST ResNet-18, 8 members took about 10x longer per step
than 8 separate steps. Inside `per_member_convolutions()`, convolutions built by `layers.conv` get a
vmap rule that, on the CPU and when the kernel is batched, runs each member's convolution on its own
(forward and backward), which keeps XLA's fast convolution path. Elsewhere (accelerators, or only
the input batched) the usual batching applies. Results are identical either way.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp

_ENABLED = contextvars.ContextVar("per_member_convolutions", default=False)


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
  """`fn(input, kernel, ...)` whose vmap, when the kernel is batched on the CPU, calls `fn` once per
  member on that member's slices and stacks the results (any pytree of arrays)."""
  wrapped = jax.custom_batching.custom_vmap(fn)

  @wrapped.def_vmap
  def rule(axis_size: int, in_batched: list[bool], *args):
    if not (in_batched[1] and jax.default_backend() == "cpu"):
      out = jax.vmap(fn, in_axes=[0 if b else None for b in in_batched])(*args)
    else:
      outs = [fn(*[a[i] if b else a for a, b in zip(args, in_batched)]) for i in range(axis_size)]
      out = jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
    return out, jax.tree.map(lambda _: True, out)

  return wrapped


def conv(conv_fn: Callable[[jax.Array, jax.Array], jax.Array], lhs: jax.Array, rhs: jax.Array
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
