"""Conditioning x loss x Lipschitz handling on the one training step; the named presets and their configs."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer

from lightning_gan import models
from lightning_gan.cli import run
from lightning_gan.data import DigitsDataModule
from lightning_gan.models import ACGAN, CGAN, GAN, SSGAN
from lightning_gan.nets import DCGANDiscriminator, DCGANGenerator, DOut, MLPDiscriminator, MLPGenerator
from tests.conftest import REPO

PRESETS = ["dcgan", "cgan", "cdcgan", "acgan", "ssgan", "wgan", "wgan_gp", "wgan_sn"]
PRESET_CLASSES = [models.DCGAN, CGAN, models.CDCGAN, ACGAN, SSGAN, models.WGAN, models.WGANGP, models.WGANSN]


def finite_losses(trainer: Trainer) -> bool:
    losses = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("loss/")}
    return bool(losses) and all(math.isfinite(float(v)) for v in losses.values())


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_config_trains_five_generator_steps_with_finite_losses(tmp_path, preset):
    cli = run([
        "fit", "--config", str(REPO / "configs" / f"{preset}.yaml"), f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_steps=5", "--data.batch_size=32", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--model.n_critic=2", "--model.lr_g=1e-4",
        "--model.loss=hinge",
    ])  # fmt: skip
    assert cli.trainer.global_step == 5 and finite_losses(cli.trainer)
    hp = cli.model.hparams  # the same keys work on every preset
    assert (hp.n_critic, hp.lr_g, hp.loss) == (2, 1e-4, "hinge")
    assert Path(cli.trainer.log_dir, "samples", "step_000005.png").is_file()


def test_a_preset_without_a_root_dir_writes_under_runs_slash_its_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = run(["fit", "--config", str(REPO / "configs" / "wgan.yaml"), "--trainer.max_steps=1",
               "--data.batch_size=32", "--trainer.enable_progress_bar=false"])  # fmt: skip
    assert Path(cli.trainer.log_dir).resolve().is_relative_to(tmp_path / "runs" / "wgan")


def test_no_preset_overrides_the_training_step():
    step_methods = ["training_step", "discriminator_step", "generator_step", "d_loss", "g_loss", "scores"]
    for cls in PRESET_CLASSES:
        assert issubclass(cls, GAN)
        for name in step_methods:
            assert getattr(cls, name) is getattr(GAN, name), (cls.__name__, name)
        own = set(vars(cls)) - {"__module__", "__qualname__", "__doc__", "__init__", "__firstlineno__",
                                "__static_attributes__"}  # fmt: skip
        assert not own, (cls.__name__, own)  # a preset changes defaults only


def tiny(conditioning: str, loss: str, lipschitz: str) -> GAN:
    d_norm = "none" if lipschitz == "sn" else "layer"
    return GAN(
        generator=partial(DCGANGenerator, base_channels=8),
        discriminator=partial(DCGANDiscriminator, base_channels=8, norm=d_norm),
        num_classes=10, latent_dim=8, conditioning=conditioning, loss=loss,
        gp_weight=10.0 if lipschitz == "gp" else 0.0, spectral_norm=lipschitz == "sn",
        clip_value=0.05 if lipschitz == "clip" else 0.0,
    )  # fmt: skip


@pytest.mark.parametrize("lipschitz", ["none", "gp", "sn", "clip"])
@pytest.mark.parametrize("loss", ["bce", "lsgan", "hinge", "wasserstein"])
@pytest.mark.parametrize("conditioning", ["none", "cgan", "acgan", "ssgan"])
def test_any_conditioning_loss_and_lipschitz_handling_trains(tmp_path, conditioning, loss, lipschitz):
    torch.manual_seed(0)
    trainer = Trainer(
        max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", limit_val_batches=0,
    )  # fmt: skip
    model = tiny(conditioning, loss, lipschitz)
    trainer.fit(model, DigitsDataModule(batch_size=8, num_labelled=20 if conditioning == "ssgan" else None))
    assert trainer.global_step == 2 and finite_losses(trainer)
    if conditioning in ("acgan", "ssgan"):
        assert "loss/class_real" in trainer.callback_metrics


def test_a_cgan_sample_changes_with_the_label_and_d_depends_on_it():
    model = CGAN(num_classes=10).eval()
    z = torch.randn(1, 100).expand(2, -1)
    with torch.no_grad():
        images = model.sample(2, torch.tensor([3, 7]), z=z)
        assert not torch.allclose(images[0], images[1])
        x = images[:1].expand(2, -1, -1, -1)
        logits = model.discriminator(x, torch.tensor([3, 7])).logits
    assert not torch.allclose(logits[0], logits[1])
    assert isinstance(model.generator, MLPGenerator) and isinstance(model.discriminator, MLPDiscriminator)


def test_acgan_class_head_gets_gradient_from_real_and_from_generated_images():
    model = ACGAN(
        num_classes=10, latent_dim=8, generator=partial(DCGANGenerator, base_channels=8),
        discriminator=partial(DCGANDiscriminator, base_channels=8), fake_class_loss=True,
    )  # fmt: skip
    head = list(model.discriminator.classifier.parameters())
    real, labels = DigitsDataModule().real_images("train")[:8], torch.arange(8)
    fake_labels = (torch.arange(8) + 3) % 10
    fake = model.generator(torch.randn(8, 8), fake_labels)
    for images, targets in ((real, labels), (fake.detach(), fake_labels)):
        model.zero_grad()
        model.class_loss(model.discriminator(images).class_logits, targets).backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head)
    _, d_logs = model.d_loss(real, labels, fake.detach(), fake_labels)
    assert {"loss/class_real", "loss/class_fake"} <= set(d_logs)  # both join D's objective
    model.hparams.fake_class_loss = False  # the preset's default: D's classifier learns from real images only
    assert "loss/class_fake" not in model.d_loss(real, labels, fake.detach(), fake_labels)[1]
    assert ACGAN(num_classes=10).hparams.fake_class_loss is False
    model.zero_grad()
    g_loss, g_logs = model.g_loss(fake, fake_labels)
    g_loss.backward()
    assert "loss/g_class" in g_logs  # and G's
    assert all(p.grad is not None for p in model.generator.parameters())


def test_soft_class_targets_are_used_when_asked():
    logits, labels = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    for smoothing in (0.0, 0.2):
        model = ACGAN(num_classes=3, soft_labels=smoothing, img_shape=(1, 28, 28))
        targets = torch.full((1, 3), smoothing / 3)
        targets[0, 0] += 1 - smoothing
        expected = -(targets * F.log_softmax(logits, dim=1)).sum()
        assert model.class_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)


class FixedLogits(torch.nn.Module):
    """A stand-in D returning given class logits for real (first call) and fake (second call) batches."""

    def __init__(self, real_logits, fake_logits):
        super().__init__()
        self.outputs = [real_logits, fake_logits]

    def forward(self, x, labels=None):
        logits = self.outputs.pop(0)
        return DOut(logits=torch.zeros(len(logits)), class_logits=logits, features=logits)


def test_ssgan_loss_equals_the_formula_and_never_uses_hidden_labels():
    real_logits = torch.tensor([[1.0, -0.5, 0.3], [0.2, 2.0, -1.0], [-0.7, 0.1, 0.9]], dtype=torch.float64)
    fake_logits = torch.tensor([[0.5, 0.5, -2.0], [-1.0, 0.0, 1.5]], dtype=torch.float64)
    labels = torch.tensor([0, -1, 2])  # the second image's label is hidden
    w = 0.6
    model = SSGAN(num_classes=3, unsupervised_weight=w, img_shape=(1, 28, 28))
    model.discriminator = FixedLogits(real_logits, fake_logits)
    loss, _ = model.d_loss(torch.zeros(3, 1, 28, 28), labels, torch.zeros(2, 1, 28, 28), None)

    def lse(row):
        return np.log(np.exp(row).sum())

    r, f = real_logits.numpy(), fake_logits.numpy()
    label_loss = np.mean([lse(r[0]) - r[0, 0], lse(r[2]) - r[2, 2]])  # only the known labels
    # D(x) = Z/(Z+1): L_unlabel = -E log D(x) = E log(1 + 1/Z); L_fake = -E log(1 - D(G(z))) = E log(1 + Z)
    unlabel = np.mean([np.log1p(np.exp(-lse(row))) for row in r])
    fake = np.mean([np.log1p(np.exp(lse(row))) for row in f])
    assert loss.item() == pytest.approx(label_loss + w / 2 * (unlabel + fake), rel=1e-9)
    fake_scores = torch.tensor([lse(row) for row in f])
    g_loss = SSGAN(num_classes=3, img_shape=(1, 28, 28)).adversarial_loss.g(fake_scores)
    assert g_loss.item() == pytest.approx(-fake, rel=1e-6)  # L_G = -L_fake


def test_conditioning_on_unlabelled_data_fails_naming_the_key():
    with pytest.raises(ValueError, match=r"model\.conditioning='acgan'.*num_classes=0"):
        ACGAN(num_classes=0)


def test_conditional_grids_and_generate_ask_for_classes(tmp_path, capsys):
    from PIL import Image

    cli = run([
        "fit", "--config", str(REPO / "configs" / "cgan.yaml"), f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_steps=1", "--data.batch_size=32", "--trainer.enable_progress_bar=false",
    ])  # fmt: skip
    run_dir = Path(cli.trainer.log_dir)
    assert Image.open(run_dir / "samples" / "step_000001.png").size == (16 * 32, 10 * 32)  # a row per class
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    out = tmp_path / "per_class.npz"
    run(["generate", f"--ckpt_path={ckpt}", "--per_class=3", f"--output={out}"])
    with np.load(out) as data:
        assert data["images"].shape == (30, 1, 28, 28)
        assert data["labels"].dtype == np.int64 and data["labels"].tolist() == [
            k for k in range(10) for _ in "abc"
        ]
    assert Image.open(out.with_suffix(".png")).size == (3 * 32, 10 * 32)
    one = tmp_path / "four.npz"
    run(["generate", f"--ckpt_path={ckpt}", "--class_label=4", "--num_samples=5", f"--output={one}"])
    assert np.load(one)["labels"].tolist() == [4] * 5
    with pytest.raises(SystemExit):
        run(["generate", f"--ckpt_path={ckpt}", "--class_label=10", f"--output={one}"])
    assert "class_label=10 is not allowed: classes are 0..9" in capsys.readouterr().err


def test_an_unconditional_model_cannot_be_asked_for_a_class(tmp_path, capsys):
    cli = run([
        "fit", "--config", str(REPO / "configs" / "dcgan.yaml"), f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_steps=1", "--data.batch_size=32", "--trainer.enable_progress_bar=false",
        "--model.generator.init_args.base_channels=8", "--model.discriminator.init_args.base_channels=8",
    ])  # fmt: skip
    ckpt = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit):
        run(["generate", f"--ckpt_path={ckpt}", "--per_class=2", f"--output={tmp_path / 'x.npz'}"])
    assert "per_class=2 is not allowed: the model is unconditional" in capsys.readouterr().err


@pytest.mark.parametrize("label_input", ["concat", "projection"])
@pytest.mark.parametrize("g_conditioning", ["concat", "multiply", "cbn"])
def test_every_way_of_feeding_the_label_trains(g_conditioning, label_input):
    torch.manual_seed(0)
    model = GAN(
        generator=partial(DCGANGenerator, base_channels=8, conditioning=g_conditioning),
        discriminator=partial(DCGANDiscriminator, base_channels=8, label_input=label_input),
        num_classes=10, latent_dim=8, conditioning="cgan",
    )  # fmt: skip
    trainer = Trainer(
        max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(model, DigitsDataModule(batch_size=8))
    assert trainer.global_step == 2 and finite_losses(trainer)


def test_cgan_on_data_with_hidden_labels_fails_before_training(tmp_path):
    trainer = Trainer(max_steps=1, logger=False, enable_checkpointing=False, accelerator="cpu")
    with pytest.raises(ValueError, match=r"model\.conditioning='cgan'.*data\.num_labelled=100"):
        trainer.fit(tiny("cgan", "bce", "none"), DigitsDataModule(batch_size=8, num_labelled=100))
    assert trainer.global_step == 0


def test_both_acgan_configs_build_the_same_loss(tmp_path):
    """`--config acgan.yaml` and `--config cdcgan.yaml --model.conditioning acgan` train the same objective:
    one default for the fake-class term everywhere."""
    from lightning_gan.cli import run
    from tests.conftest import TINY

    settings = {}
    for name, extra in (("acgan", []), ("cdcgan", ["--model.conditioning=acgan"])):
        cli = run(["fit", "--config", str(REPO / "configs" / f"{name}.yaml"), "--trainer.max_steps=1",
                   f"--trainer.default_root_dir={tmp_path / name}", *TINY, *extra])  # fmt: skip
        settings[name] = {k: cli.model.hparams[k] for k in ("conditioning", "fake_class_loss", "class_weight",
                                                             "soft_labels", "loss")}  # fmt: skip
    assert settings["acgan"] == settings["cdcgan"]
    assert settings["acgan"]["fake_class_loss"] is False
