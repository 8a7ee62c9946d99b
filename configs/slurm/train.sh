#!/bin/bash
# What every sbatch template runs (one srun task per GPU); not submitted by itself.
# Lightning reads the SLURM_* variables (ranks, master address) and sets up DDP; --ckpt_path last resumes a
# requeued job (SLURM_RESTART_COUNT > 0) from the last.ckpt that SlurmRequeue wrote before the time limit.
# CONFIG (default configs/dcgan.yaml) and ROOT (default runs/slurm/<job name>) pick the run; arguments after
# the script name are passed to `lightning-gan fit`.
set -euo pipefail
CONFIG=${CONFIG:-configs/dcgan.yaml}
ROOT=${ROOT:-runs/slurm/${SLURM_JOB_NAME:-lightning-gan}}
RESUME=()
if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then
  RESUME=(--ckpt_path last)
fi
srun lightning-gan fit --config "$CONFIG" \
  --trainer.default_root_dir "$ROOT" \
  --trainer.num_nodes "${SLURM_JOB_NUM_NODES:-1}" \
  --trainer.devices "${SLURM_NTASKS_PER_NODE:-1}" \
  --trainer.strategy ddp \
  --trainer.callbacks+=lightning_gan.callbacks.SlurmRequeue \
  "${RESUME[@]}" "$@"
