"""How a GAN's discriminator is judged as a classifier (ACGAN, SSGAN): its class head on real validation and
test images, with BatchNorm statistics of real images only."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_gan.nets.layers import estimate_batchnorm_

Batch = tuple[Tensor, Tensor]


class ClassHeadEvaluation(LightningModule):
    """Validation (``val/class_acc``), test (``test/class_acc``, ``lightning-gan test``) and export of D's
    class head, for the GAN modes that have one.

    In training D runs on n_critic real and n_critic + 1 generated batches per generator step, so its
    BatchNorm running statistics are mostly those of generated images. Evaluated with them, real images are
    normalised wrongly and the class head reads worse than its weights allow. So before every validation and
    test pass, and in every checkpoint (what :func:`lightning_gan.generate.load_discriminator` exports), D's
    statistics are estimated anew from real training images only (:attr:`BN_IMAGES` of them, in order: no
    random draw). Training itself uses batch statistics and is unchanged.
    """

    #: How many real training images D's BatchNorm statistics for evaluation are estimated from.
    BN_IMAGES = 2048

    class_head: int
    discriminator: nn.Module

    def _class_metrics(self, num_classes: int) -> None:
        def metric() -> MulticlassAccuracy | None:
            return MulticlassAccuracy(num_classes, average="micro") if self.class_head else None

        self.val_class_accuracy, self.test_class_accuracy = metric(), metric()

    @torch.no_grad()
    def estimate_d_statistics(self) -> bool:
        """Sets D's BatchNorm running statistics to those of real training images; False when there is no
        class head, no BatchNorm in D, or no data module with real images."""
        data = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if not self.class_head or not hasattr(data, "real_images"):
            return False
        images = data.real_images("train", limit=self.BN_IMAGES)
        batches = (batch.to(self.device) for batch in images.split(256))
        return estimate_batchnorm_(self.discriminator, self.discriminator, batches)

    def on_validation_start(self) -> None:
        self.estimate_d_statistics()

    def on_test_start(self) -> None:
        self.estimate_d_statistics()

    def _export_d_statistics(self, checkpoint: dict[str, Any]) -> None:
        """Writes the real-image statistics into ``checkpoint``'s D (its state_dict is already taken)."""
        if self.estimate_d_statistics():
            state = checkpoint["state_dict"]
            for name, buffer in self.discriminator.named_buffers():
                if f"discriminator.{name}" in state:
                    state[f"discriminator.{name}"] = buffer.detach().clone()

    def _class_accuracy(self, metric: MulticlassAccuracy | None, key: str, batch: Batch) -> None:
        if metric is None:
            return
        images, labels = batch
        metric.update(self.discriminator(images).class_logits, labels)
        self.log(key, metric, batch_size=len(images))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """ACGAN/SSGAN: accuracy of D's class head on real validation images (the notes' cheap proxy for how
        useful the samples are); other modes measure their samples with callbacks and skip this."""
        self._class_accuracy(self.val_class_accuracy, "val/class_acc", batch)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        """ACGAN/SSGAN: accuracy of D's class head on the real test split (``lightning-gan test``)."""
        self._class_accuracy(self.test_class_accuracy, "test/class_acc", batch)


class DiscriminatorClassifier(nn.Module):
    """A GAN's discriminator as a plain classifier: images (N, C, H, W) in [-1, 1] in, class logits (N, K)
    out (for SSGAN the K real classes; "fake" is implicit)."""

    def __init__(self, discriminator: nn.Module) -> None:
        super().__init__()
        self.discriminator = discriminator

    def forward(self, images: Tensor) -> Tensor:
        return self.discriminator(images).class_logits
