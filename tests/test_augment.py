"""Differentiable augmentation of what D sees in training (issue 16): DiffAugment, fixed or adaptive p."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from lightning_gan.models import GAN
from lightning_gan.transforms import ADA_INTERVAL, DiffAugment, Share, shift_rows
from tests.conftest import REPO, fit_signal, generator_state, whole_and_resumed
from tests.test_training_step import tiny_gan

IMAGES = "translation,cutout,color"


def d_inputs(model: GAN, real: torch.Tensor, fake: torch.Tensor) -> list[torch.Tensor]:
    """What D received in D's loss (real, fake, a penalty's inputs) and G's loss, in that order."""
    seen = []
    hook = model.discriminator.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].detach().clone())
    )
    with mock.patch.object(GAN, "global_step", new_callable=mock.PropertyMock, return_value=0):
        model.d_loss(real, torch.zeros(len(real), dtype=torch.long), fake, None)
        model.g_loss(fake, None)
    hook.remove()
    return seen


def batches(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.rand(n, 1, 28, 28) * 2 - 1, torch.rand(n, 1, 28, 28) * 2 - 1


def has_cut_square(x: torch.Tensor, size: int = 14) -> torch.Tensor:
    """Per sample: whether some size x size square, clipped at the border, is exactly 0 (cutout's mark; the
    inputs here are uniform in [-1, 1], where an exact 0 does not occur by chance)."""
    zero = (x == 0).all(dim=1).float()[:, None]  # (N, 1, H, W)
    # a square clipped at the border is at least half its side in each direction
    half = size // 2
    found = torch.nn.functional.max_pool2d(
        (torch.nn.functional.avg_pool2d(zero, half, stride=1) == 1).float(), 3, stride=1
    )
    return found.flatten(1).amax(1) == 1


def test_with_p_1_d_never_sees_an_unaugmented_sample_in_training():
    real, fake = batches()
    seen = d_inputs(tiny_gan(augment=IMAGES, augment_p=1.0), real, fake)
    assert len(seen) == 3  # D's real and fake, G's fake
    for augmented, clean in zip(seen, (real, fake, fake), strict=True):
        assert (augmented != clean).flatten(1).any(1).all()  # every sample changed
    control = d_inputs(tiny_gan(), real, fake)
    assert all(torch.equal(a, b) for a, b in zip(control, (real, fake, fake), strict=True))


def test_real_fake_and_penalty_inputs_get_the_same_family_and_p_is_a_per_sample_probability():
    real, fake = batches()
    model = tiny_gan("layer", gp_weight=10.0, augment="cutout", augment_p=1.0)
    seen = d_inputs(model, real, fake)
    assert len(seen) == 4  # real, fake, the gradient penalty's interpolates, G's fake
    assert all(has_cut_square(x).all() for x in seen)
    assert not has_cut_square(real).any()
    half = d_inputs(tiny_gan(augment="cutout", augment_p=0.5), *batches(256))
    assert 0.4 < has_cut_square(half[0]).float().mean() < 0.6


def test_g_gradient_flows_through_the_augmentation():
    model = tiny_gan(augment="cutout,translation", augment_p=1.0)
    fake = batches()[1].requires_grad_()
    with mock.patch.object(GAN, "global_step", new_callable=mock.PropertyMock, return_value=0):
        model.d_view(fake).sum().backward()
    # 1 where the pixel reached D, 0 where cutout or translation dropped it: not detached, not bypassed
    assert set(fake.grad.unique().tolist()) == {0.0, 1.0}
    z = torch.randn(8, 8)
    loss, _ = model.g_loss(model.generator(z), None)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.generator.parameters())


def test_shift_rows_moves_each_sample_by_its_own_amount_with_zeros_and_a_double_backward():
    x = torch.arange(1.0, 6.0).repeat(2, 1, 1, 1).requires_grad_()  # (2, 1, 1, 5)
    shifted = shift_rows(x, torch.tensor([2, -1]), dim=3)
    assert shifted[0, 0, 0].tolist() == [0, 0, 1, 2, 3] and shifted[1, 0, 0].tolist() == [2, 3, 4, 5, 0]
    (grad,) = torch.autograd.grad((shifted**2).sum(), x, create_graph=True)
    grad.sum().backward()  # the penalty's double backward
    assert x.grad[0, 0, 0].tolist() == [2, 2, 2, 0, 0]


def test_signal_augmentations_change_every_window_and_keep_its_shape():
    x = torch.rand(16, 1, 6, 128) * 2 - 1
    for name in ("shift", "scale", "jitter"):
        out = DiffAugment(name, p=1.0)(x)
        assert out.shape == x.shape and (out != x).flatten(1).any(1).all(), name
    shifted = DiffAugment("shift", p=1.0)(x)  # whole windows move in time: rows keep their values' order
    assert (shifted[..., 64] == x[..., 64 - 16 : 64 + 17].permute(3, 0, 1, 2)).any(0).all()


def test_ranks_draw_different_augmentations_and_noise_from_identical_streams():
    model = tiny_gan(augment=IMAGES, augment_p=1.0, instance_noise="uniform", instance_noise_scale=0.1)
    x = torch.zeros(4, 1, 28, 28)
    views = []
    for rank in (0, 1):
        torch.manual_seed(0)
        with (
            mock.patch.object(GAN, "share", new_callable=mock.PropertyMock, return_value=Share(rank, 2)),
            mock.patch.object(GAN, "global_step", new_callable=mock.PropertyMock, return_value=0),
        ):
            views.append(model.d_view(x))
    assert not torch.isclose(views[0], views[1]).flatten(1).all(1).any()


