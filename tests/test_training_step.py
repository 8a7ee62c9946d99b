"""The shared training step: n_critic, TTUR, clipping, spectral norm, schedulers, generator-step counting."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from torch.nn.utils import parametrize

from lightning_gan.callbacks import GANCheckpoint
from lightning_gan.data import DigitsDataModule
from lightning_gan.models import GAN
from lightning_gan.models.lifecycle import OPTIMIZERS
from lightning_gan.nets import DCGANDiscriminator, DCGANGenerator
from tests.conftest import REPO, generator_state, whole_and_resumed


def tiny_gan(d_norm: str = "batch", **kwargs) -> GAN:
    kwargs.setdefault("generator", lambda z, s, k: DCGANGenerator(z, s, k, base_channels=8))
    kwargs.setdefault("discriminator", lambda s, k: DCGANDiscriminator(s, k, base_channels=8, norm=d_norm))
    return GAN(img_shape=(1, 28, 28), latent_dim=8, **kwargs)


def tiny_trainer(tmp_path, max_steps: int, **kwargs) -> Trainer:
    kwargs.setdefault("enable_checkpointing", False)
    return Trainer(
        default_root_dir=tmp_path,
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        **kwargs,
    )


class StepCounter(Callback):
    """Counts the torch optimizer steps of G and D with the optimizers' own post-step hooks."""

    def __init__(self):
        self.g_steps = self.d_steps = 0

    def on_train_start(self, trainer, pl_module):
        opt_g, opt_d = trainer.optimizers
        opt_g.register_step_post_hook(lambda *_: setattr(self, "g_steps", self.g_steps + 1))
        opt_d.register_step_post_hook(lambda *_: setattr(self, "d_steps", self.d_steps + 1))


@pytest.mark.parametrize("n_critic", [1, 5])
def test_n_critic_d_steps_per_g_step_each_on_its_own_dataloader_batch(tmp_path, n_critic):
    model = tiny_gan(n_critic=n_critic)
    dm = DigitsDataModule(batch_size=16, seed=3)
    calls, reals = [], []
    d_step, g_step = model.discriminator_step, model.generator_step

    def record_d(opt, real, labels, *rest):
        calls.append("D")
        reals.append(real.clone())
        return d_step(opt, real, labels, *rest)

    def record_g(*args):
        calls.append("G")
        return g_step(*args)

    counter = StepCounter()
    with (
        mock.patch.object(model, "discriminator_step", side_effect=record_d),
        mock.patch.object(model, "generator_step", side_effect=record_g),
    ):
        trainer = tiny_trainer(tmp_path, max_steps=3, callbacks=[counter])
        trainer.fit(model, dm)

    assert calls == (["D"] * n_critic + ["G"]) * 3
    assert counter.d_steps == n_critic * 3 and counter.g_steps == 3
    assert trainer.global_step == 3  # generator steps only
    # The real batches D saw are, in order, the DataLoader's own consecutive batches: no batch reused or cut.
    loader = DigitsDataModule(batch_size=16, seed=3).train_dataloader()
    expected = [images for (images, _), _ in zip(loader, range(3 * n_critic), strict=False)]
    assert len(reals) == len(expected) == 3 * n_critic
    for seen, want in zip(reals, expected, strict=True):
        assert torch.equal(seen, want)
    assert all(not torch.equal(a, b) for i, a in enumerate(reals) for b in reals[:i])  # all different batches


def test_ttur_optimizers_hold_their_learning_rates_and_networks(tmp_path):
    model = tiny_gan(lr_g=1e-4, lr_d=4e-4, betas_g=(0.0, 0.9), betas_d=(0.5, 0.99), optimizer_d="rmsprop")
    (opt_g, opt_d) = (config["optimizer"] for config in model.configure_optimizers())
    assert isinstance(opt_g, torch.optim.Adam) and isinstance(opt_d, torch.optim.RMSprop)
    assert opt_g.param_groups[0]["lr"] == 1e-4 and opt_g.param_groups[0]["betas"] == (0.0, 0.9)
    assert opt_d.param_groups[0]["lr"] == 4e-4
    assert {id(p) for p in opt_g.param_groups[0]["params"]} == {id(p) for p in model.generator.parameters()}
    assert {id(p) for p in opt_d.param_groups[0]["params"]} == {
        id(p) for p in model.discriminator.parameters()
    }


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_each_optimizer_name_builds_that_optimizer_for_one_network_with_its_weight_decay(name):
    for net in ("g", "d"):
        asked_for = {f"optimizer_{net}": name, f"weight_decay_{net}": 0.01, f"betas_{net}": (0.2, 0.9)}
        model = tiny_gan(**asked_for)
        optimizers = dict(zip("gd", (c["optimizer"] for c in model.configure_optimizers()), strict=True))
        asked, rest = optimizers[net], optimizers["d" if net == "g" else "g"]
        assert type(asked) is OPTIMIZERS[name] and type(rest) is torch.optim.Adam
        assert asked.param_groups[0]["weight_decay"] == 0.01 and rest.param_groups[0]["weight_decay"] == 0
        assert name == "rmsprop" or asked.param_groups[0]["betas"] == (0.2, 0.9)


def test_an_unknown_optimizer_or_negative_weight_decay_is_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"model\.optimizer_d='sgd' .*adam, adamw, adamax, radam, rmsprop"):
        tiny_gan(optimizer_d="sgd").configure_optimizers()
    with pytest.raises(ValueError, match=r"model\.weight_decay_g=-0\.1 .*>= 0"):
        tiny_gan(weight_decay_g=-0.1)


