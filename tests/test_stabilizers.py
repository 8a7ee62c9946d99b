"""The stabilisers of issue 15, each against its formula computed by hand: feature matching, historical
averaging, one-sided label smoothing, gradient-norm clipping, update order, mode seeking and R1."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import Callback
from torch import nn

from lightning_gan.data import DigitsDataModule
from lightning_gan.losses import get_loss
from lightning_gan.models import GAN
from lightning_gan.nets import (
    DCGANDiscriminator,
    DCGANGenerator,
    DOut,
    MLPDiscriminator,
    SignalDiscriminator,
    SignalGenerator,
)
from lightning_gan.regularizers import mode_seeking, r1_penalty
from tests.test_training_step import tiny_gan, tiny_trainer


class LinearD(nn.Module):
    """D(x) = <w, x> + b: its input gradient is w everywhere, so R1 = ||w||^2."""

    def __init__(self, img_shape, num_classes=0, class_head=0):
        super().__init__()
        self.linear = nn.Linear(math.prod(img_shape), 1)

    def forward(self, x, labels=None):
        features = x.flatten(1)
        return DOut(self.linear(features).squeeze(1), None, features)


class ScaleG(nn.Module):
    """G(z) = a z as a (1, 2, 2) image: any two samples differ by a times their latents."""

    def __init__(self, latent_dim, img_shape, num_classes=0, a=0.5):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, z, labels=None):
        return (self.a * z).view(-1, 1, 2, 2)


# ---------------------------------------------------------------------------------------- feature matching
def hand_features(d: nn.Module, x: torch.Tensor, layer) -> torch.Tensor:
    """D's features at ``layer`` by running its pieces by hand, not through the hooks the module uses."""
    if isinstance(d, MLPDiscriminator):
        h = x.flatten(1)
        ends = d.layer_ends if layer == "penultimate" else d.layer_ends[: (layer % len(d.layer_ends)) + 1]
        return d.net[: ends[-1] + 1](h)
    x = d.to_input(x)
    stages = list(d.stages)
    upto = len(stages) if layer == "penultimate" else (layer % len(stages)) + 1
    return nn.Sequential(*stages[:upto])(x).flatten(1)


def image_g(z, s, k):
    return DCGANGenerator(z, s, k, base_channels=8)


def signal_g(z, s, k):
    return SignalGenerator(z, s, k, base_channels=4)


#: name: (G, D, data shape)
NETS = {
    "dcgan": (image_g, lambda s, k, **h: DCGANDiscriminator(s, k, base_channels=8, **h), (1, 28, 28)),
    "mlp": (
        image_g,
        lambda s, k, **h: MLPDiscriminator(s, k, hidden=(32, 16, 8), dropout=0.0, **h),
        (1, 28, 28),
    ),
    "signal": (signal_g, lambda s, k, **h: SignalDiscriminator(s, k, base_channels=4, **h), (1, 6, 32)),
    "signal1d": (
        signal_g,
        lambda s, k, **h: SignalDiscriminator(s, k, base_channels=4, conv="1d", **h),
        (1, 6, 32),
    ),
}


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("layer", ["penultimate", 0, -1])
@pytest.mark.parametrize("net", list(NETS))
def test_feature_matching_is_the_squared_distance_of_mean_features_of_the_named_layer(net, layer, reduction):
    generator, discriminator, shape = NETS[net]
    torch.manual_seed(0)
    model = GAN(
        generator, discriminator, img_shape=shape, latent_dim=8, feature_matching=2.0, feature_layer=layer,
        feature_matching_reduction=reduction,
    )  # fmt: skip
    real, z = torch.rand(6, *shape) * 2 - 1, torch.randn(6, 8)
    fake = model.generator(z)
    loss, logs = model.g_loss(fake, None, z, real, torch.zeros(6, dtype=torch.long))
    d = model.discriminator
    real_f, fake_f = hand_features(d, real, layer), hand_features(d, fake, layer)
    expected = (real_f.mean(0) - fake_f.mean(0)).square().sum() / (
        real_f.shape[1] if reduction == "mean" else 1
    )
    torch.testing.assert_close(logs["loss/fm"], expected.detach())
    torch.testing.assert_close(loss, logs["loss/g"] + 2.0 * expected)
    # G's gradient flows through the generated features only: the real ones are constants.
    (grad,) = torch.autograd.grad(loss, fake)
    assert grad.abs().sum() > 0


