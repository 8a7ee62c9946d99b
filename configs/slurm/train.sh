#!/bin/bash
# What every sbatch template runs (one srun task per device); not submitted by itself.
#
# Each job trains in its own folder, $ROOT/<job name>-<job id> (ROOT defaults to runs/slurm), beside its log
# $ROOT/<job name>-<job id>.out. A requeue keeps the job id, so a requeued job resumes its own run with
# --ckpt_path last and never another job's, whatever their names.
#
# Near the time limit SLURM sends SIGUSR1 to the training tasks (#SBATCH --signal=SIGUSR1@LEAD).
# SlurmRequeue lets the current generator step finish, saves last.ckpt and stops every task, which exit with
# status 75; only then, with nothing left running, this script requeues the job once.
#
# CONFIG (default configs/dcgan.yaml) picks the preset; arguments after the template are passed to
# `lightning-gan fit` (after this script's own: `--trainer.enable_progress_bar true` brings back the bar that
# is off here, because its redraws fill a log file). Settings that cannot work stop here, before srun, saying
# what to change.
set -euo pipefail

SCRIPT=train.sh
# shellcheck source=configs/slurm/common.sh
source configs/slurm/common.sh  # say, fail, RUN_DIR, REQUEUE_STATUS; the time limit against the signal lead
CONFIG=${CONFIG:-configs/dcgan.yaml}
[ -f "$CONFIG" ] || fail "CONFIG=$CONFIG is not a file under $(pwd): submit from the repository root"
TASKS_PER_NODE=${SLURM_NTASKS_PER_NODE:-1}
NODES=${SLURM_JOB_NUM_NODES:-1}

# One task per device on every node: --trainer.devices and --trainer.num_nodes, if given, must agree.
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  arg=${args[i]} value=""
  case $arg in
    --trainer.devices=* | --trainer.num_nodes=*) value=${arg#*=} key=${arg%%=*} ;;
    --trainer.devices | --trainer.num_nodes) value=${args[i + 1]:-} key=$arg ;;
    *) continue ;;
  esac
  if [ "$key" = --trainer.devices ]; then want=$TASKS_PER_NODE what="--ntasks-per-node=$TASKS_PER_NODE"
  else want=$NODES what="--nodes=$NODES"; fi
  [ "$value" = "$want" ] || fail "$key=$value disagrees with the job's $what (one task per device on" \
    "each node): drop $key (this script sets it from SLURM) or submit with a matching sbatch option"
done

RESUME=()
if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then
  if [ -n "$(find "$RUN_DIR" -path '*/checkpoints/last*.ckpt' -print -quit 2>/dev/null)" ]; then
    RESUME=(--ckpt_path last)
  else
    say "restart ${SLURM_RESTART_COUNT} found no last.ckpt under $RUN_DIR: starting the run anew"
  fi
fi
say "job $SLURM_JOB_ID, restart ${SLURM_RESTART_COUNT:-0}, $NODES node(s) x $TASKS_PER_NODE task(s)," \
  "time limit ${LIMIT:-?}, signal ${SPEC:-none}: training in $RUN_DIR ${RESUME[*]}"
status=0
srun lightning-gan fit --config "$CONFIG" \
  --trainer.default_root_dir "$RUN_DIR" \
  --trainer.num_nodes "$NODES" \
  --trainer.devices "$TASKS_PER_NODE" \
  --trainer.strategy ddp \
  --trainer.enable_progress_bar false \
  --trainer.callbacks+=lightning_gan.callbacks.SlurmRequeue \
  "${RESUME[@]}" "$@" || status=$?
if [ "$status" -eq "$REQUEUE_STATUS" ]; then
  say "every task stopped at the time-limit signal with last.ckpt saved: requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
say "srun exited with status $status"
exit "$status"