def test_lr_zero_freezes_that_network_only(tmp_path):
    model = tiny_gan(lr_d=0.0)
    d_before = {k: v.clone() for k, v in model.discriminator.named_parameters()}
    g_before = {k: v.clone() for k, v in model.generator.named_parameters()}
    tiny_trainer(tmp_path, max_steps=2).fit(model, DigitsDataModule(batch_size=16))
    assert all(torch.equal(v, d_before[k]) for k, v in model.discriminator.named_parameters())
    assert any(not torch.equal(v, g_before[k]) for k, v in model.generator.named_parameters())


def test_weight_clipping_bounds_every_d_weight(tmp_path):
    model = tiny_gan(loss="wasserstein", clip_value=0.01, optimizer_d="rmsprop", lr_d=0.5)
    tiny_trainer(tmp_path, max_steps=2).fit(model, DigitsDataModule(batch_size=16))
    for name, p in model.discriminator.named_parameters():
        assert p.abs().max() <= 0.01, name


def test_spectral_norm_wraps_every_conv_and_linear_of_d_and_trains(tmp_path):
    model = tiny_gan(spectral_norm=True, d_norm="none", loss="hinge")
    layers = [m for m in model.discriminator.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
    tiny_trainer(tmp_path, max_steps=2).fit(model, DigitsDataModule(batch_size=16))
    assert trainer_ok(model)


def test_spectral_norm_g_wraps_every_weight_of_a_conditional_g_only_and_resumes_bit_exact(run_fit, tmp_path):
    model = tiny_gan(spectral_norm_g=True, conditioning="cgan", num_classes=10)
    weights = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear, torch.nn.Embedding)
    layers = [m for m in model.generator.modules() if isinstance(m, weights)]
    assert any(isinstance(m, torch.nn.Embedding) for m in layers)  # the label's way in, too
    assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert not any(parametrize.is_parametrized(m) for m in model.discriminator.modules())
    config = str(REPO / "configs" / "cdcgan.yaml")
    fit_fn = lambda root, *a: run_fit(root, *a, config=config)  # noqa: E731
    whole, resumed = whole_and_resumed(fit_fn, tmp_path, "--model.spectral_norm_g=true")
    a, b = generator_state(whole), generator_state(resumed)
    assert any(".parametrizations.weight.original" in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a) and trainer_ok(whole.model)


def trainer_ok(model: GAN) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("key", ["gp_weight", "spectral_norm"])
def test_batchnorm_in_d_with_gp_or_sn_fails_before_training_naming_both_keys(key):
    value = 10.0 if key == "gp_weight" else True
    with pytest.raises(ValueError, match=rf"model\.{key}=.*model\.discriminator\.init_args\.norm"):
        tiny_gan(**{key: value})


def test_gradient_penalty_trains_without_batchnorm(tmp_path):
    model = tiny_gan(loss="wasserstein", gp_weight=10.0, d_norm="layer", n_critic=2, betas_d=(0.0, 0.9))
    trainer = tiny_trainer(tmp_path, max_steps=2)
    trainer.fit(model, DigitsDataModule(batch_size=16))
    assert torch.isfinite(trainer.callback_metrics["loss/gp"]) and trainer_ok(model)


def test_schedulers_step_once_per_generator_step(tmp_path):
    model = tiny_gan(
        n_critic=3,
        scheduler_g=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
        scheduler_d=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1),
    )
    trainer = tiny_trainer(tmp_path, max_steps=4)
    trainer.fit(model, DigitsDataModule(batch_size=16))
    opt_g, opt_d = trainer.optimizers
    assert opt_g.param_groups[0]["lr"] == pytest.approx(2e-4 * 0.5**4)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(2e-4 * 0.1**2)


def test_sample_returns_images_in_range_and_keeps_train_mode():
    model = tiny_gan()
    images = model.sample(5)
    assert images.shape == (5, 1, 28, 28) and images.min() >= -1 and images.max() <= 1
    assert model.generator.training
    z = torch.randn(3, 8)
    assert torch.equal(model.sample(3, z=z), model.sample(3, z=z))


def test_training_step_refuses_ungrouped_batches(tmp_path):
    model = tiny_gan(n_critic=2)
    loader = torch.utils.data.DataLoader(DigitsDataModule(batch_size=16).train_dataset, batch_size=16)
    with pytest.raises(TypeError, match=r"model\.n_critic=2"):
        tiny_trainer(tmp_path, max_steps=1).fit(model, loader)


class CrashAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            raise RuntimeError("boom")


def test_a_crash_writes_on_exception_ckpt_and_never_last_ckpt(tmp_path):
    checkpoint = GANCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_last=True, save_top_k=-1)
    trainer = tiny_trainer(
        tmp_path, max_steps=10, callbacks=[CrashAt(3), checkpoint], enable_checkpointing=True
    )
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(tiny_gan(), DigitsDataModule(batch_size=16))
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] == 2
    assert torch.load(tmp_path / "on_exception.ckpt", weights_only=False)["global_step"] == 3


class PoisonAt(Callback):
    """Writes a NaN into G's weights right after generator step ``step`` (a diverged update)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, *args):
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.generator.parameters()).fill_(float("nan"))


def test_weights_with_nan_never_replace_a_good_checkpoint(tmp_path):
    checkpoint = GANCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_last=True, save_top_k=-1)
    trainer = tiny_trainer(
        tmp_path, max_steps=5, callbacks=[PoisonAt(3), checkpoint], enable_checkpointing=True
    )
    trainer.fit(tiny_gan(), DigitsDataModule(batch_size=16))
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert last["global_step"] == 2  # steps 4 and the end (5) had NaN weights: not saved
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["epoch=0-step=2.ckpt", "last.ckpt"]
