"""GeneratorEMA: the average of G's weights, its schedule, its isolation from training, resume, sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from lightning_gan.callbacks import GANCheckpoint, GeneratorEMA
from lightning_gan.data import DigitsDataModule
from lightning_gan.generate import generate, load_gan
from lightning_gan.models import GAN
from lightning_gan.nets import DCGANDiscriminator, DCGANGenerator, apply_spectral_norm
from tests.conftest import fit as cli_fit
from tests.test_training_step import tiny_trainer


def tiny_gan(seed: int = 0) -> GAN:
    torch.manual_seed(seed)
    return GAN(
        generator=lambda z, s, k: DCGANGenerator(z, s, k, base_channels=8),
        discriminator=lambda s, k: DCGANDiscriminator(s, k, base_channels=8),
        img_shape=(1, 28, 28),
        latent_dim=8,
    )


def fit(model: GAN, root, max_steps: int, callbacks: list[Callback], **fit_kwargs) -> Trainer:
    checkpointing = any(isinstance(cb, GANCheckpoint) for cb in callbacks)
    trainer = tiny_trainer(root, max_steps, callbacks=callbacks, enable_checkpointing=checkpointing)
    trainer.fit(model, DigitsDataModule(batch_size=16, seed=0), **fit_kwargs)
    return trainer


def params(module: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


class RecordG(Callback):
    """G's parameters after every generator step; listed before GeneratorEMA, so it sees them first."""

    def __init__(self):
        self.trajectory: list[dict[str, Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.trajectory.append(params(pl_module.generator))


@pytest.mark.parametrize("spectral_norm_g", [False, True])
def test_ema_is_the_hand_computed_average_of_g_after_each_step(tmp_path, spectral_norm_g):
    model = tiny_gan()
    if spectral_norm_g:  # names become parametrizations.weight.original; u, v become buffers
        apply_spectral_norm(model.generator)
    expected = params(model.generator)  # the average starts as a copy of the initial G
    record = RecordG()
    fit(model, tmp_path, 4, [record, GeneratorEMA(decay=0.5)])
    for g in record.trajectory:
        expected = {name: 0.5 * expected[name] + 0.5 * g[name] for name in expected}
    torch.testing.assert_close(params(model.generator_ema), expected)
    assert not torch.equal(expected["project.bias"], record.trajectory[-1]["project.bias"])  # not a copy
    # Buffers are copied from G, not averaged.
    for (name, ema_buffer), (_, g_buffer) in zip(
        model.generator_ema.named_buffers(), model.generator.named_buffers(), strict=True
    ):
        assert torch.equal(ema_buffer, g_buffer), name


def test_start_step_copies_g_and_update_every_skips_steps(tmp_path):
    model = tiny_gan()
    record = RecordG()
    ema = GeneratorEMA(decay=0.9, start_step=2, update_every=2)
    fit(model, tmp_path, 4, [record, ema])
    w1, w2, _, w4 = record.trajectory
    # step 1 < start_step: copy; steps 2 and 4 average; step 3 is skipped
    expected = {name: 0.9 * (0.9 * w1[name] + 0.1 * w2[name]) + 0.1 * w4[name] for name in w1}
    torch.testing.assert_close(params(model.generator_ema), expected)
    assert ema.num_updates == 2


def test_training_weights_are_untouched_and_the_average_is_frozen_and_optimizer_free(tmp_path):
    # Each module is built right before its fit: the seed then also fixes the z each run draws.
    with_ema = tiny_gan(seed=1)
    trainer = fit(with_ema, tmp_path / "ema", 3, [GeneratorEMA(decay=0.5)])
    without = tiny_gan(seed=1)
    fit(without, tmp_path / "plain", 3, [])
    for net in ("generator", "discriminator"):
        a, b = getattr(with_ema, net).state_dict(), getattr(without, net).state_dict()
        assert all(torch.equal(a[key], b[key]) for key in b), net
    # Only generator_ema.* is added to the module's state: no average of D.
    added = with_ema.state_dict().keys() - without.state_dict().keys()
    assert added == {f"generator_ema.{key}" for key in without.generator.state_dict()}
    assert not any(p.requires_grad for p in with_ema.generator_ema.parameters())
    in_optimizers = {
        id(p) for opt in trainer.optimizers for group in opt.param_groups for p in group["params"]
    }
    assert in_optimizers and not in_optimizers & {id(p) for p in with_ema.generator_ema.parameters()}


class AtTrainStart(Callback):
    """What a resumed run starts from: the average after the checkpoint was loaded, and the update count."""

    def __init__(self, ema: GeneratorEMA):
        self.ema = ema

    def on_train_start(self, trainer, pl_module):
        self.weights = {k: v.clone() for k, v in pl_module.generator_ema.state_dict().items()}
        self.num_updates = self.ema.num_updates


def test_resume_restores_the_average_and_the_update_count_and_goes_on(tmp_path):
    model, ema = tiny_gan(), GeneratorEMA(decay=0.9)
    fit(model, tmp_path, 4, [ema, GANCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=2)])
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert (
        ckpt["global_step"] == 4 and ckpt["callbacks"]["GeneratorEMA"]["num_updates"] == 4 == ema.num_updates
    )
    prefix = "generator_ema."
    saved = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    # The checkpoint was written after the step-4 update, not before it.
    assert saved.keys() == model.generator_ema.state_dict().keys()
    assert all(torch.equal(v, model.generator_ema.state_dict()[k]) for k, v in saved.items())

    resumed_ema = GeneratorEMA(decay=0.9)
    start = AtTrainStart(resumed_ema)
    resumed = tiny_gan(seed=7)  # other initial weights: only the checkpoint can make the average equal
    trainer = fit(resumed, tmp_path, 6, [start, resumed_ema], ckpt_path=tmp_path / "last.ckpt")
    assert all(torch.equal(start.weights[k], v) for k, v in saved.items())
    assert start.num_updates == 4
    assert trainer.global_step == 6 and resumed_ema.num_updates == 6
    assert any(not torch.equal(resumed.generator_ema.state_dict()[k], v) for k, v in saved.items())


def test_sample_and_generate_use_the_average_unless_told_not_to(tmp_path):
    # load_gan rebuilds the module from the checkpoint's hyperparameters, which the CLI writes as config.
    ema = ["--trainer.callbacks+=lightning_gan.callbacks.GeneratorEMA", "--trainer.callbacks.decay=0.5"]
    cli = cli_fit(tmp_path, "--trainer.max_steps=2", *ema)
    ckpt = str(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt")
    loaded = load_gan(ckpt)
    assert loaded.generator_ema is not None
    trained = cli.model.generator_ema.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in loaded.generator_ema.state_dict().items())

    # The z that generate(seed=0) draws.
    z = torch.randn(8, loaded.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        by_ema = loaded.generator_ema.eval()(z, None)
        by_g = loaded.generator.eval()(z, None)
    assert not torch.equal(by_ema, by_g)
    assert torch.equal(loaded.sample(8, z=z), by_ema)
    assert torch.equal(loaded.sample(8, z=z, ema=False), by_g)

    default = np.load(generate(ckpt, num_samples=8, output=str(tmp_path / "ema.npz")))
    plain = np.load(generate(ckpt, num_samples=8, output=str(tmp_path / "g.npz"), no_ema=True))
    np.testing.assert_array_equal(default["images"], by_ema.numpy())
    np.testing.assert_array_equal(plain["images"], by_g.numpy())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"decay": 0.0}, r"GeneratorEMA\.decay=0\.0 is not allowed: must be in \(0, 1\)"),
        ({"decay": 1.0}, r"GeneratorEMA\.decay=1\.0 is not allowed"),
        ({"start_step": -1}, r"GeneratorEMA\.start_step=-1 is not allowed: must be an integer >= 0"),
        ({"update_every": 0}, r"GeneratorEMA\.update_every=0 is not allowed: must be an integer >= 1"),
    ],
)
def test_bad_settings_name_the_key_the_value_and_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GeneratorEMA(**kwargs)