def test_feature_matching_as_ssgan_s_whole_g_objective_drops_the_minimax_term():
    def model(only: bool) -> GAN:
        torch.manual_seed(0)
        return tiny_gan(
            conditioning="ssgan", num_classes=10, loss="minimax", feature_matching=1.0,
            feature_matching_only=only, discriminator=NETS["mlp"][1],
        )  # fmt: skip

    real, z = torch.rand(8, 1, 28, 28), torch.randn(8, 8)
    labels = torch.full((8,), -1)
    both, only = model(False), model(True)
    loss, logs = both.g_loss(both.generator(z), None, z, real, labels)
    torch.testing.assert_close(loss, logs["loss/g"] + logs["loss/fm"])
    loss, logs = only.g_loss(only.generator(z), None, z, real, labels)
    assert logs["loss/g"] != 0  # still logged, to watch
    assert torch.equal(loss, logs["loss/fm"])  # but not in the objective
    with pytest.raises(ValueError, match=r"model\.feature_matching_only=True .*model\.feature_matching > 0"):
        tiny_gan(feature_matching_only=True)


# ------------------------------------------------------------------------------------ historical averaging
class Snapshots(Callback):
    """Each network's parameters at the start of every update (an optimizer's pre-step hook: after the
    loss and backward, before the parameters change)."""

    def __init__(self):
        self.seen = {"g": [], "d": []}

    def on_train_start(self, trainer, pl_module):
        for name, opt in zip("gd", trainer.optimizers, strict=True):
            params = [p for group in opt.param_groups for p in group["params"]]
            opt.register_step_pre_hook(
                lambda *_, n=name, ps=params: self.seen[n].append([p.detach().double().clone() for p in ps])
            )


def hand_penalty(snapshots: list[list[torch.Tensor]], t: int) -> float:
    """||theta_t - mean(theta_1..theta_t)||^2 over all tensors, in float64."""
    mean = [torch.stack(ps).mean(0) for ps in zip(*snapshots[: t + 1], strict=True)]
    return sum((p - m).square().sum() for p, m in zip(snapshots[t], mean, strict=True)).item()


def test_historical_averaging_penalises_the_distance_to_the_mean_of_all_past_parameters(tmp_path):
    model = tiny_gan(hist_avg_g=0.5, hist_avg_d=0.25, n_critic=2)
    snapshots = Snapshots()
    trainer = tiny_trainer(tmp_path, max_steps=3, callbacks=[snapshots])
    trainer.fit(model, DigitsDataModule(batch_size=16))
    g, d = snapshots.seen["g"], snapshots.seen["d"]
    assert len(g) == 3 and len(d) == 6
    logged = trainer.callback_metrics  # the last generator step's values; D's is the mean of its 2 updates
    assert math.isclose(logged["loss/hist_avg_g"].item(), hand_penalty(g, 2), rel_tol=1e-3)
    assert math.isclose(
        logged["loss/hist_avg_d"].item(), (hand_penalty(d, 4) + hand_penalty(d, 5)) / 2, rel_tol=1e-3
    )
    assert hand_penalty(g, 2) > 0
    # The running means are those of every value the parameters had, this one included.
    for average, seen in ((model.loss_terms.hist_g, g), (model.loss_terms.hist_d, d)):
        assert average.count.item() == len(seen)
        means = [
            average.get_buffer(average.key(n)) for n, _ in average_owner(model, average).named_parameters()
        ]
        for mean, values in zip(means, zip(*seen, strict=True), strict=True):
            torch.testing.assert_close(mean.double(), torch.stack(values).mean(0), rtol=1e-5, atol=1e-6)


def average_owner(model: GAN, average: nn.Module) -> nn.Module:
    return model.generator if average is model.loss_terms.hist_g else model.discriminator


def test_historical_averages_survive_a_resume_bit_exact_and_can_be_switched_on_for_a_resumed_run(
    run_fit, tmp_path
):
    flags = ["--model.hist_avg_g=0.1", "--model.hist_avg_d=0.1", "--model.n_critic=2"]
    whole = run_fit(tmp_path / "whole", "--trainer.max_steps=4", *flags)
    run_fit(tmp_path / "part", "--trainer.max_steps=2", *flags)
    resumed = run_fit(tmp_path / "part", "--trainer.max_steps=4", "--ckpt_path=last", *flags)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    terms = [k for k in a if k.startswith("loss_terms.")]
    assert "loss_terms.hist_g.count" in terms and a["loss_terms.hist_d.count"].item() == 8
    assert all(torch.equal(a[k], b[k]) for k in terms)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("generator."))
    # Switched on (or off) when resuming a run that trained without it: no missing or unexpected keys.
    run_fit(tmp_path / "off", "--trainer.max_steps=2")
    on = run_fit(tmp_path / "off", "--trainer.max_steps=3", "--ckpt_path=last", "--model.hist_avg_g=0.1")
    assert on.model.loss_terms.hist_g.count.item() == 1  # one update since: the average starts there
    off = run_fit(tmp_path / "part", "--trainer.max_steps=5", "--ckpt_path=last")
    assert off.trainer.global_step == 5 and off.model.loss_terms.hist_g is None


