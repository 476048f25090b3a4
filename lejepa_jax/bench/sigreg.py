"""SIGReg forward+backward: the fused implementation against the straightforward formulation.

The straightforward formulation materialises cos/sin of every (sample, slice, knot) as an
[N, M, num_knots] array and lets autodiff store them for the backward pass; PyTorch eager code of the
same formula is timed too when torch is importable.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from lejepa_jax import cli, losses
from lejepa_jax.bench import common

DEFAULT_GRID = (
  "512,128,1024,17",
  "4096,128,1024,17",
  "4096,128,1024,33",
  "4096,128,1024,65",
  "2048,512,2048,17",
)


def _check_grid(cases: list[str]) -> bool:
  for case in cases:
    values = case.split(",")
    if len(values) != 4 or not all(v.strip().isdigit() for v in values):
      raise flags.ValidationError(f"case {case!r} is not N,D,M,num_knots (four integers)")
  return True


_PROG = "python -m lejepa_jax.bench sigreg"
_FLAGS = flags.FlagValues()  # this benchmark's own flags (`lejepa_jax.cli`)
_GRID = flags.DEFINE_multi_string(
  "grid",
  list(DEFAULT_GRID),
  "cases as N,D,M,num_knots, one per --grid (e.g. --grid=512,128,1024,17)",
  flag_values=_FLAGS,
)
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed calls per case (median)", flag_values=_FLAGS)
_JSON = flags.DEFINE_string("json", None, "also write the results to this JSON file", flag_values=_FLAGS)
flags.register_validator("grid", _check_grid, flag_values=_FLAGS)


def straightforward_sigreg(z, key, num_slices, t_max, num_knots):
  """SIGReg written the direct way: [N, M, num_knots] cos/sin arrays, autodiff through them."""
  t, w, phi = (jnp.asarray(a, jnp.float32) for a in losses.quadrature(t_max, num_knots))
  x = losses.project(z, losses.random_directions(key, z.shape[-1], num_slices))
  tx = x[..., None] * t  # [N, M, K]
  real, imag = jnp.mean(jnp.cos(tx), axis=0), jnp.mean(jnp.sin(tx), axis=0)
  return jnp.mean(z.shape[0] * jnp.sum(w * ((real - phi) ** 2 + imag**2), axis=-1))


def _compiled_value_and_grad(fn, z, key, num_slices, num_knots):
  def loss(v, k):
    return fn(v, k, num_slices=num_slices, t_max=3.0, num_knots=num_knots)

  return jax.jit(jax.value_and_grad(loss)).lower(z, key).compile()


def _time_jax(compiled, z, key, repeats):
  return common.median_seconds(lambda: jax.block_until_ready(compiled(z, key)), repeats)


def _time_torch(z_np, directions_np, num_knots, repeats):
  try:
    import torch
  except ImportError:
    return None
  t, w, phi = (torch.tensor(a, dtype=torch.float32) for a in losses.quadrature(3.0, num_knots))
  directions = torch.tensor(directions_np)

  def step():
    z = torch.tensor(z_np, requires_grad=True)
    x = z @ directions
    tx = x.unsqueeze(-1) * t
    real, imag = torch.cos(tx).mean(0), torch.sin(tx).mean(0)
    loss = (z.shape[0] * (((real - phi) ** 2 + imag**2) * w).sum(-1)).mean()
    loss.backward()
    return z.grad

  return common.median_seconds(step, repeats)


def run_case(n: int, d: int, m: int, k: int, repeats: int) -> dict:
  """Times one grid point; returns seconds, speed-ups and XLA temporary bytes."""
  z = jax.random.normal(jax.random.key(0), (n, d), jnp.float32)
  key = jax.random.key(1)
  fast = _compiled_value_and_grad(losses.sigreg, z, key, m, k)
  slow = _compiled_value_and_grad(straightforward_sigreg, z, key, m, k)
  np.testing.assert_allclose(fast(z, key)[0], slow(z, key)[0], rtol=1e-4)
  result = {
    "N": n,
    "D": d,
    "M": m,
    "num_knots": k,
    "fused_s": _time_jax(fast, z, key, repeats),
    "straightforward_s": _time_jax(slow, z, key, repeats),
    "fused_temp_bytes": fast.memory_analysis().temp_size_in_bytes,
    "straightforward_temp_bytes": slow.memory_analysis().temp_size_in_bytes,
  }
  directions = np.asarray(losses.random_directions(key, d, m))
  result["torch_s"] = _time_torch(np.asarray(z), directions, k, repeats)
  return result


def _format_rows(results):
  rows = []
  for r in results:
    torch_s = r["torch_s"]
    rows.append(
      [
        r["N"],
        r["D"],
        r["M"],
        r["num_knots"],
        f"{r['fused_s'] * 1e3:.1f}",
        f"{r['straightforward_s'] * 1e3:.1f}",
        f"{r['straightforward_s'] / r['fused_s']:.1f}x",
        "n/a" if torch_s is None else f"{torch_s * 1e3:.1f}",
        "n/a" if torch_s is None else f"{torch_s / r['fused_s']:.1f}x",
        f"{r['fused_temp_bytes'] / 2**20:.1f}",
        f"{r['straightforward_temp_bytes'] / 2**20:.1f}",
      ]
    )
  header = [
    "N",
    "D",
    "M",
    "knots",
    "fused ms",
    "straightforward ms",
    "speed-up",
    "torch eager ms",
    "vs torch",
    "fused temp MiB",
    "straightforward temp MiB",
  ]
  return common.markdown_table(header, rows)


def main(argv: list[str] | None = None) -> None:
  """The command line (module docstring); `argv` without the program name, None: sys.argv[1:]."""
  cli.parse(_FLAGS, argv, prog=_PROG, doc=__doc__)
  print(f"# SIGReg forward+backward, float32 ({common.machine_description()})", flush=True)
  results = []
  for case in _GRID.value:
    n, d, m, k = (int(v) for v in case.split(","))
    results.append(run_case(n, d, m, k, _REPEATS.value))
    print(f"  done N={n} D={d} M={m} knots={k}", flush=True)
  print(_format_rows(results))
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({"machine": common.machine_description(), "results": results}, f, indent=1)
