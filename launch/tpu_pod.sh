#!/usr/bin/env bash
# Pretraining on a Cloud TPU pod slice (or several slices): creates the TPU VMs, installs this
# checkout on every worker, and starts `python -m lejepa_jax.main` on all of them at once.
#
#   BUCKET=my-bucket launch/tpu_pod.sh up                 # create + install + train
#   BUCKET=my-bucket launch/tpu_pod.sh train -- --config.optim.lr=3e-4
#   launch/tpu_pod.sh logs | stop | delete
#   launch/tpu_pod.sh --dry-run up                        # print the gcloud commands only
#   BUCKET=my-bucket launch/tpu_pod.sh up --dry-run -- --config.optim.lr=3e-4   # also a dry run
#
# Commands: create, install, train, up (the three in order), logs (tail worker 0), stop (the
# trainer, which checkpoints on SIGTERM), delete (the TPU VMs). Options, anywhere before `--`:
# --dry-run (print the commands, run none), -h/--help. Everything after `--` goes to the trainer
# untouched (train and up only). Any other argument is refused (usage, exit 2) and nothing runs.
#
# Knobs (environment variables):
#   BUCKET            GCS bucket (no gs://) holding the data, the runs and the code archive (required)
#   TPU_NAME=lejepa   TPU VM name (with NUM_SLICES > 1: the queued resource and node prefix)
#   ZONE=us-central2-b
#   ACCELERATOR_TYPE=v4-64        e.g. v4-64 (32 chips, 8 hosts), v5p-256, v5litepod-64
#   RUNTIME_VERSION=tpu-ubuntu2204-base
#   NUM_SLICES=1      > 1: a multislice queued resource (`up` waits until it is ACTIVE, at most
#                     QUEUE_TIMEOUT_S=21600 s); slices talk over the data-centre network,
#                     so put an axis across them in the config: --config.mesh.dcn_axes.data=N
#   SPOT=0            1: spot capacity (can be preempted; `train` again resumes from the checkpoint)
#   PROJECT           gcloud project (default: gcloud's configured project)
#   CONFIG=configs/vit_l.py       experiment config, relative to the checkout
#   RUN_NAME          run directory name (default: the config's file name)
#   PYTHON_VERSION=3.12           Python of the workers' virtual environment (installed with uv)
#   GCSFUSE_FLAGS="--implicit-dirs --rename-dir-limit=100000"
#
# Every worker mounts the bucket with Cloud Storage FUSE at ~/gcs: the ArrayRecord reader under
# TFDS cannot open gs:// paths, and the trainer's logs are plain files. The run directory is
# gs://BUCKET/lejepa/RUN_NAME (~/gcs/lejepa/RUN_NAME on the workers): checkpoints, metrics.jsonl,
# TensorBoard events. The data is read from gs://BUCKET/tensorflow_datasets (prepare it once with
# `python -m lejepa_jax.prepare`, then copy it there with `gcloud storage cp -r`).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tpu_name="${TPU_NAME:-lejepa}"
zone="${ZONE:-us-central2-b}"
accelerator="${ACCELERATOR_TYPE:-v4-64}"
runtime="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
num_slices="${NUM_SLICES:-1}"
config="${CONFIG:-configs/vit_l.py}"
config_stem="$(basename "${config%%:*}" .py)"
run_name="${RUN_NAME:-$config_stem}"
python_version="${PYTHON_VERSION:-3.12}"
gcsfuse_flags="${GCSFUSE_FLAGS:---implicit-dirs --rename-dir-limit=100000}"
project_flag=()
[ -n "${PROJECT:-}" ] && project_flag=(--project="$PROJECT")

usage() {
  sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# Prints why, then the usage, to stderr, and exits before anything has run.
refuse() {
  echo "[tpu_pod] $1" >&2
  usage >&2
  exit 2
}

# Every argument is read before anything runs: --dry-run counts wherever it stands before `--`.
dry_run=0
command=""
trainer_flags=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --) shift; trainer_flags=("$@"); break ;;
    --dry-run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    create|install|train|up|logs|stop|delete)
      [ -z "$command" ] || refuse "one command at a time (got '$command' and '$1')"
      command="$1" ;;
    *) refuse "unknown argument '$1' (flags for the trainer go after \`--\`)" ;;
  esac
  shift
done
[ -n "$command" ] || refuse "no command given"
if [ "${#trainer_flags[@]}" -gt 0 ] && [ "$command" != train ] && [ "$command" != up ]; then
  refuse "'$command' starts no trainer: flags after \`--\` are for train and up only"
fi

run() {
  if [ "$dry_run" = 1 ]; then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}

need_bucket() {
  if [ -z "${BUCKET:-}" ]; then
    echo "set BUCKET=<gcs bucket name> (data, runs and the code archive live there)" >&2
    exit 2
  fi
}

# Runs a shell command on every worker of every slice.
on_all_workers() {
  if [ "$num_slices" -gt 1 ]; then
    run gcloud compute tpus queued-resources ssh "$tpu_name" --zone="$zone" "${project_flag[@]}" \
      --node=all --worker=all --command="$1"
  else
    run gcloud compute tpus tpu-vm ssh "$tpu_name" --zone="$zone" "${project_flag[@]}" \
      --worker=all --command="$1"
  fi
}

