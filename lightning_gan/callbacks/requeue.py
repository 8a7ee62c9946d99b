"""Checkpoint and requeue a SLURM job when its time limit approaches, between two generator steps."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_gan.callbacks.checkpoint import GANCheckpoint


class SlurmRequeue(Callback):
    """On SLURM's warning signal (``#SBATCH --signal=SIGUSR1@120``), finish the current generator step, save
    ``last.ckpt``, ask ``scontrol requeue`` for the job and stop; the requeued job resumes with
    ``--ckpt_path last`` (see ``configs/slurm/``).

    Lightning's own handler saves an ``hpc_ckpt`` from inside the signal handler, which can fall between
    the discriminator and the generator updates of a step, and writes it outside the run folder that
    ``--ckpt_path last`` resumes from. Here the handler only raises a flag; the save happens at the end of a
    step, so the resumed run continues exactly where this one stopped. Under DDP the ranks agree on the
    flag after each step (one tiny all-reduce), so they all stop at the same step.

    Args:
        signal_name: The signal SLURM sends before the time limit.
    """

    def __init__(self, signal_name: str = "SIGUSR1") -> None:
        if not hasattr(signal, signal_name):
            raise ValueError(
                f"SlurmRequeue.signal_name={signal_name!r} is not allowed: not a signal of this OS"
            )
        self.signal_name = signal_name
        self.requested = False

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # After Lightning registered its handlers (at the start of fit), replacing its SLURM one; Lightning
        # puts the original handlers back when fit ends.
        signal.signal(getattr(signal, self.signal_name), self._handle)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        requested = self.requested
        if trainer.world_size > 1:
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if not requested:
            return
        checkpoint = next((c for c in trainer.checkpoint_callbacks if isinstance(c, GANCheckpoint)), None)
        if checkpoint is not None and checkpoint.save_last:
            checkpoint._save_last_checkpoint(trainer, checkpoint._monitor_candidates(trainer))
        else:
            rank_zero_warn("SlurmRequeue found no GANCheckpoint saving last.ckpt: nothing to resume from")
        if trainer.is_global_zero:
            self._requeue(trainer.global_step)
        trainer.should_stop = True
        self.requested = False

    @staticmethod
    def _requeue(step: int) -> None:
        array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = (
            f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
            if array_job
            else os.environ.get("SLURM_JOB_ID")
        )
        if job is None or not re.fullmatch(r"[0-9_]+", job):
            rank_zero_warn(
                f"Saved last.ckpt at generator step {step}, but SLURM_JOB_ID={job!r}: not requeued"
            )
            return
        result = subprocess.run(["scontrol", "requeue", job], check=False)
        if result.returncode == 0:
            rank_zero_info(f"Saved last.ckpt at generator step {step} and requeued SLURM job {job}")
        else:
            rank_zero_warn(f"Saved last.ckpt at generator step {step}; `scontrol requeue {job}` failed")
