"""D as a classifier (ACGAN, SSGAN): BatchNorm statistics of real images for evaluation, `lightning-gan test`,
and a checkpoint's D loaded as a plain classifier."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_gan.cli import run
from lightning_gan.generate import load_discriminator
from tests.conftest import REPO, TINY


@pytest.fixture(scope="module")
def ssgan(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssgan")
    cli = run(["fit", "--config", str(REPO / "configs" / "ssgan.yaml"), f"--trainer.default_root_dir={root}",
               "--trainer.max_steps=20", "--trainer.callbacks=[]", *TINY])  # fmt: skip
    return cli, Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"


def first_batchnorm_input_mean(d: nn.Module, images: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """D's first BatchNorm layer and the per-channel mean of its inputs over ``images`` (eval mode)."""
    bn = next(m for m in d.modules() if isinstance(m, nn.BatchNorm2d))
    seen = []
    handle = bn.register_forward_pre_hook(lambda module, args: seen.append(args[0].mean(dim=(0, 2, 3))))
    d.eval()
    with torch.no_grad():
        for batch in images.split(256):  # equal batches: the mean of batch means is the mean
            d(batch)
    handle.remove()
    return bn, torch.stack(seen).mean(0)


def test_d_is_evaluated_with_batchnorm_statistics_of_real_training_images(ssgan):
    """Also what every checkpoint holds for D: the export test below reads them from one."""
    cli, _ = ssgan
    model, data = cli.model, cli.datamodule
    real = data.real_images("train", limit=model.BN_IMAGES)
    bn, real_mean = first_batchnorm_input_mean(model.discriminator, real)
    with torch.no_grad():  # as training leaves them: statistics of other (mostly generated) images
        bn.running_mean.fill_(5.0)
    cli.trainer.validate(model, data)  # re-estimates before the pass
    torch.testing.assert_close(bn.running_mean, real_mean, rtol=1e-4, atol=1e-5)
    assert 0 <= cli.trainer.callback_metrics["val/class_acc"] <= 1


def test_lightning_gan_test_reports_the_class_head_accuracy_on_the_test_split(ssgan, tmp_path):
    _, ckpt = ssgan
    tested = run(["test", "--config", str(REPO / "configs" / "ssgan.yaml"), f"--ckpt_path={ckpt}",
                  f"--trainer.default_root_dir={tmp_path}", "--trainer.callbacks=[]", *TINY])  # fmt: skip
    accuracy = float(tested.trainer.callback_metrics["test/class_acc"])
    classifier = load_discriminator(ckpt)  # the checkpoint's D, with real-image statistics
    images, labels = tested.datamodule.real_images("test"), tested.datamodule.split_labels("test")
    with torch.no_grad():
        logits = classifier(images)
    assert logits.shape == (len(images), 10) and not classifier.training
    assert accuracy == pytest.approx((logits.argmax(1) == labels).double().mean().item(), abs=1e-6)


def test_only_a_d_with_a_class_head_loads_as_a_classifier(tmp_path):
    dcgan = str(REPO / "configs" / "dcgan.yaml")
    cli = run(["fit", "--config", dcgan, f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=1",
               "--trainer.callbacks=[]", *TINY])  # fmt: skip
    with pytest.raises(ValueError, match=r"its D has no class head .*'none'"):
        load_discriminator(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt")
