#!/usr/bin/env bash
# Installs lejepa_jax with its test extra into ./.venv and runs the test suite on the CPU
# (tests/conftest.py simulates 8 devices). Extra arguments go to pytest, e.g. `-k sigreg`.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh" test
export JAX_PLATFORMS=cpu
exec python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadscope "$@"
