"""Checkpoints every K generator steps and a ``last.ckpt`` that is always the end of training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn


class GANCheckpoint(ModelCheckpoint):
    """:class:`ModelCheckpoint` for manual optimization, where ``global_step`` counts generator steps.

    Lightning 2.6's ModelCheckpoint warns on every manual-optimization save and looks for a pre-step model
    copy, and its ``on_train_end`` skips ``last.ckpt`` once any save has happened, so after 7 steps with a
    save every 5, ``last.ckpt`` would hold step 5. Here a periodic save happens after the generator step
    (the state a resumed run continues from), and training always ends with ``last.ckpt`` at the final step.
    A crash (an exception, Ctrl-C) writes ``on_exception.ckpt`` beside it and never touches ``last.ckpt``, so
    ``--ckpt_path last`` only ever resumes a state that training reached cleanly. Weights holding NaN or
    Inf are never saved, so a diverged step cannot replace a good checkpoint. The hooks reuse
    ModelCheckpoint's own saving methods; only the "when" differs.
    """

    CHECKPOINT_NAME_ON_EXCEPTION = "on_exception"

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if pl_module.automatic_optimization:
            super().on_train_batch_end(trainer, pl_module, *args)
            return
        every = self._every_n_train_steps
        if every < 1 or trainer.global_step % every != 0 or self._should_skip_saving_checkpoint(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from lightning_gan.callbacks.divergence import DivergenceWatch

        if any(isinstance(cb, DivergenceWatch) and cb.reason for cb in trainer.callbacks):
            return  # stopped for divergence: last.ckpt stays at the last periodic save, before the collapse
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
