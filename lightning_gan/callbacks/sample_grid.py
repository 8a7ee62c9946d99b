"""Sample grids from fixed latent vectors, every K generator steps, as PNG and to the active logger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_gan.images import sample_picture, save_png
from lightning_gan.validation import require_int


class SampleGrid(Callback):
    """Draws the same latent vectors every ``every_n_steps`` generator steps and at the end of training.

    Files land in ``<run folder>/samples/step_000500.png`` (the step is the generator step). Conditional
    models get one row of ``per_class`` samples per class. Signal windows (1, S, T) are drawn as line plots
    of their channels (:func:`lightning_gan.images.signal_grid`), named and in physical units when the data
    module has ``class_names``, ``channel_names`` and ``to_signal`` (as
    :class:`~lightning_gan.data.HARDataModule` does). The fixed vectors are saved in checkpoints, so a
    resumed run keeps drawing the same ones.

    Args:
        every_n_steps: Generator steps between grids.
        num_samples: Samples in the grid of an unconditional model.
        per_class: Samples per class (one row each) for a conditional model.
        seed: Seeds the fixed latent vectors (drawn with their own generator, not the global one).
    """

    def __init__(self, every_n_steps: int = 500, num_samples: int = 64, per_class: int = 16, seed: int = 0):
        for key, value in (
            ("every_n_steps", every_n_steps),
            ("num_samples", num_samples),
            ("per_class", per_class),
        ):
            require_int(f"SampleGrid.{key}", value, 1)
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.per_class = per_class
        self.seed = seed
        self.fixed_z: torch.Tensor | None = None
        self.last_drawn_step = -1

    def _labels(self, pl_module: LightningModule) -> torch.Tensor | None:
        if not getattr(pl_module, "conditional", False):
            return None
        return torch.arange(pl_module.num_classes).repeat_interleave(self.per_class)  # row k: class k

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not hasattr(pl_module, "sample_latent") or not hasattr(pl_module, "sample"):
            raise TypeError(
                f"SampleGrid draws samples of a GAN; {type(pl_module).__name__} has no sample_latent/sample: "
                "remove the callback from this config"
            )
        if self.fixed_z is None:
            labels = self._labels(pl_module)
            n = self.num_samples if labels is None else len(labels)
            rng = torch.Generator().manual_seed(self.seed)
            self.fixed_z = pl_module.sample_latent(n, generator=rng).cpu()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self.draw(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.draw(trainer, pl_module)

    def draw(self, trainer: Trainer, pl_module: LightningModule) -> Path | None:
        """Writes the grid for the current generator step; returns its path (None if already drawn, and on
        every rank but 0). Called on every rank: under DDP, finding the run folder is a collective."""
        step = trainer.global_step
        if step == self.last_drawn_step or self.fixed_z is None:
            return None
        self.last_drawn_step = step
        run_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a broadcast from rank 0 under DDP
        if not trainer.is_global_zero:
            return None
        labels = self._labels(pl_module)
        z = self.fixed_z.to(pl_module.device)
        images = pl_module.sample(len(z), None if labels is None else labels.to(pl_module.device), z=z)
        data = trainer.datamodule
        grid = sample_picture(
            images,
            nrow=self.per_class if labels is not None else None,
            row_names=getattr(data, "class_names", None) if labels is not None else None,
            channel_names=getattr(data, "channel_names", None),
            to_signal=getattr(data, "to_signal", None),
        )
        path = save_png(grid, run_dir / "samples" / f"step_{step:06d}.png")
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):  # W&B, Neptune, Comet
                logger.log_image(key="samples", images=[str(path)], step=step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(
                    "samples", grid, step, dataformats="HW" if grid.ndim == 2 else "HWC"
                )
        return path

    def state_dict(self) -> dict[str, Any]:
        return {"fixed_z": self.fixed_z, "last_drawn_step": self.last_drawn_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.fixed_z = state_dict["fixed_z"]
        self.last_drawn_step = state_dict["last_drawn_step"]
