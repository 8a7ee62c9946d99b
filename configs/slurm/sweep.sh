#!/bin/bash
# What configs/slurm/sweep.sbatch runs: `wandb agent --count 1 SWEEP` until the job has finished TRIALS
# trials, each trial a `lightning-gan fit` command of the sweep (whose commands add SlurmRequeue).
#
# SLURM's time-limit signal reaches every process of the job step: the agent ignores it (an ignored signal
# stays ignored across exec and fork), the trial catches it, saves last.ckpt after the current generator step
# and exits with status 75, leaving behind a record of how it was started ($LIGHTNING_GAN_TRIAL_RECORD). Then
# this script requeues the job. The requeued job runs that record first: the same command, with the same W&B
# run id, which resumes the trial from its checkpoint. Only when it has finished does the agent ask W&B for
# the next trial. AGENT (default `wandb agent`) is the agent command.
set -euo pipefail

SCRIPT=sweep.sh
# shellcheck source=configs/slurm/common.sh
source configs/slurm/common.sh  # say, fail, RUN_DIR, REQUEUE_STATUS; the time limit against the signal lead
SWEEP=${1:-}
TRIALS=${2:-1}
[ -n "$SWEEP" ] || fail "no sweep: sbatch configs/slurm/sweep.sbatch <entity>/<project>/<sweep id> [trials]"
[[ $TRIALS =~ ^[1-9][0-9]*$ ]] || fail "trials=$TRIALS is not allowed: a whole number of trials >= 1"
[ "${SLURM_NTASKS:-1}" -eq 1 ] || fail "--ntasks=${SLURM_NTASKS} is not allowed: one agent per job" \
  "(one task); run more agents as a job array, e.g. sbatch --array=0-7 configs/slurm/sweep.sbatch ..."
read -r -a AGENT <<<"${AGENT:-wandb agent}"
mkdir -p "$RUN_DIR"
export LIGHTNING_GAN_TRIAL_RECORD="$RUN_DIR/interrupted-trial.sh"
FINISHED="$RUN_DIR/trials-finished"  # one line per trial this job has seen through to its end
touch "$FINISHED"

requeue_if_interrupted() {
  if [ -f "$LIGHTNING_GAN_TRIAL_RECORD" ]; then
    say "the trial stopped at the time-limit signal with last.ckpt saved: requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
  fi
  echo "trial ended $(date '+%F %T')" >>"$FINISHED"
}

say "job $SLURM_JOB_ID, restart ${SLURM_RESTART_COUNT:-0}, time limit ${LIMIT:-?}, signal ${SPEC:-none}:" \
  "sweep $SWEEP, $(wc -l <"$FINISHED") of $TRIALS trial(s) done, records in $RUN_DIR"
if [ -f "$LIGHTNING_GAN_TRIAL_RECORD" ]; then
  say "finishing the interrupted trial first: $(tail -n 1 "$LIGHTNING_GAN_TRIAL_RECORD")"
  srun bash "$LIGHTNING_GAN_TRIAL_RECORD" || say "the trial exited with status $?"
  requeue_if_interrupted
fi
while [ "$(wc -l <"$FINISHED")" -lt "$TRIALS" ]; do
  # shellcheck disable=SC2016  # $0 and $@ belong to the inner shell
  srun bash -c 'trap "" USR1; exec "$@"' agent "${AGENT[@]}" --count 1 "$SWEEP" ||
    say "the agent exited with status $?"
  requeue_if_interrupted
done
say "$TRIALS trial(s) done"
