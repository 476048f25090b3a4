"""Where a compiled step's time goes: op time from a profiler trace, grouped by what the ops compute.

`op_time_breakdown(compiled, run)` runs `run` once under `jax.profiler.trace`, reads the trace's
per-op durations and files each op under `convolution` (an XLA convolution, or a fusion that
contains one), `product` (a dot, or a fusion containing one) or `other` (elementwise, reductions,
copies, ...), by looking the op up in the compiled program's optimised HLO. Durations are summed
over threads, so on a multi-core CPU the total exceeds the wall time; the shares are what matter.

This is how the benchmarks explain a step: e.g. that convolutions are most of the default CPU
model's step bounds what batching members can gain (`python -m lejepa_jax.bench ablate`).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
from collections.abc import Callable

import jax

KINDS = ("convolution", "product", "other")

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?\s([a-z][\w\-]*)\(")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) ")
_CALLS = re.compile(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)")
_CALLED_LISTS = re.compile(r"(?:branch_computations|called_computations)=\{([^}]*)\}")
# Ops whose trace event spans the ops they run, which have events of their own: not counted.
CONTAINERS = ("while", "conditional", "call")


def _called(line: str) -> list[str]:
  """The computations an instruction line calls (fusions, loops, branches, custom calls)."""
  names = _CALLS.findall(line)
  for listed in _CALLED_LISTS.findall(line):
    names += [name.strip().lstrip("%") for name in listed.split(",") if name.strip()]
  return names


def _parse_hlo(hlo_text: str) -> dict[str, list[str]]:
  """Computation name -> its instruction lines."""
  bodies: dict[str, list[str]] = {}
  current = None
  for line in hlo_text.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith("{"):
      match = _COMPUTATION.match(line)
      current = match.group(1) if match else None
      if current is not None:
        bodies[current] = []
    elif current is not None and _INSTRUCTION.match(line):
      bodies[current].append(line)
  return bodies


def hlo_op_kinds(hlo_text: str) -> dict[str, str]:
  """Instruction name -> "convolution", "product" or "other", for every instruction of an HLO
  module's text; a fusion or custom call takes the kind of what it calls (convolution first).
  Control flow (CONTAINERS) is "container": its body's ops are timed on their own."""
  bodies = _parse_hlo(hlo_text)
  memo: dict[str, set[str]] = {}

  def opcodes(computation: str, depth: int = 0) -> set[str]:
    if computation not in memo:
      found: set[str] = set()
      for line in bodies.get(computation, []):
        found.add(_INSTRUCTION.match(line).group(2))
        if depth < 8:
          for called in _called(line):
            found |= opcodes(called, depth + 1)
      memo[computation] = found
    return memo[computation]

  kinds = {}
  for lines in bodies.values():
    for line in lines:
      name, opcode = _INSTRUCTION.match(line).groups()
      if opcode in CONTAINERS:
        kinds[name] = "container"
        continue
      found = {opcode}
      for called in _called(line):
        found |= opcodes(called)
      kinds[name] = "convolution" if "convolution" in found else "product" if "dot" in found else "other"
  return kinds


def traced_op_seconds(run: Callable[[], object]) -> dict[str, float]:
  """Op name -> seconds (summed over threads and repeats) of one call of `run` under the profiler."""
  with tempfile.TemporaryDirectory() as log_dir:
    with jax.profiler.trace(log_dir, create_perfetto_trace=True):
      run()
    traces = glob.glob(os.path.join(log_dir, "**", "*.trace.json.gz"), recursive=True)
    if not traces:
      raise RuntimeError(f"the profiler wrote no perfetto trace under {log_dir}")
    with gzip.open(traces[0]) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  seconds: dict[str, float] = collections.defaultdict(float)
  for event in events:
    if event.get("ph") == "X":
      seconds[event["name"]] += event.get("dur", 0) / 1e6
  return dict(seconds)


def op_time_breakdown(compiled, run: Callable[[], object]) -> dict[str, float]:
  """Seconds of op time per kind (see KINDS) for one call of `run`, which executes `compiled`
  (a `jax.stages.Compiled`); ops not in its HLO (runtime bookkeeping, Python) are left out."""
  kinds = hlo_op_kinds(compiled.as_text())
  totals = dict.fromkeys(KINDS, 0.0)
  for name, seconds in traced_op_seconds(run).items():
    if kinds.get(name) in totals:
      totals[kinds[name]] += seconds
  return totals


def shares_text(totals: dict[str, float]) -> str:
  """ "convolution 69%, product 2%, other 29% of 4.10 s op time" for a breakdown."""
  total = sum(totals.values())
  if total <= 0:
    return "no op time recorded"
  parts = ", ".join(f"{kind} {100 * totals[kind] / total:.0f}%" for kind in KINDS)
  return f"{parts} of {total:.2f} s op time (summed over threads)"
