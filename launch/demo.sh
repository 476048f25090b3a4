#!/usr/bin/env bash
# Runs the main job on the embedded default (Fashion-MNIST, on the CPU), installing what it needs
# into ./.venv first. LEJEPA_DEMO_SHORT=1 runs a short version (used by CI).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
workdir="${LEJEPA_WORKDIR:-$repo_root/workdirs/fashion_mnist}"
exec python -m lejepa_jax.main --config=configs/fashion_mnist.py --workdir="$workdir" "$@"
