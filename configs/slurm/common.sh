#!/bin/bash
# Sourced by train.sh and sweep.sh (not run by itself): logging, the job's run folder, and the check that the
# job's time limit leaves room for SLURM's time-limit signal. Sets RUN_DIR, REQUEUE_STATUS, LIMIT and SPEC.

REQUEUE_STATUS=75  # lightning_gan.callbacks.SlurmRequeue.EXIT_STATUS (EX_TEMPFAIL: try again later)
STARTUP=60         # seconds a task needs, at least, to start and train one generator step
EARLY=60           # SLURM may send the signal up to 60 s before the lead it was asked for
SCRIPT=${SCRIPT:-$(basename "$0")}

say() { echo "[$SCRIPT $(date '+%F %T')] $*"; }
fail() {
  echo "[$SCRIPT $(date '+%F %T')] error: $*" >&2
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
ROOT=${ROOT:-runs/slurm}
RUN_DIR="$ROOT/${SLURM_JOB_NAME}-${SLURM_JOB_ID}"  # a requeue keeps the job id: the job's own folder

# The time-limit signal must reach Python after it has started training, and well before the limit.
SPEC=${SBATCH_SIGNAL:-$(scontrol write batch_script "$SLURM_JOB_ID" - 2>/dev/null |
  sed -n 's/^#SBATCH[[:space:]]\{1,\}--signal[=[:space:]]\{1,\}\([^[:space:]]*\).*/\1/p' | tail -n 1)}
LIMIT=$(scontrol show job "$SLURM_JOB_ID" | sed -n 's/.*TimeLimit=\([^[:space:]]*\).*/\1/p')
if [ -z "$SPEC" ]; then
  say "warning: no #SBATCH --signal line: at the time limit SLURM kills the run without saving a" \
    "checkpoint or requeueing; add '#SBATCH --signal=SIGUSR1@120' to the template"
else
  [[ $SPEC != [Bb]:* ]] || fail "--signal=$SPEC sends the signal to this batch script only, not to the" \
    "training tasks: use --signal=SIGUSR1@120 (no B:)"
  sig=${SPEC#[Rr]:} lead=60
  if [[ $sig == *@* ]]; then lead=${sig#*@} sig=${sig%@*}; fi
  case $sig in USR1 | SIGUSR1 | 10) ;; *) fail "--signal=$SPEC: SlurmRequeue waits for SIGUSR1; use --signal=SIGUSR1@$lead" ;; esac
  if [ "$LIMIT" != UNLIMITED ] && [ -n "$LIMIT" ]; then
    need=$((lead + EARLY + STARTUP))
    [ "$(seconds "$LIMIT")" -ge "$need" ] || fail "--time=$LIMIT is too short for --signal=$SPEC: SLURM" \
      "sends SIGUSR1 $lead s before the limit, and up to $EARLY s earlier, and a run needs about $STARTUP s" \
      "to start; give --time of at least $(((need + 59) / 60)) minutes, or lower the lead in the template's" \
      "#SBATCH --signal line (or SBATCH_SIGNAL=SIGUSR1@<seconds>)"
  fi
fi
