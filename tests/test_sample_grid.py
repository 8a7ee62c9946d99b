"""The sample-grid callback: fixed latent vectors, PNG files named by generator step, sent to the logger."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import Logger
from PIL import Image

from lightning_gan.callbacks import SampleGrid
from lightning_gan.data import DigitsDataModule
from lightning_gan.images import make_grid
from lightning_gan.models import GAN
from lightning_gan.nets import DCGANDiscriminator, DCGANGenerator


class ImageLogger(Logger):
    """A logger with ``log_image`` (as W&B's has) that records what it was sent."""

    def __init__(self, save_dir):
        super().__init__()
        self._save_dir = str(save_dir)
        self.images = []

    name = "images"
    version = 0

    @property
    def save_dir(self):
        return self._save_dir

    def log_hyperparams(self, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        pass

    def log_image(self, key, images, step=None):
        self.images.append((key, images, step))


def test_grids_every_k_generator_steps_from_fixed_z_and_to_the_logger(tmp_path):
    model = GAN(
        generator=lambda z, s, k: DCGANGenerator(z, s, k, base_channels=8),
        discriminator=lambda s, k: DCGANDiscriminator(s, k, base_channels=8),
        latent_dim=8,
    )
    grid = SampleGrid(every_n_steps=2, num_samples=9, seed=1)
    logger = ImageLogger(tmp_path)
    trainer = Trainer(
        default_root_dir=tmp_path,
        max_steps=5,
        logger=logger,
        callbacks=[grid],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, DigitsDataModule(batch_size=16))
    files = sorted(p.name for p in (tmp_path / "samples").glob("*.png"))
    assert files == ["step_000002.png", "step_000004.png", "step_000005.png"]  # every 2, and the end
    assert [step for _, _, step in logger.images] == [2, 4, 5]
    expected_z = torch.randn(9, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(grid.fixed_z, expected_z)
    # The last file is exactly the fixed z decoded by the final generator.
    final = make_grid(model.sample(9, z=expected_z), nrow=None)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "samples" / "step_000005.png")), final)
    assert grid.state_dict()["fixed_z"] is grid.fixed_z


def test_make_grid_tiles_and_scales_to_uint8():
    images = torch.stack([torch.full((3, 2, 2), -1.0), torch.full((3, 2, 2), 1.0)])
    grid = make_grid(images, nrow=2, padding=1)
    assert grid.shape == (4, 8, 3) and grid.dtype == np.uint8
    assert grid[1, 1].tolist() == [0, 0, 0] and grid[1, 5].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        make_grid(torch.zeros(2, 2, 4, 4))


def test_pictures_leave_the_callers_matplotlib_backend_alone(tmp_path):
    """A notebook's inline backend must survive a sample grid of signals or the loss curves drawn at the end
    of a fit: they used to switch matplotlib to Agg, after which the notebook showed no figure."""
    import matplotlib

    from lightning_gan.callbacks import LossCurves
    from lightning_gan.images import signal_grid

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # stands for the caller's own backend
    try:
        assert signal_grid(torch.randn(4, 1, 6, 128)).ndim == 3
        curves = LossCurves()
        curves.steps, curves.values = [1, 2], {"loss/d": [1.0, 0.5], "loss/g": [0.7, 0.9]}
        assert curves.plot(tmp_path / "curves.png").is_file()
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
