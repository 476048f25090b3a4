#!/usr/bin/env bash
# Runs the trainer (or another job) as several processes on this machine, each with its own
# simulated CPU devices, joined by jax.distributed through a coordinator on 127.0.0.1: multi-host
# code paths (per-process data, cross-process collectives, collective checkpoints) debugged on one
# laptop.
#
#   launch/local.sh --config=tests/tiny_config.py:DATA_DIR --workdir=/tmp/run [--config.x=y ...]
#   MODULE=lejepa_jax.evaluate launch/local.sh --workdir=/tmp/run --follow
#   launch/local.sh --workdir=/tmp/run --dry-run     # print each process's command, run none
#
# Arguments: --dry-run (anywhere before `--`), -h/--help; flags written --name or --name=value
# (absl's: letters, digits, `_` and `.`, e.g. --config.optim.lr=3e-4; not --dry*), and everything
# after `--`, untouched, go to the job. Any other argument is refused (usage, exit 2), nothing runs.
#
# Knobs (environment variables):
#   MODULE=lejepa_jax.main   the job each process runs (python -m MODULE FLAGS)
#   NUM_PROCESSES=2          processes to start
#   DEVICES_PER_PROCESS=4    simulated CPU devices in each (the mesh sees the product)
#   COORDINATOR_PORT=        free localhost port for the coordinator (default: one picked at random)
#   PYTHON=python            interpreter with lejepa_jax installed (default: ./.venv/bin/python if any)
#   LOG_DIR=                 if set, process i writes its output to LOG_DIR/process_i.log
#   XLA_FLAGS=               passed on to every process, before the simulated device count
set -euo pipefail

usage() {
  sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# Prints why, then the usage, to stderr, and exits before anything has run.
refuse() {
  echo "[local] $1" >&2
  usage >&2
  exit 2
}

# Every argument is read before anything runs: --dry-run counts wherever it stands before `--`.
dry_run=0
job_flags=()
flag_re='^--[A-Za-z_][A-Za-z0-9_.]*(=.*)?$'
while [ "$#" -gt 0 ]; do
  case "$1" in
    --) shift; job_flags+=("$@"); break ;;
    --dry-run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    --dry*) refuse "unknown argument '$1' (did you mean --dry-run?)" ;;  # no job flag is --dry*
    *)
      [[ "$1" =~ $flag_re ]] || refuse "unknown argument '$1' (job flags are written \
--name=value; anything else goes after \`--\`)"
      job_flags+=("$1") ;;
  esac
  shift
done

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
module="${MODULE:-lejepa_jax.main}"
num_processes="${NUM_PROCESSES:-2}"
devices="${DEVICES_PER_PROCESS:-4}"
default_python=python
[ -x "$repo_root/.venv/bin/python" ] && default_python="$repo_root/.venv/bin/python"
python_bin="${PYTHON:-$default_python}"
port="${COORDINATOR_PORT:-$("$python_bin" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"

pids=()
# shellcheck disable=SC2317  # called through the trap
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup INT TERM

for ((i = 0; i < num_processes; i++)); do
  env_vars=(JAX_PLATFORMS=cpu "XLA_FLAGS=${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$devices"
            "JAX_COORDINATOR_ADDRESS=127.0.0.1:$port" "JAX_NUM_PROCESSES=$num_processes"
            "JAX_PROCESS_ID=$i")
  cmd=(env "${env_vars[@]}" "$python_bin" -m "$module" "${job_flags[@]}")
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
