"""Transforms of what D sees in training (issue 16): instance noise on every input D scores."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from lightning_gan.models import GAN
from lightning_gan.transforms import InstanceNoise
from tests.conftest import REPO, fit_signal, generator_state, whole_and_resumed
from tests.test_training_step import tiny_gan


def inputs_of_d(model: GAN, step: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """A real and a fake batch, and what D received for them in D's and G's losses at generator ``step``."""
    seen = []
    model.discriminator.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    torch.manual_seed(0)
    real, fake = torch.rand(64, 1, 28, 28) * 2 - 1, torch.rand(64, 1, 28, 28) * 2 - 1
    with mock.patch.object(GAN, "global_step", new_callable=mock.PropertyMock, return_value=step):
        model.d_loss(real, torch.zeros(64, dtype=torch.long), fake, None)
        model.g_loss(fake, None)
    return real, fake, seen


@pytest.mark.parametrize("kind", ["uniform", "gaussian"])
def test_d_sees_real_and_fake_with_noise_of_the_asked_kind_and_bound_and_none_after_annealing(kind):
    scale = 1 / 128 if kind == "uniform" else 0.1
    model = tiny_gan(instance_noise=kind, instance_noise_scale=scale, instance_noise_anneal=10)
    real, fake, seen = inputs_of_d(model, step=0)
    assert len(seen) == 3  # D's real and fake inputs, then G's fake one
    for noisy, clean in zip(seen, (real, fake, fake), strict=True):
        noise = noisy - clean
        if kind == "uniform":  # U(0, 1/128): inside the bound, and spread over it
            assert noise.min() >= 0 and noise.max() <= scale * (1 + 1e-6)
            assert abs(noise.mean() - scale / 2) < scale / 20
        else:  # N(0, 0.1^2)
            assert abs(noise.mean()) < 0.01 and abs(noise.std() - scale) < 0.01
    _, _, halfway = inputs_of_d(model, step=5)
    half = halfway[0] - real  # halfway through the annealing: half the scale
    if kind == "uniform":
        assert 0.45 * scale < half.max() <= scale / 2 * (1 + 1e-6)
    else:
        assert abs(half.std() - scale / 2) < 0.005
    real, fake, annealed = inputs_of_d(model, step=10)
    assert all(torch.equal(a, b) for a, b in zip(annealed, (real, fake, fake), strict=True))
    clean_model = tiny_gan()
    real, fake, clean = inputs_of_d(clean_model, step=0)
    assert all(torch.equal(a, b) for a, b in zip(clean, (real, fake, fake), strict=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"instance_noise": "uniform", "instance_noise_scale": -0.1}, r"instance_noise_scale=-0\.1 .*>= 0"),
        ({"instance_noise": "uniform"}, r"instance_noise_scale=0\.0 .*'uniform': set a scale > 0"),
        ({"instance_noise_scale": 0.1}, r"instance_noise_scale=0\.1 .*'none': choose gaussian or uniform"),
        ({"instance_noise": "salt"}, r"model\.instance_noise='salt' .*none, gaussian, uniform"),
        ({"instance_noise": "gaussian", "instance_noise_scale": 0.1, "instance_noise_anneal": -1}, "anneal"),
    ],
)
def test_bad_instance_noise_settings_fail_before_training(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_gan(**kwargs)


NOISE = [
    "--model.instance_noise=uniform",
    "--model.instance_noise_scale=0.0078125",
    "--model.instance_noise_anneal=3",
]


def test_instance_noise_trains_the_image_preset_and_resumes_bit_exact(run_fit, tmp_path):
    config = str(REPO / "configs" / "cdcgan.yaml")
    whole, resumed = whole_and_resumed(lambda root, *a: run_fit(root, *a, config=config), tmp_path, *NOISE)
    assert whole.trainer.logged_metrics["d/instance_noise"] == 0  # annealed away at step 3
    a, b = generator_state(whole), generator_state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_instance_noise_trains_the_signal_preset_and_resumes_bit_exact(tmp_path):
    flags = ["--model.instance_noise=gaussian", "--model.instance_noise_scale=0.05"]
    whole, resumed = whole_and_resumed(fit_signal, tmp_path, *flags)
    a, b = generator_state(whole), generator_state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a) and resumed.trainer.global_step == 4


def test_scale_schedule():
    noise = InstanceNoise("gaussian", 0.2, anneal_steps=4)
    assert [noise.scale_at(s) for s in range(6)] == pytest.approx([0.2, 0.15, 0.1, 0.05, 0.0, 0.0])
