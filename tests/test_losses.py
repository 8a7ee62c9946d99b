import math
import re
from typing import get_args

import pytest
import torch
from torch import nn

from lightning_gan.losses import LOSSES, AdvLoss, clip_weights_, get_loss
from lightning_gan.regularizers import gradient_penalty

REAL = [2.0, -1.0]
FAKE = [0.5, -3.0]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


# Expected (d, g) for real=REAL, fake=FAKE, written from each paper's formula with D = sigmoid(score)
# for the BCE losses, not from the softplus forms used in the code.
_D_BCE = _mean([-math.log(_sigmoid(r)) for r in REAL]) + _mean([-math.log(1 - _sigmoid(f)) for f in FAKE])
EXPECTED = {
    "bce": (_D_BCE, _mean([-math.log(_sigmoid(f)) for f in FAKE])),
    "minimax": (_D_BCE, _mean([math.log(1 - _sigmoid(f)) for f in FAKE])),
    # 0.5 * mean((r - 1)^2) + 0.5 * mean(f^2); G = 0.5 * mean((f - 1)^2)
    "lsgan": (0.5 * (1.0 + 4.0) / 2 + 0.5 * (0.25 + 9.0) / 2, 0.5 * (0.25 + 16.0) / 2),
    # relu(1 - r): [0, 2]; relu(1 + f): [1.5, 0]; G = -mean(f) = 1.25
    "hinge": (1.0 + 0.75, 1.25),
    # mean(f) - mean(r) = -1.25 - 0.5; G = -mean(f)
    "wasserstein": (-1.75, 1.25),
}


def test_table_matches_literal():
    assert tuple(LOSSES) == get_args(AdvLoss)
    assert set(EXPECTED) == set(LOSSES)


@pytest.mark.parametrize("name", get_args(AdvLoss))
def test_loss_equals_formula(name):
    loss = get_loss(name)
    real, fake = torch.tensor(REAL, dtype=torch.float64), torch.tensor(FAKE, dtype=torch.float64)
    d_expected, g_expected = EXPECTED[name]
    assert loss.d(real, fake).item() == pytest.approx(d_expected, rel=1e-12)
    assert loss.g(fake).item() == pytest.approx(g_expected, rel=1e-12)


@pytest.mark.parametrize("name", get_args(AdvLoss))
def test_loss_accepts_n_and_n1_scores(name):
    loss = get_loss(name)
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    d = loss.d(real, fake)
    assert d.shape == ()
    # (N, 1) must not broadcast against (N,) into an (N, N) matrix.
    assert loss.d(real[:, None], fake).item() == pytest.approx(d.item())
    assert loss.d(real, fake[:, None]).item() == pytest.approx(d.item())
    assert loss.g(fake[:, None]).item() == pytest.approx(loss.g(fake).item())


@pytest.mark.parametrize("name", get_args(AdvLoss))
def test_loss_rejects_other_score_shapes(name):
    with pytest.raises(ValueError, match=r"fake_scores must have shape \(N,\) or \(N, 1\), got \(2, 3\)"):
        get_loss(name).g(torch.zeros(2, 3))


def test_bce_is_stable_for_large_logits():
    # log(sigmoid(-200)) underflows to -inf in float32; softplus does not.
    real, fake = torch.tensor([-200.0]), torch.tensor([200.0])
    assert get_loss("bce").d(real, fake).item() == pytest.approx(400.0)
    assert get_loss("bce").g(torch.tensor([-200.0])).item() == pytest.approx(200.0)


def test_minimax_shares_d_with_bce_but_saturates_in_g():
    assert LOSSES["minimax"].d is LOSSES["bce"].d
    # Where D confidently rejects a fake (score -3), the saturating G loss has a small gradient,
    # sigmoid(-3), and the non-saturating one a large one, sigmoid(3) (Goodfellow et al. 2014, sec. 3).
    grads = {}
    for name in ("bce", "minimax"):
        fake = torch.tensor([-3.0], requires_grad=True)
        get_loss(name).g(fake).backward()
        grads[name] = fake.grad.item()
    assert grads["minimax"] == pytest.approx(-_sigmoid(-3.0))
    assert grads["bce"] == pytest.approx(-_sigmoid(3.0))


def test_get_loss_rejects_unknown_name():
    msg = "model.loss='hnge' is not allowed: choose one of bce, minimax, lsgan, hinge, wasserstein"
    with pytest.raises(ValueError, match=re.escape(msg)):
        get_loss("hnge")


@pytest.mark.parametrize("shape", [(4, 1, 3, 3), (5, 2, 7), (3, 6)])
def test_gradient_penalty_linear_critic(shape):
    # critic(x) = flatten(x) @ w has gradient w at every x_hat, so GP = (||w|| - 1)^2 whatever eps is.
    torch.manual_seed(0)
    real, fake = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    w = torch.randn(math.prod(shape[1:]), dtype=torch.float64)
    gp = gradient_penalty(lambda x: x.flatten(1) @ w, real, fake)
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-12)


