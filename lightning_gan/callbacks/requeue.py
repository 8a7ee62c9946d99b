"""Stop a SLURM job cleanly when its time limit approaches, between two generator steps, so it can requeue."""

from __future__ import annotations

import signal
from typing import Any

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from lightning_gan.callbacks.checkpoint import GANCheckpoint


class SlurmRequeue(Callback):
    """On SLURM's warning signal (``#SBATCH --signal=SIGUSR1@120``), finish the current generator step, save
    the run's ``last.ckpt``, and stop every task with exit status :attr:`EXIT_STATUS` (75) and no further
    work: no validation pass, no crash checkpoint. ``configs/slurm/train.sh`` requeues the job when ``srun``
    returns that status, and the requeued job resumes with ``--ckpt_path last``; in a script of your own::

        srun lightning-gan fit ... --trainer.callbacks+=lightning_gan.callbacks.SlurmRequeue
        [ $? -eq 75 ] && scontrol requeue "$SLURM_JOB_ID"

    The requeue is left to the batch script on purpose: ``scontrol requeue`` kills the job's tasks at once,
    so called from inside training it cuts the stop short (a SIGTERM mid-teardown, DDP peers left waiting).

    Lightning's own SLURM handling is switched off for the run: its handler saves an ``hpc_ckpt`` from inside
    the signal handler, which can fall between the discriminator and the generator updates of a step, outside
    the folder that ``--ckpt_path last`` resumes from, and it ignores SIGTERM. Here the handler only raises a
    flag; under DDP the ranks agree on it after each step (one tiny all-reduce), so all stop at the same step.

    Args:
        signal_name: The signal SLURM sends before the time limit.
    """

    #: The exit status of every task after a stop for the time limit (``EX_TEMPFAIL``: try again later).
    EXIT_STATUS = 75

    def __init__(self, signal_name: str = "SIGUSR1") -> None:
        if not hasattr(signal, signal_name):
            raise ValueError(
                f"SlurmRequeue.signal_name={signal_name!r} is not allowed: not a signal of this OS"
            )
        self.signal_name = signal_name
        self.requested = False
        #: The generator step at which the run stopped for the time limit; None while it has not.
        self.stopped_at: int | None = None
        self._checkpoint: GANCheckpoint | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._checkpoint = next(
            (c for c in trainer.checkpoint_callbacks if isinstance(c, GANCheckpoint) and c.save_last), None
        )
        if self._checkpoint is None:
            raise ValueError(
                "trainer.callbacks=SlurmRequeue is not allowed: no GANCheckpoint saves last.ckpt, which the "
                "requeued job resumes from; keep --checkpoint.save_last=true"
            )
        environment = trainer._accelerator_connector.cluster_environment
        if isinstance(environment, SLURMEnvironment):
            environment.auto_requeue = False  # Lightning's handlers would requeue mid-step and ignore SIGTERM
        # Installed before the Trainer registers its handlers (right after the setup hooks), so that it keeps
        # this one; Lightning puts the original handler back when fit ends.
        signal.signal(getattr(signal, self.signal_name), self._handle)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        requested = self.requested
        if trainer.world_size > 1:
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if not requested or self.stopped_at is not None:
            return
        assert self._checkpoint is not None
        checkpoint = self._checkpoint
        checkpoint._save_last_checkpoint(trainer, checkpoint._monitor_candidates(trainer))
        self.stopped_at = trainer.global_step
        # Stop before anything else runs: `should_stop` alone would start a validation pass first.
        trainer.limit_val_batches = 0
        trainer.should_stop = True
        rank_zero_info(
            f"SlurmRequeue: {self.signal_name} at generator step {trainer.global_step}; saved "
            f"{checkpoint.last_model_path} and stopped; exiting with status {self.EXIT_STATUS} for a requeue"
        )
