"""`python -m lejepa_jax.bench <benchmark> [flags]`; `--help` after a benchmark name lists its flags."""

import importlib
import sys

from lejepa_jax import cli

BENCHMARKS = {
  "ablate": "lejepa_jax.bench.ablate",
  "data": "lejepa_jax.bench.data",
  "lower": "lejepa_jax.bench.lower",
  "sigreg": "lejepa_jax.bench.sigreg",
  "train": "lejepa_jax.bench.train",
}
_USAGE = (
  f"usage: python -m lejepa_jax.bench <benchmark> [flags]; benchmarks: {', '.join(sorted(BENCHMARKS))}"
)


def main(argv: list[str] | None = None) -> None:
  """Runs the benchmark named by argv[0] (argv without the program name, None: sys.argv[1:]) with
  the flags after it; each benchmark's `main` parses its own (`lejepa_jax.cli`)."""
  argv = sys.argv[1:] if argv is None else list(argv)
  if argv and argv[0] in cli.HELP_ARGS:
    print(f"{__doc__}\nbenchmarks: {', '.join(sorted(BENCHMARKS))}")
    return
  if not argv or argv[0] not in BENCHMARKS:
    given = f"unknown benchmark {argv[0]!r}" if argv else "no benchmark named"
    print(f"{_USAGE}\npython -m lejepa_jax.bench: error: {given}", file=sys.stderr)
    raise SystemExit(2)
  importlib.import_module(BENCHMARKS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
  main()