# -------------------------------------------------------------------------------- one-sided label smoothing
@pytest.mark.parametrize("loss", ["bce", "minimax", "lsgan"])
def test_one_sided_smoothing_makes_d_s_real_target_0_9_and_leaves_fake_at_0(loss):
    torch.manual_seed(0)
    model = tiny_gan(loss=loss, one_sided_smoothing=0.1)
    real, fake = torch.rand(8, 1, 28, 28) * 2 - 1, torch.rand(8, 1, 28, 28) * 2 - 1
    labels = torch.zeros(8, dtype=torch.long)
    _, logs = model.d_loss(real, labels, fake, None)
    r, f = model.discriminator(real).logits, model.discriminator(fake).logits
    if loss == "lsgan":
        expected = 0.5 * (r - 0.9).square().mean() + 0.5 * f.square().mean()
    else:
        p, q = torch.sigmoid(r), torch.sigmoid(f)  # -[0.9 log D(x) + 0.1 log(1 - D(x))] - log(1 - D(G(z)))
        expected = -(0.9 * p.log() + 0.1 * (1 - p).log()).mean() - (1 - q).log().mean()
    torch.testing.assert_close(logs["loss/d"], expected.detach())
    assert not torch.allclose(get_loss(loss).d(r, f), expected)  # without it, the target is 1


@pytest.mark.parametrize("loss", ["hinge", "wasserstein"])
def test_one_sided_smoothing_is_refused_for_losses_without_targets(loss):
    with pytest.raises(ValueError, match=rf"model\.one_sided_smoothing=0\.1 with model\.loss='{loss}'"):
        tiny_gan(loss=loss, one_sided_smoothing=0.1)
    assert (
        tiny_gan(loss="bce", soft_labels=0.1).hparams.one_sided_smoothing == 0
    )  # another key: class targets