def test_gradient_penalty_nonlinear_critic():
    # critic(x) = sum(x^2) per sample has gradient 2 x_hat, so GP = mean((2 ||x_hat|| - 1)^2).
    torch.manual_seed(0)
    real, fake = torch.randn(6, 2, 4, 4, dtype=torch.float64), torch.randn(6, 2, 4, 4, dtype=torch.float64)
    gp = gradient_penalty(
        lambda x: (x**2).flatten(1).sum(1), real, fake, generator=torch.Generator().manual_seed(123)
    )
    eps = torch.rand(6, 1, 1, 1, generator=torch.Generator().manual_seed(123), dtype=torch.float64)
    x_hat = eps * real + (1 - eps) * fake
    expected = sum((2 * math.sqrt((x_hat[i] ** 2).sum().item()) - 1) ** 2 for i in range(6)) / 6
    assert gp.item() == pytest.approx(expected, rel=1e-12)


def test_gradient_penalty_backpropagates_into_critic_not_generator():
    torch.manual_seed(0)
    critic = nn.Linear(4, 1)  # scores (N, 1); gradient w.r.t. x is the weight row w
    g = nn.Linear(3, 4)
    real, fake = torch.randn(8, 4), g(torch.randn(8, 3))
    gp = gradient_penalty(critic, real, fake)
    gp.backward()  # fails without create_graph=True: gp would have no graph to the weight
    w = critic.weight.detach()[0]
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    expected = 2 * (w.norm() - 1) * w / w.norm()
    torch.testing.assert_close(critic.weight.grad[0], expected)
    assert g.weight.grad is None  # fake is detached


def test_gradient_penalty_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        gradient_penalty(lambda x: x.sum(1), torch.zeros(4, 3), torch.zeros(4, 2))


def test_clip_weights_clamps_every_parameter():
    torch.manual_seed(0)
    d = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    for p in d.parameters():
        p.data.normal_(0, 1.0)
    d[2].bias.data = torch.tensor([0.005])
    clip_weights_(d, 0.01)
    for p in d.parameters():
        assert p.abs().max().item() <= 0.01
    assert d[2].bias.item() == pytest.approx(0.005)  # values inside the range are untouched
    assert d[1].weight.abs().max().item() == pytest.approx(0.01)  # BN scales are clipped too


def test_clip_weights_rejects_nonpositive_value():
    with pytest.raises(ValueError, match="clip_value must be > 0, got 0"):
        clip_weights_(nn.Linear(2, 1), 0)


class RecordingScaler(torch.amp.GradScaler):
    """A real CPU GradScaler that records what it was asked to scale."""

    def __init__(self) -> None:
        super().__init__("cpu", init_scale=2.0**16)
        self.scaled: list[torch.Tensor] = []

    def scale(self, outputs):
        self.scaled.append(outputs.detach())
        return super().scale(outputs)


def test_under_a_loss_scaler_the_penalty_takes_the_gradient_of_the_scaled_scores_then_unscales():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 1))
    real, fake = torch.randn(6, 3, 4), torch.randn(6, 3, 4)
    generator = torch.Generator().manual_seed(1)
    plain = gradient_penalty(critic, real, fake, generator=generator)
    scaler = RecordingScaler()
    scaled = gradient_penalty(critic, real, fake, generator=generator.manual_seed(1), scaler=scaler)
    assert len(scaler.scaled) == 1  # the recipe: autograd.grad(scaler.scale(scores.sum()), x_hat) ...
    torch.testing.assert_close(scaled, plain)  # ... then grad / scale: the same penalty, without underflow
    (w_plain,) = torch.autograd.grad(plain, critic[1].weight, retain_graph=True)
    (w_scaled,) = torch.autograd.grad(scaled, critic[1].weight)
    torch.testing.assert_close(w_scaled, w_plain)


def test_the_gan_s_gradient_penalty_uses_the_precision_plugin_s_scaler(tmp_path, monkeypatch):
    from lightning.pytorch.plugins.precision import MixedPrecision

    from lightning_gan.callbacks import DivergenceWatch
    from lightning_gan.data import DigitsDataModule
    from lightning_gan.models import terms
    from tests.test_training_step import tiny_gan, tiny_trainer

    given = []

    def recording(*args, scaler=None, **kwargs):
        given.append(scaler)
        return gradient_penalty(*args, scaler=scaler, **kwargs)

    monkeypatch.setattr(terms, "gradient_penalty", recording)
    scaler = RecordingScaler()
    watch = DivergenceWatch()  # the first updates overflow at scale 2**16: skipped steps, not a divergence
    plugins = [MixedPrecision("16-mixed", "cpu", scaler=scaler)]
    trainer = tiny_trainer(tmp_path, max_steps=2, plugins=plugins, callbacks=[watch])
    trainer.fit(tiny_gan(d_norm="layer", loss="wasserstein", gp_weight=10.0, n_critic=2), DigitsDataModule())
    assert trainer.global_step == 2 and given == [scaler] * 4  # every D update's penalty, with the scaler
    assert watch.reason is None and scaler.get_scale() < 2.0**16
    assert sum(t.dtype == torch.float16 for t in scaler.scaled) >= 4  # D's fp16 scores, scaled before grad
