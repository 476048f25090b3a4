#!/usr/bin/env bash
# Runs the main job on the embedded default (Fashion-MNIST, on the CPU), installing what it needs
# into ./.venv first and preparing the dataset offline when it is not there yet.
# LEJEPA_DEMO_SHORT=1 runs a short version (used by CI) from scratch in its own directory,
# workdirs/fashion_mnist_short, deleted first; it ignores LEJEPA_WORKDIR, so no real run is touched.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
data_dir="${LEJEPA_DATA_DIR:-$repo_root/data/tfds}"
workdir="${LEJEPA_WORKDIR:-$repo_root/workdirs/fashion_mnist}"
idx_dir="${FASHION_MNIST_IDX:-/usr/share/datasets/fashion-mnist}"

if [ ! -d "$data_dir/fashion_mnist" ]; then
  if [ ! -d "$idx_dir" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[demo] installing Fashion-MNIST from Debian (dataset-fashion-mnist)"
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
      || echo "[demo] apt could not install dataset-fashion-mnist"
  fi
  if [ -d "$idx_dir" ]; then
    python -m lejepa_jax.prepare fashion_mnist --source="$idx_dir" --out="$data_dir"
  else
    echo "[demo] no local Fashion-MNIST files: asking TFDS to download fashion_mnist (needs a network)"
    python -c "import tensorflow_datasets as tfds, sys; tfds.data_source('fashion_mnist', \
data_dir=sys.argv[1], builder_kwargs={'file_format': 'array_record'}, download=True)" "$data_dir"
  fi
fi
config="configs/fashion_mnist.py"
probe="configs/probe/fashion_mnist.py"
if [ "${LEJEPA_DEMO_SHORT:-0}" = 1 ]; then
  config="configs/fashion_mnist.py:runlocal,steps=10"
  probe="configs/probe/fashion_mnist.py:fast"
  # A fixed scratch directory of the demo's own: only a path this script chose is ever deleted.
  if [ -n "${LEJEPA_WORKDIR:-}" ]; then
    echo "[demo] short demo: ignoring LEJEPA_WORKDIR ($LEJEPA_WORKDIR)"
  fi
  workdir="$repo_root/workdirs/fashion_mnist_short"
  rm -rf "$workdir"
  echo "[demo] short demo in the scratch directory $workdir"
fi
python -m lejepa_jax.main --config="$config" --workdir="$workdir" \
  --config.data.data_dir="$data_dir" "$@"
echo "[demo] frozen-feature probes on the test set for every kept checkpoint, next to raw pixels"\
     "and the untrained encoder"
python -m lejepa_jax.evaluate --config="$probe" --workdir="$workdir" --follow