# A multislice request returns while still queued: the workers exist (and take ssh) once ACTIVE.
wait_until_active() {
  local describe=(gcloud compute tpus queued-resources describe "$tpu_name" --zone="$zone"
                  "${project_flag[@]}" --format="value(state.state)")
  if [ "$dry_run" = 1 ]; then
    run "${describe[@]}"
    return
  fi
  local state="" waited=0 limit="${QUEUE_TIMEOUT_S:-21600}"
  while state="$("${describe[@]}")" && [ "$state" != "ACTIVE" ]; do
    case "$state" in
      FAILED|SUSPENDED) echo "[tpu_pod] queued resource $tpu_name is $state" >&2; return 1 ;;
    esac
    if [ "$waited" -ge "$limit" ]; then
      echo "[tpu_pod] $tpu_name still $state after ${limit}s (QUEUE_TIMEOUT_S); rerun \`up\`" \
        "later or \`delete\` it" >&2
      return 1
    fi
    echo "[tpu_pod] $tpu_name is ${state:-unknown}; waiting for ACTIVE (${waited}s)"
    sleep 60
    waited=$((waited + 60))
  done
}

create() {
  local spot=()
  [ "${SPOT:-0}" = 1 ] && spot=(--spot)
  if [ "$num_slices" -gt 1 ]; then
    run gcloud compute tpus queued-resources create "$tpu_name" --zone="$zone" "${project_flag[@]}" \
      --accelerator-type="$accelerator" --runtime-version="$runtime" \
      --node-count="$num_slices" --node-prefix="$tpu_name" "${spot[@]}"
    wait_until_active
  else
    run gcloud compute tpus tpu-vm create "$tpu_name" --zone="$zone" "${project_flag[@]}" \
      --accelerator-type="$accelerator" --version="$runtime" "${spot[@]}"
  fi
}

install() {
  need_bucket
  local archive="gs://$BUCKET/lejepa/code/$run_name.tar.gz"
  local local_archive="${TMPDIR:-/tmp}/lejepa_code_$run_name.tar.gz"
  # The files git tracks, as they are in the working tree (uncommitted edits included).
  run bash -c "cd $(printf %q "$repo_root") && git ls-files -z | tar --null -T - -czf $(printf %q "$local_archive")"
  run gcloud storage cp "$local_archive" "$archive"
  local setup
  setup="set -euo pipefail
if ! command -v gcsfuse >/dev/null; then
  echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -c -s) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
  sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse
fi
mkdir -p ~/gcs && (mountpoint -q ~/gcs || gcsfuse $gcsfuse_flags $BUCKET ~/gcs)
command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh
export PATH=\$HOME/.local/bin:\$PATH
rm -rf ~/lejepa_jax && mkdir -p ~/lejepa_jax
gcloud storage cat $archive | tar -xz -C ~/lejepa_jax
[ -x ~/lejepa_venv/bin/python ] || uv venv --python $python_version ~/lejepa_venv
uv pip install --quiet --python ~/lejepa_venv/bin/python -e ~/lejepa_jax'[tpu]'"
  on_all_workers "$setup"
}

train() {
  need_bucket
  local flags=""
  [ "${#trainer_flags[@]}" -gt 0 ] && flags="$(printf '%q ' "${trainer_flags[@]}")"
  # LEJEPA_DISTRIBUTED=1: jax.distributed.initialize() reads the pod layout from the TPU metadata.
  # nohup: the job outlives the ssh session; `logs` follows it.
  on_all_workers "cd ~/lejepa_jax && LEJEPA_DISTRIBUTED=1 nohup ~/lejepa_venv/bin/python -m \
lejepa_jax.main --config=$config --workdir=\$HOME/gcs/lejepa/$run_name \
--config.data.data_dir=\$HOME/gcs/tensorflow_datasets $flags < /dev/null > ~/lejepa_train.log 2>&1 &
echo \$! > ~/lejepa_train.pid"
  echo "[tpu_pod] started on every worker; run directory gs://$BUCKET/lejepa/$run_name"
}

logs() {
  if [ "$num_slices" -gt 1 ]; then
    run gcloud compute tpus queued-resources ssh "$tpu_name" --zone="$zone" "${project_flag[@]}" \
      --node=0 --worker=0 --command="tail -n 50 -f ~/lejepa_train.log"
  else
    run gcloud compute tpus tpu-vm ssh "$tpu_name" --zone="$zone" "${project_flag[@]}" \
      --worker=0 --command="tail -n 50 -f ~/lejepa_train.log"
  fi
}

stop() {
  # SIGTERM: the trainer finishes its step, checkpoints and exits; `train` later resumes.
  on_all_workers "[ -f ~/lejepa_train.pid ] && kill -TERM \$(cat ~/lejepa_train.pid) || true"
}

delete() {
  if [ "$num_slices" -gt 1 ]; then
    run gcloud compute tpus queued-resources delete "$tpu_name" --zone="$zone" "${project_flag[@]}" \
      --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$tpu_name" --zone="$zone" "${project_flag[@]}" --quiet
  fi
}

case "$command" in
  create) create ;;
  install) install ;;
  train) train ;;
  up) create && install && train ;;
  logs) logs ;;
  stop) stop ;;
  delete) delete ;;
esac
