#!/usr/bin/env bash
# Runs the trainer (or another job) as several processes on this machine, each with its own
# simulated CPU devices, joined by jax.distributed through a coordinator on 127.0.0.1: multi-host
# code paths (per-process data, cross-process collectives, collective checkpoints) debugged on one
# laptop.
#
#   launch/local.sh --config=tests/tiny_config.py:DATA_DIR --workdir=/tmp/run [--config.x=y ...]
#   MODULE=lejepa_jax.evaluate launch/local.sh --workdir=/tmp/run --follow
#
# Knobs (environment variables):
#   MODULE=lejepa_jax.main   the job each process runs (python -m MODULE "$@")
#   NUM_PROCESSES=2          processes to start
#   DEVICES_PER_PROCESS=4    simulated CPU devices in each (the mesh sees the product)
#   COORDINATOR_PORT=        free localhost port for the coordinator (default: one picked at random)
#   PYTHON=python            interpreter with lejepa_jax installed (default: ./.venv/bin/python if any)
#   LOG_DIR=                 if set, process i writes its output to LOG_DIR/process_i.log
#   --dry-run (first arg)    print the commands instead of running them
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
module="${MODULE:-lejepa_jax.main}"
num_processes="${NUM_PROCESSES:-2}"
devices="${DEVICES_PER_PROCESS:-4}"
default_python=python
[ -x "$repo_root/.venv/bin/python" ] && default_python="$repo_root/.venv/bin/python"
python_bin="${PYTHON:-$default_python}"
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then
  dry_run=1
  shift
fi
port="${COORDINATOR_PORT:-$("$python_bin" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"

pids=()
# shellcheck disable=SC2317  # called through the trap
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup INT TERM

for ((i = 0; i < num_processes; i++)); do
  env_vars=(JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=$devices"
            "JAX_COORDINATOR_ADDRESS=127.0.0.1:$port" "JAX_NUM_PROCESSES=$num_processes"
            "JAX_PROCESS_ID=$i")
  cmd=(env "${env_vars[@]}" "$python_bin" -m "$module" "$@")
  if [ "$dry_run" = 1 ]; then
    printf '%q ' "${cmd[@]}"
    echo
    continue
  fi
  if [ -n "${LOG_DIR:-}" ]; then
    mkdir -p "$LOG_DIR"
    (cd "$repo_root" && exec "${cmd[@]}") >"$LOG_DIR/process_$i.log" 2>&1 &
  else
    (cd "$repo_root" && exec "${cmd[@]}") > >(sed -u "s/^/[process $i] /") 2>&1 &
  fi
  pids+=("$!")
done

# A failed process makes the others fail too (jax.distributed heartbeats); report the first error.
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit "$status"