def test_a_module_without_a_generator_is_refused_before_training():
    class Classifier(LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(4, 2)

    with pytest.raises(TypeError, match=r"GeneratorEMA needs a GAN module .* Classifier lacks them"):
        GeneratorEMA().setup(Trainer(logger=False), Classifier(), "fit")


def test_resuming_with_other_settings_keeps_the_new_ones_and_says_so():
    saved = GeneratorEMA(decay=0.9, update_every=2).state_dict() | {"num_updates": 3}
    ema = GeneratorEMA(decay=0.99, update_every=2)
    with pytest.warns(UserWarning, match=r"decay=0\.9 -> 0\.99$"):
        ema.load_state_dict(saved)
    assert (ema.decay, ema.update_every, ema.num_updates) == (0.99, 2, 3)


def test_ema_switched_on_for_a_resumed_run_starts_from_the_checkpoints_g(tmp_path):
    checkpoint = GANCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=2)
    fit(tiny_gan(), tmp_path, 2, [checkpoint])
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert not any(k.startswith("generator_ema.") for k in saved["state_dict"])

    model = tiny_gan(seed=1)
    trainer = fit(model, tmp_path / "resumed", 2, [GeneratorEMA(decay=0.5)], ckpt_path=tmp_path / "last.ckpt")
    assert trainer.global_step == 2  # nothing left to train: the average is the checkpoint's G
    expected = {
        k[len("generator.") :]: v for k, v in saved["state_dict"].items() if k.startswith("generator.")
    }
    for name, value in model.generator_ema.state_dict().items():
        torch.testing.assert_close(value, expected[name])