def test_adaptive_p_rises_while_d_is_sure_of_the_reals_and_falls_when_not():
    augment = DiffAugment("translation", p=0.25, adaptive=True, target=0.6, ada_steps=40)
    step = ADA_INTERVAL / 40

    def generator_steps(scores: list[float], intervals: int) -> list[float]:
        ps = []
        for _ in range(intervals * ADA_INTERVAL):
            augment.observe(torch.tensor(scores))
            augment.adjust()
            ps.append(augment.p.item())
        return ps

    ps = generator_steps([3.0, 0.5, 1.0, 2.0], 3)  # r_t = 1 > 0.6: p rises once per interval
    assert ps == pytest.approx([0.25 + step * ((i + 1) // ADA_INTERVAL) for i in range(3 * ADA_INTERVAL)])
    assert generator_steps([3.0, 2.0, 1.0, -1.0, 5.0], 1)[-1] == pytest.approx(0.25 + 3 * step)  # r_t = 0.6
    assert generator_steps([1.0, -1.0], 1)[-1] == pytest.approx(0.25 + 2 * step)  # r_t = 0 < 0.6: falls
    assert generator_steps([-2.0], 10)[-1] == 0.0  # and stops at 0
    assert generator_steps([2.0], 20)[-1] == 1.0  # or at 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"augment": "rotate"}, r"model\.augment='rotate' .*translation, cutout, color, shift, scale"),
        ({"augment": "cutout,cutout", "augment_p": 1.0}, "distinct"),
        ({"augment": "cutout"}, r"model\.augment_p=0\.0 .*augments nothing"),
        ({"augment": "cutout", "augment_p": 1.5}, r"augment_p=1\.5 .*0 <= p <= 1"),
        ({"augment_p": 0.5}, r"model\.augment='none' .*name augmentations"),
        ({"augment": "cutout", "augment_adaptive": True}, r"augment_target=None .*needs the r_t"),
        ({"augment": "cutout", "augment_p": 1.0, "augment_target": 0.6}, r"augment_target=0\.6 .*adaptive"),
        (
            {"augment": "cutout", "augment_adaptive": True, "augment_target": 0.6, "augment_ada_steps": 0},
            ">= 1",
        ),
    ],
)
def test_bad_augmentation_settings_fail_before_training(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_gan(**kwargs)


ADAPTIVE = [
    "--model.augment_adaptive=true",
    "--model.augment_target=0.6",
    "--model.augment_ada_steps=8",  # p moves by 0.5 at step 4: the resume must carry the count since step 0
    "--model.augment_p=0.5",
    "--trainer.log_every_n_steps=1",
]


def test_adaptive_augmentation_trains_the_gradient_penalty_preset_and_resumes_bit_exact(run_fit, tmp_path):
    config = str(REPO / "configs" / "wgan_gp.yaml")
    fit_fn = lambda root, *a: run_fit(root, *a, config=config)  # noqa: E731
    whole, resumed = whole_and_resumed(fit_fn, tmp_path, f"--model.augment={IMAGES}", *ADAPTIVE)
    assert whole.model.augment.p.item() in (0.0, 1.0)  # moved at step 4, from 0.5
    for key in ("augment.p", "augment.sign_sums"):
        assert torch.equal(whole.model.state_dict()[key], resumed.model.state_dict()[key])
    a, b = generator_state(whole), generator_state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "d/augment_rt" in whole.trainer.logged_metrics and "d/augment_p" in whole.trainer.logged_metrics


def test_augmentation_trains_the_signal_preset_and_resumes_bit_exact(tmp_path):
    whole, resumed = whole_and_resumed(fit_signal, tmp_path, "--model.augment=shift,scale,jitter", *ADAPTIVE)
    assert whole.model.augment.p.item() in (0.0, 1.0)
    a, b = generator_state(whole), generator_state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a) and resumed.trainer.global_step == 4


def test_validation_and_metrics_see_unaugmented_samples(run_fit, tmp_path):
    cli = run_fit(tmp_path, "--model.augment=cutout", "--model.augment_p=1.0", "--trainer.max_steps=1",
                  config=str(REPO / "configs" / "acgan.yaml"))  # fmt: skip
    model, datamodule = cli.model, cli.datamodule
    seen = []
    model.discriminator.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    with mock.patch.object(type(model.augment), "forward", side_effect=AssertionError("augmented")):
        cli.trainer.validate(model, datamodule=datamodule, verbose=False)
        samples = model.sample(16, torch.arange(16) % model.num_classes)
    assert seen and not any(has_cut_square(x).any() for x in seen)  # D's class head judged real images
    assert not has_cut_square(samples).any()


def test_augmentation_can_be_switched_on_or_off_for_a_resumed_run(run_fit, tmp_path):
    run_fit(tmp_path, "--trainer.max_steps=1")
    adaptive = ["--model.augment=translation", "--model.augment_adaptive=true", "--model.augment_target=0.6"]
    on = run_fit(tmp_path, "--trainer.max_steps=2", "--ckpt_path=last", *adaptive)
    assert on.model.augment.sign_sums[2].item() == 1  # counting since the resume
    off = run_fit(tmp_path, "--trainer.max_steps=3", "--ckpt_path=last")
    assert off.trainer.global_step == 3 and not off.model.augment.enabled
