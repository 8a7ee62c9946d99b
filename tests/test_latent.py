"""The latent distribution (issue 17, item 8): gaussian, uniform or laplace z wherever z is drawn, and the
truncation trick for the gaussian."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch

from lightning_gan.callbacks import GANMetrics
from lightning_gan.cli import run
from lightning_gan.data import DigitsDataModule, MixedDataModule
from lightning_gan.latent import draw_latent
from lightning_gan.models import GAN
from tests.conftest import REPO
from tests.test_training_step import tiny_gan

#: mean, variance and the bound of |z| (inf: none) of each distribution
MOMENTS = {"gaussian": (0.0, 1.0, np.inf), "uniform": (0.0, 1 / 3, 1.0), "laplace": (0.0, 2.0, np.inf)}


def assert_drawn_from(z: torch.Tensor, kind: str) -> None:
    mean, variance, bound = MOMENTS[kind]
    assert abs(z.mean().item() - mean) < 0.1 and abs(z.var().item() / variance - 1) < 0.15, kind
    assert z.abs().max() <= bound
    if kind == "laplace":  # heavier tails than the gaussian of the same variance: excess kurtosis 3
        kurtosis = ((z - z.mean()) ** 4).mean() / z.var() ** 2 - 3
        assert 2 < kurtosis < 4.5


@pytest.mark.parametrize("kind", list(MOMENTS))
def test_each_distribution_has_its_moments_in_the_step_and_from_a_seeded_generator(kind):
    torch.manual_seed(0)
    assert_drawn_from(draw_latent(kind, 4000, 8, generator=torch.Generator().manual_seed(1)), kind)
    model = tiny_gan(latent=kind)
    _, z = model.training_noise(4000)
    assert_drawn_from(z, kind)
    assert_drawn_from(model.sample_latent(4000, generator=torch.Generator().manual_seed(1)), kind)


def test_truncation_redraws_the_gaussian_beyond_the_threshold_and_is_refused_otherwise():
    z = draw_latent("gaussian", 4000, 8, generator=torch.Generator().manual_seed(0), truncation=1.0)
    assert z.abs().max() <= 1.0 and z.abs().max() > 0.99
    assert 0.25 < z.var() < 0.35  # N(0, 1) truncated at 1: variance 0.291
    model = tiny_gan()
    samples = model.sample(4, generator=torch.Generator().manual_seed(0), truncation=0.5)
    assert samples.shape == (4, 1, 28, 28)
    with pytest.raises(ValueError, match=r"truncation=0\.0 .*> 0"):
        draw_latent("gaussian", 4, 8, truncation=0.0)
    with pytest.raises(ValueError, match=r"truncation=1\.0 .*not model\.latent='uniform'"):
        tiny_gan(latent="uniform").sample(4, truncation=1.0)
    with pytest.raises(ValueError, match=r"model\.latent='cauchy' .*gaussian, uniform, laplace"):
        tiny_gan(latent="cauchy")


def test_grids_metrics_generate_and_mixed_data_decode_z_of_the_run_s_distribution(tmp_path):
    decoded = []
    original = GAN.sample

    def recording(self, num_samples, labels=None, **kwargs):
        decoded.append((kwargs.get("z"), kwargs.get("generator")))
        return original(self, num_samples, labels, **kwargs)

    with mock.patch.object(GAN, "sample", recording):
        cli = run([
            "fit", "--config", str(REPO / "configs" / "cgan.yaml"), f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_steps=2", "--data.batch_size=16", "--trainer.enable_progress_bar=false",
            "--model.latent=uniform", "--data.val_fraction=0.1", "--data.test_fraction=0.8",
        ])  # fmt: skip
        grid_z = torch.cat([z for z, _ in decoded])
        assert len(grid_z) >= 80  # SampleGrid's fixed z: 8 per class
        assert_drawn_from(grid_z, "uniform")
        decoded.clear()
        metrics = next(c for c in cli.trainer.callbacks if isinstance(c, GANMetrics))
        metrics.evaluate(cli.trainer, cli.model)
        assert_drawn_from(torch.cat([z for z, _ in decoded]), "uniform")
        ckpt = tmp_path / "last.ckpt"
        cli.trainer.save_checkpoint(ckpt)
        decoded.clear()
        run(["generate", f"--ckpt_path={ckpt}", "--num_samples=500", f"--output={tmp_path / 'g.npz'}"])
        assert_drawn_from(torch.cat([z for z, _ in decoded]), "uniform")
        decoded.clear()
        real = DigitsDataModule(batch_size=64, seed=0, val_fraction=0.1, test_fraction=0.8)
        mixed = MixedDataModule(real, str(ckpt), cache_dir=str(tmp_path / "cache"))
        mixed.setup("fit")
        mixed.generated_dataset(0)
        assert_drawn_from(torch.cat([z for z, _ in decoded]), "uniform")
    with pytest.raises(SystemExit):
        run(["generate", f"--ckpt_path={ckpt}", "--truncation=0.5", f"--output={tmp_path / 't.npz'}"])


def test_generate_truncates_a_gaussian_run_s_z(tmp_path):
    cli = run([
        "fit", "--config", str(REPO / "configs" / "dcgan.yaml"), f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_steps=1", "--data.batch_size=16", "--trainer.enable_progress_bar=false",
        "--model.generator.init_args.base_channels=8", "--model.discriminator.init_args.base_channels=8",
        "--trainer.callbacks=[]",
    ])  # fmt: skip
    ckpt = tmp_path / "last.ckpt"
    cli.trainer.save_checkpoint(ckpt)
    decoded = []
    original = GAN.sample

    def recording(self, num_samples, labels=None, **kwargs):
        decoded.append(kwargs["z"])
        return original(self, num_samples, labels, **kwargs)

    with mock.patch.object(GAN, "sample", recording):
        run(["generate", f"--ckpt_path={ckpt}", "--num_samples=300", "--truncation=0.5",
             f"--output={tmp_path / 't.npz'}"])  # fmt: skip
    z = torch.cat(decoded)
    assert z.abs().max() <= 0.5 and z.var() < 0.1  # N(0, 1) truncated at 0.5: variance 0.079
