# Sourced by the launch scripts: creates (once) and activates a virtual environment
# inside the checkout, and installs lejepa_jax with the extras the caller asks for.
# Re-running is cheap: pip is only called when setup.cfg changed since the last install.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LEJEPA_VENV:-$repo_root/.venv}"
extras="${1:-}"
python_bin="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  # jax, flax and grain need Python 3.11+: say so here rather than as pip's "no matching distribution".
  if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "[lejepa_jax] $python_bin is not Python 3.11 or newer, which lejepa_jax needs (jax, flax and" \
         "grain do); run with PYTHON=/path/to/python3.11 (or newer)" >&2
    exit 1
  fi
  echo "[lejepa_jax] creating virtual environment in $venv"
  "$python_bin" -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
stamp="$venv/.lejepa_jax_installed${extras:+_$extras}"
if [ ! -f "$stamp" ] || [ "$repo_root/setup.cfg" -nt "$stamp" ]; then
  echo "[lejepa_jax] installing lejepa_jax${extras:+[$extras]} into $venv"
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet -e "$repo_root${extras:+[$extras]}"
  touch "$stamp"
fi
cd "$repo_root"
