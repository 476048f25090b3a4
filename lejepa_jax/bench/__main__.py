"""`python -m lejepa_jax.bench <benchmark> [flags]`; `--help` after a benchmark name lists its flags."""

import sys

BENCHMARKS = {
    "ablate": "lejepa_jax.bench.ablate",
    "data": "lejepa_jax.bench.data",
    "sigreg": "lejepa_jax.bench.sigreg",
    "train": "lejepa_jax.bench.train",
}


def main() -> None:
  if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
    names = ", ".join(sorted(BENCHMARKS))
    sys.exit(f"usage: python -m lejepa_jax.bench <benchmark> [flags]; benchmarks: {names}")
  import importlib  # pylint: disable=import-outside-toplevel
  importlib.import_module(BENCHMARKS[sys.argv[1]]).main(sys.argv[2:])


if __name__ == "__main__":
  main()
