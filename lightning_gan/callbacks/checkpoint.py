"""Checkpoints every K generator steps and a ``last.ckpt`` that is always the end of training."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a local checkpoint to a temporary file beside it, flushes it to disk, then renames it over the
    old one, so a kill at any moment leaves either the old file or the new one, whole.

    Lightning's own writer stages the file in the system temp folder and moves it; when that folder is on
    another file system than the run (a node's local /tmp, a shared checkpoint disk), the move is a copy into
    the destination, and a kill mid-copy leaves a truncated checkpoint in place of the good one. Remote paths
    (``s3://`` ...) keep Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(temporary, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)  # atomic on one file system
        finally:
            temporary.unlink(missing_ok=True)


class GANCheckpoint(ModelCheckpoint):
    """:class:`ModelCheckpoint` for manual optimization, where ``global_step`` counts generator steps.

    Lightning 2.6's ModelCheckpoint warns on every manual-optimization save and looks for a pre-step model
    copy, and its ``on_train_end`` skips ``last.ckpt`` once any save has happened, so after 7 steps with a
    save every 5, ``last.ckpt`` would hold step 5. Here a periodic save happens after the generator step
    (the state a resumed run continues from), and training always ends with ``last.ckpt`` at the final step.
    A crash (an exception, Ctrl-C) writes ``on_exception.ckpt`` beside it and never touches ``last.ckpt``, so
    ``--ckpt_path last`` only ever resumes a state that training reached cleanly. Weights holding NaN or
    Inf are never saved, so a diverged step cannot replace a good checkpoint, and every file is written
    atomically (:class:`AtomicCheckpointIO`), so a kill mid-write cannot either. The hooks reuse
    ModelCheckpoint's own saving methods; only the "when" differs.
    """

    CHECKPOINT_NAME_ON_EXCEPTION = "on_exception"

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not a user's own CheckpointIO
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    @staticmethod
    def _diverged(trainer: Trainer) -> bool:
        """Whether a DivergenceWatch stopped training: from then on nothing is saved, so ``last.ckpt`` stays
        at the last periodic save before the collapse (checkpoint callbacks run after the watch in a step)."""
        from lightning_gan.callbacks.divergence import DivergenceWatch

        return any(isinstance(cb, DivergenceWatch) and cb.reason for cb in trainer.callbacks)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self._diverged(trainer):
            return
        if pl_module.automatic_optimization:
            super().on_train_batch_end(trainer, pl_module, *args)
            return
        every, step = self._every_n_train_steps, trainer.global_step
        periodic = every >= 1 and step % every == 0
        # The last step of a run saves last.ckpt here, mid-epoch, as every periodic save does: saved at the
        # end of training, Lightning's loops would count the epoch as finished, and a run continued with a
        # larger --trainer.max_steps would start the next epoch instead of the rest of this one.
        final = self.save_last and 0 < trainer.max_steps <= step
        if not (periodic or final) or self._should_skip_saving_checkpoint(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        if periodic:
            self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._diverged(trainer):
            return
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        # Every periodic, best and last save goes through here.
        state = trainer.lightning_module.state_dict()  # parameters and buffers (BatchNorm statistics too)
        if not all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()):
            rank_zero_warn(
                f"Not saving {filepath} at generator step {trainer.global_step}: the weights hold NaN or Inf "
                "(the previous checkpoints are kept as they are)"
            )
            return
        super()._save_checkpoint(trainer, filepath)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if self.dirpath is None or trainer.global_step == 0:
            return
        path = Path(self.dirpath) / f"{self.CHECKPOINT_NAME_ON_EXCEPTION}{self.FILE_EXTENSION}"
        trainer.save_checkpoint(path)
