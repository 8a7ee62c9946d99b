"""A small CNN image classifier: the digits judge for FID/KID/IS, trained like any model by the CLI.

The network is split into a feature extractor (:class:`ConvFeatures`, a plain ``nn.Module``) and a linear
head, so that metrics can read the penultimate features and another backbone can replace the extractor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_gan.nets.resnet import ResNetFeatures
from lightning_gan.validation import is_int, require

Backbone = Literal["cnn", "resnet"]
Batch = Sequence[Tensor]  # (images (N, C, H, W) in [-1, 1], labels (N,) int64)

MIN_SIZE = 8  # the two 2x2 max-pools take 8x8 down to 2x2
POOL_SIZE = 4  # the last feature map is average-pooled to POOL_SIZE x POOL_SIZE


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Conv3x3-BN-ReLU, same size; the conv has no bias because BN's shift replaces it."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def pool_size(img_shape: Sequence[int]) -> tuple[int, int]:
    """The (H, W) factor by which a classifier's stages downsample: 2 along each axis of at least
    ``MIN_SIZE``, 1 along a shorter one, so that signal windows (1, 6, 128) pool along time only.

    Example:
        >>> pool_size((1, 28, 28)), pool_size((1, 6, 128))
        ((2, 2), (1, 2))
    """
    return tuple(2 if size >= MIN_SIZE else 1 for size in img_shape[1:])  # type: ignore[return-value]


class ConvFeatures(nn.Module):
    """Three Conv-BN-ReLU stages (widths c, 2c, 4c; max-pools between them), an average pool to a 4x4
    grid and Linear-ReLU: images (N, C, H, W) -> features (N, feature_dim).

    Args:
        in_channels: C of the images.
        channels: Width c of the first stage.
        feature_dim: Size F of the output features.
        pool: Max-pool size (H, W) between stages: (2, 2) for images; (1, 2) keeps the sensor rows of a
            signal window (see :func:`pool_size`).

    Example:
        >>> ConvFeatures(1, channels=8, feature_dim=16)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 16])
        >>> ConvFeatures(1, channels=8, feature_dim=16, pool=(1, 2))(torch.zeros(2, 1, 6, 128)).shape
        torch.Size([2, 16])
    """

    def __init__(
        self, in_channels: int, *, channels: int = 32, feature_dim: int = 64, pool: tuple[int, int] = (2, 2)
    ) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            _conv_block(in_channels, channels),
            nn.MaxPool2d(pool),
            _conv_block(channels, 2 * channels),
            nn.MaxPool2d(pool),
            _conv_block(2 * channels, 4 * channels),
            # (N, 4c, 4, 4) whatever H, W: one network for every image size (a 6-row signal gives overlapping
            # rows). A 4x4 grid, not a global pool, because where a stroke lies matters for digits: with
            # channels=16, strided convs and a global pool reached 79% val accuracy after 4 epochs on the
            # bundled digits, max-pools and this grid 98%.
            nn.AdaptiveAvgPool2d(POOL_SIZE),
            nn.Flatten(),
            nn.Linear(4 * channels * POOL_SIZE**2, feature_dim),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)  # (N, feature_dim)


class Classifier(LightningModule):
    """An image or signal classifier trained with cross entropy and Adam; batches are ``(images, labels)``.

    Signal windows are 1-channel images (1, S, T) (see :class:`~lightning_gan.data.HARDataModule`): an axis
    shorter than 8 (the S sensor rows) is never downsampled, so the nets pool and stride along time only.

    Args:
        img_shape: (C, H, W) of the data; the CLI links it from the data module.
        num_classes: Number of classes K >= 2; linked from the data module.
        channels: Width of the first conv stage (the stages have c, 2c, 4c channels).
        feature_dim: Size of the penultimate features that :meth:`features` returns (and FID/KID use).
        backbone: ``cnn`` (:class:`ConvFeatures`) or ``resnet``
            (:class:`~lightning_gan.nets.resnet.ResNetFeatures`, the notes' second classifier).
        lr: Adam learning rate.
        weight_decay: Adam weight decay (L2).
        lr_schedule: ``constant``, or ``cosine``: annealed to 0 over the whole run (every optimizer step, by
            ``trainer.estimated_stepping_batches``), which steadies the last epoch's accuracy.

    Example:
        >>> model = Classifier(img_shape=(1, 28, 28), num_classes=10, feature_dim=16)
        >>> images = torch.zeros(4, 1, 28, 28)
        >>> model(images).shape, model.features(images).shape
        (torch.Size([4, 10]), torch.Size([4, 16]))
    """

    def __init__(
        self,
        img_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        *,
        channels: int = 32,
        feature_dim: int = 64,
        backbone: Backbone = "cnn",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: Literal["constant", "cosine"] = "constant",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        shape = tuple(img_shape)
        require(
            len(shape) == 3
            and all(is_int(s) for s in shape)
            and min(shape) >= 1
            and max(shape[1:]) >= MIN_SIZE,
            "model.img_shape",
            img_shape,
            f"must be three positive integers (C, H, W) with H or W >= {MIN_SIZE}",
        )
        require(is_int(num_classes) and num_classes >= 2, "model.num_classes", num_classes, "must be >= 2")
        require(is_int(channels) and channels >= 1, "model.channels", channels, "must be an integer >= 1")
        require(
            is_int(feature_dim) and feature_dim >= 1,
            "model.feature_dim",
            feature_dim,
            "must be an integer >= 1",
        )
        require(lr > 0, "model.lr", lr, "must be > 0")
        require(weight_decay >= 0, "model.weight_decay", weight_decay, "must be >= 0")
        require(
            lr_schedule in ("constant", "cosine"),
            "model.lr_schedule",
            lr_schedule,
            "choose constant or cosine",
        )
        self.img_shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        require(backbone in ("cnn", "resnet"), "model.backbone", backbone, "choose cnn or resnet")
        features = ConvFeatures if backbone == "cnn" else ResNetFeatures
        self.backbone = features(shape[0], channels=channels, feature_dim=feature_dim, pool=pool_size(shape))
        self.head = nn.Linear(feature_dim, num_classes)
        # One metric object per stage: torchmetrics accumulates state, and stages must not mix their counts.
        # average="micro" is plain accuracy; MulticlassAccuracy's default ("macro") averages per class.
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features: images (N, C, H, W) in [-1, 1] -> (N, feature_dim)."""
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits: images (N, C, H, W) in [-1, 1] -> (N, num_classes)."""
        return self.head(self.features(x))

    def _loss_and_logits(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        images, labels = batch
        logits = self(images)
        return F.cross_entropy(logits, labels), logits, labels

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, logits, labels = self._loss_and_logits(batch)
        self.train_acc(logits, labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate("val", self.val_acc, batch)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate("test", self.test_acc, batch)

    def _evaluate(self, stage: str, accuracy: MulticlassAccuracy, batch: Batch) -> None:
        loss, logits, labels = self._loss_and_logits(batch)
        accuracy(logits, labels)
        self.log(f"{stage}/loss", loss, batch_size=len(labels))
        self.log(f"{stage}/acc", accuracy, prog_bar=True, batch_size=len(labels))

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        optimizer = torch.optim.Adam(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        if self.hparams.lr_schedule == "constant":
            return optimizer
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
