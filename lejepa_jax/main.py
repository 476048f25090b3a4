"""Entry point of the pretraining job: `python -m lejepa_jax.main --config=configs/<name>.py --workdir=DIR`.

This version ships the LeJEPA objective (`lejepa_jax.losses`) and its benchmark; the trainer that this
command launches is not part of it yet, so the command says so and exits cleanly.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
  del argv
  print("lejepa_jax: the pretraining job is not yet available in this version.\n"
        "Available now: the LeJEPA objective in lejepa_jax.losses (see README.md) and\n"
        "`python -m lejepa_jax.bench sigreg`.")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