# ------------------------------------------------------------------------------------ gradient-norm clipping
class GradNorms(Callback):
    """Total gradient norms with the generator step: ``seen`` by callbacks' on_before_optimizer_step (where
    DivergenceWatch reads them), ``used`` by the update (after the module's own hook, the last to touch them
    before the optimizer's step function runs)."""

    def __init__(self):
        self.seen, self.used = [], []

    @staticmethod
    def record(into: list, trainer, optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        name = "g" if optimizer is trainer.optimizers[0] else "d"
        into.append((name, trainer.global_step, torch.nn.utils.get_total_norm(grads).item()))

    def on_train_start(self, trainer, pl_module):
        module_hook = pl_module.on_before_optimizer_step

        def then_record(optimizer):
            module_hook(optimizer)
            self.record(self.used, trainer, optimizer)

        pl_module.on_before_optimizer_step = then_record

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.record(self.seen, trainer, optimizer)


def test_gradient_norms_are_clipped_from_the_start_step_and_divergence_watch_sees_them_unclipped(tmp_path):
    bound = 1e-3
    model = tiny_gan(grad_clip_g=bound, grad_clip_d=bound, grad_clip_g_from=2, grad_clip_d_from=3)
    norms = GradNorms()
    tiny_trainer(tmp_path, max_steps=5, callbacks=[norms]).fit(model, DigitsDataModule(batch_size=16))
    assert len(norms.used) == len(norms.seen) == 10
    for (name, step, used), (_, _, seen) in zip(norms.used, norms.seen, strict=True):
        assert seen > 10 * bound  # callbacks (DivergenceWatch) see the norm before clipping
        if step >= {"g": 2, "d": 3}[name]:
            assert used <= bound * (1 + 1e-5), (name, step, used)
        else:
            assert used == seen, (name, step)


# ----------------------------------------------------------------------------------------------- update order
@pytest.mark.parametrize(("order", "expected"), [("d_first", "DDDG"), ("g_first", "GDDD")])
def test_update_order_puts_g_s_update_before_or_after_the_n_critic_d_updates(tmp_path, order, expected):
    model, calls = tiny_gan(n_critic=3, update_order=order), []

    class Order(Callback):
        def on_train_start(self, trainer, pl_module):
            for name, opt in zip("GD", trainer.optimizers, strict=True):
                opt.register_step_post_hook(lambda *_, n=name: calls.append(n))

    trainer = tiny_trainer(tmp_path, max_steps=2, callbacks=[Order()])
    trainer.fit(model, DigitsDataModule(batch_size=16))
    assert "".join(calls) == expected * 2 and trainer.global_step == 2
    with pytest.raises(ValueError, match=r"model\.update_order='random' .*d_first or g_first"):
        tiny_gan(update_order="random")


# ---------------------------------------------------------------------------------------------- mode seeking
def test_mode_seeking_is_one_over_the_ratio_of_sample_to_latent_distances_for_pairs_of_one_class():
    a = 0.5
    model = GAN(ScaleG, LinearD, img_shape=(1, 2, 2), latent_dim=4, num_classes=3, mode_seeking=2.0)
    model.conditioning, model.g_takes_label = (
        "cgan",
        True,
    )  # ScaleG ignores labels; the pairing is what counts
    labels, z = model.training_noise(9, paired=True)
    assert torch.equal(labels[4:8], labels[:4])  # the second half asks for the first half's classes
    fake = model.generator(z)
    loss, logs = model.g_loss(fake, None, z)
    # G(z) = a z: |G(z1) - G(z2)| = a |z1 - z2| element by element, so the ratio is a.
    torch.testing.assert_close(logs["loss/ms"], torch.tensor(1 / (a + 1e-5)))
    torch.testing.assert_close(loss, logs["loss/g"] + 2.0 * logs["loss/ms"])
    (grad,) = torch.autograd.grad(loss - logs["loss/g"], model.generator.a)
    assert grad < 0  # G lowers the term by spreading its samples apart
    with pytest.raises(ValueError, match="at least 2 samples"):
        mode_seeking(fake[:1], z[:1])


# ------------------------------------------------------------------------------------------------------- R1
@pytest.mark.parametrize("every", [1, 3])
def test_r1_is_gamma_over_2_times_the_squared_input_gradient_on_real_samples_lazily_every_k_d_steps(every):
    torch.manual_seed(0)
    model = GAN(ScaleG, LinearD, img_shape=(1, 2, 2), latent_dim=4, r1_weight=4.0, r1_every=every)
    w = model.discriminator.linear.weight
    real, fake = torch.randn(8, 1, 2, 2), torch.randn(8, 1, 2, 2)
    assert torch.allclose(r1_penalty(lambda x: model.discriminator(x).logits, real), w.square().sum())
    applied = []
    for d_step in range(6):
        loss, logs = model.d_loss(real, torch.zeros(8, dtype=torch.long), fake, None, d_step)
        if "loss/r1" in logs:
            applied.append(d_step)
            torch.testing.assert_close(logs["loss/r1"], w.square().sum().detach())
            torch.testing.assert_close(loss, logs["loss/d"] + 4.0 / 2 * every * w.square().sum())
        else:
            torch.testing.assert_close(loss, logs["loss/d"])
    assert applied == list(range(0, 6, every))
    with pytest.raises(ValueError, match=r"model\.r1_weight=1\.0 .*without BatchNorm"):
        tiny_gan(r1_weight=1.0)


# ---------------------------------------------------------------------------------- settings that cannot work
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"feature_layer": 2},
            r"model\.feature_layer=2 .*DCGANDiscriminator has 2 blocks: choose penultimate or -2\.\.1",
        ),
        ({"feature_layer": "last"}, r"model\.feature_layer='last' .*penultimate or a block index"),
        ({"r1_every": 0}, r"model\.r1_every=0 .*integer >= 1"),
        ({"grad_clip_d": -1.0}, r"model\.grad_clip_d=-1\.0 .*>= 0"),
        ({"grad_clip_g_from": -1}, r"model\.grad_clip_g_from=-1 .*integer >= 0"),
        ({"hist_avg_g": -0.1}, r"model\.hist_avg_g=-0\.1 .*>= 0"),
        ({"mode_seeking": -1.0}, r"model\.mode_seeking=-1\.0 .*>= 0"),
        ({"one_sided_smoothing": 1.0}, r"model\.one_sided_smoothing=1\.0 must satisfy 0 <= s < 1"),
        ({"feature_matching_reduction": "max"}, r"model\.feature_matching_reduction='max' .*mean or sum"),
    ],
)
def test_bad_settings_fail_before_training_naming_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_gan(**kwargs)


def test_mode_seeking_with_batches_of_one_fails_before_training(tmp_path):
    trainer = tiny_trainer(tmp_path, max_steps=1)
    with pytest.raises(ValueError, match=r"model\.mode_seeking=1\.0 .*data\.batch_size=1 must be >= 2"):
        trainer.fit(tiny_gan(mode_seeking=1.0), DigitsDataModule(batch_size=1))
