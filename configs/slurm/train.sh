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
# is off here, because its redraws fill a log file). Settings that cannot work stop here, before srun, saying what to change.
set -euo pipefail

REQUEUE_STATUS=75  # lightning_gan.callbacks.SlurmRequeue.EXIT_STATUS (EX_TEMPFAIL: try again later)
STARTUP=60         # seconds a task needs, at least, to start and train one generator step
EARLY=60           # SLURM may send the signal up to 60 s before the lead it was asked for

say() { echo "[train.sh $(date '+%F %T')] $*"; }
fail() {
  echo "[train.sh $(date '+%F %T')] error: $*" >&2
  exit 2
}
seconds() {  # SLURM's [days-]hours:minutes:seconds (or minutes, minutes:seconds) in seconds
  local days=0 rest=$1 h=0 m=0 s=0
  if [[ $rest == *-* ]]; then days=${rest%%-*} rest=${rest#*-}; fi
  IFS=: read -r -a parts <<<"$rest"
  case ${#parts[@]} in
    1) m=${parts[0]} ;;
    2) m=${parts[0]} s=${parts[1]} ;;
    *) h=${parts[0]} m=${parts[1]} s=${parts[2]} ;;
  esac
  echo $((10#$days * 86400 + 10#$h * 3600 + 10#$m * 60 + 10#$s))
}

[ -n "${SLURM_JOB_ID:-}" ] || fail "not inside a SLURM job: submit a template, e.g. sbatch configs/slurm/1node.sbatch"
CONFIG=${CONFIG:-configs/dcgan.yaml}
[ -f "$CONFIG" ] || fail "CONFIG=$CONFIG is not a file under $(pwd): submit from the repository root"
ROOT=${ROOT:-runs/slurm}
RUN_DIR="$ROOT/${SLURM_JOB_NAME}-${SLURM_JOB_ID}"
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

# The time-limit signal must reach Python after it has started training, and well before the limit.
spec=${SBATCH_SIGNAL:-$(scontrol write batch_script "$SLURM_JOB_ID" - 2>/dev/null |
  sed -n 's/^#SBATCH[[:space:]]\{1,\}--signal[=[:space:]]\{1,\}\([^[:space:]]*\).*/\1/p' | tail -n 1)}
limit=$(scontrol show job "$SLURM_JOB_ID" | sed -n 's/.*TimeLimit=\([^[:space:]]*\).*/\1/p')
if [ -z "$spec" ]; then
  say "warning: no #SBATCH --signal line: at the time limit SLURM kills the run without saving a" \
    "checkpoint or requeueing; add '#SBATCH --signal=SIGUSR1@120' to the template"
else
  [[ $spec != [Bb]:* ]] || fail "--signal=$spec sends the signal to this batch script only, not to the" \
    "training tasks: use --signal=SIGUSR1@120 (no B:)"
  sig=${spec#[Rr]:} lead=60
  if [[ $sig == *@* ]]; then lead=${sig#*@} sig=${sig%@*}; fi
  case $sig in USR1 | SIGUSR1 | 10) ;; *) fail "--signal=$spec: SlurmRequeue waits for SIGUSR1; use --signal=SIGUSR1@$lead" ;; esac
  if [ "$limit" != UNLIMITED ] && [ -n "$limit" ]; then
    need=$((lead + EARLY + STARTUP))
    [ "$(seconds "$limit")" -ge "$need" ] || fail "--time=$limit is too short for --signal=$spec: SLURM" \
      "sends SIGUSR1 $lead s before the limit, and up to $EARLY s earlier, and a run needs about $STARTUP s" \
      "to start; give --time of at least $(((need + 59) / 60)) minutes, or lower the lead in the template's" \
      "#SBATCH --signal line (or SBATCH_SIGNAL=SIGUSR1@<seconds>)"
  fi
fi

RESUME=()
if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then
  if [ -n "$(find "$RUN_DIR" -path '*/checkpoints/last*.ckpt' -print -quit 2>/dev/null)" ]; then
    RESUME=(--ckpt_path last)
  else
    say "restart ${SLURM_RESTART_COUNT} found no last.ckpt under $RUN_DIR: starting the run anew"
  fi
fi
say "job $SLURM_JOB_ID, restart ${SLURM_RESTART_COUNT:-0}, $NODES node(s) x $TASKS_PER_NODE task(s)," \
  "time limit ${limit:-?}, signal ${spec:-none}: training in $RUN_DIR ${RESUME[*]}"
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
