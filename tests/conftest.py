from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from lightning_gan.cli import GANCLI, run

REPO = Path(__file__).resolve().parents[1]
DCGAN_CONFIG = str(REPO / "configs" / "dcgan.yaml")

# Tiny nets and batches: the behaviour under test does not depend on size, and the suite must stay fast.
TINY = [
    "--model.generator.init_args.base_channels=8",
    "--model.discriminator.init_args.base_channels=8",
    "--model.latent_dim=8",
    "--data.batch_size=16",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",
]

os.environ.setdefault("WANDB_MODE", "offline")
# A judge trained by a test is cached here, not in the user's ~/.cache.
os.environ.setdefault("LIGHTNING_GAN_CACHE", tempfile.mkdtemp(prefix="lightning-gan-test-cache-"))
# Two cores shared with other work: OpenMP threads that spin while the other core is busy made single tests
# 15x slower; one thread each keeps the suite's time steady.
torch.set_num_threads(1)


def fit(root: Path, *args: str, config: str = DCGAN_CONFIG) -> GANCLI:
    """Runs ``lightning-gan fit`` in-process on the DCGAN config with tiny nets under ``root``."""
    return run(["fit", "--config", config, f"--trainer.default_root_dir={root}", *TINY, *args])


@pytest.fixture
def run_fit():
    return fit
