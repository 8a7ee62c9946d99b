"""A GAN built in Python, not by the CLI (as notebooks/quickstart.ipynb builds them), checkpoints like one."""

from __future__ import annotations

import functools

import torch
from lightning import Trainer

from lightning_gan.data import DigitsDataModule, MixedDataModule
from lightning_gan.generate import load_gan
from lightning_gan.models import CDCGAN
from lightning_gan.nets import DCGANDiscriminator, DCGANGenerator


def test_a_gan_built_in_python_loads_weights_only_and_feeds_a_mixed_data_module(tmp_path):
    data = DigitsDataModule(batch_size=16, seed=0)
    model = CDCGAN(
        generator=functools.partial(DCGANGenerator, base_channels=8),
        discriminator=functools.partial(DCGANDiscriminator, base_channels=8),
        scheduler_g=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=5),
        img_shape=data.img_shape,
        num_classes=data.num_classes,
        latent_dim=8,
    )
    trainer = Trainer(
        max_steps=2, default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, data)
    ckpt = tmp_path / "g.ckpt"
    trainer.save_checkpoint(ckpt)

    hparams = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]  # no class objects
    assert hparams["generator"] == {
        "class_path": "lightning_gan.nets.dcgan.DCGANGenerator",
        "init_args": {"base_channels": 8},
    }
    assert hparams["scheduler_g"]["init_args"] == {"step_size": 5}
    assert hparams["_class_path"] == "lightning_gan.models.presets.CDCGAN"
    loaded = load_gan(ckpt)
    labels = torch.arange(10)
    samples = [
        gan.eval().sample(10, labels, generator=torch.Generator().manual_seed(0)) for gan in (loaded, model)
    ]
    assert torch.equal(*samples)
    assert loaded.conditioning == "cgan"
    # readable, and it trained on none of these validation and test digits
    MixedDataModule(DigitsDataModule(batch_size=16, seed=0, train_per_class=10), str(ckpt))
