"""A small ResNet feature extractor for classifiers (He et al. 2016): the notes' second classifier."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the input (a 1x1 conv when stride or width change), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int | tuple[int, int] = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = (
            nn.Identity()
            if stride in (1, (1, 1)) and in_channels == out_channels
            else nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNetFeatures(nn.Module):
    """A stem conv, three stages of ``blocks`` BasicBlocks (widths c, 2c, 4c; the last two halve the size),
    a global average pool and Linear-ReLU: images (N, C, H, W) -> features (N, feature_dim).

    Args:
        in_channels: C of the images.
        channels: Width c of the first stage.
        feature_dim: Size F of the output features.
        blocks: BasicBlocks per stage.
        pool: Stride (H, W) of the stages that halve the size: (2, 2) for images; (1, 2) keeps the sensor
            rows of a signal window.

    Example:
        >>> ResNetFeatures(1, channels=8, feature_dim=16)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 16])
    """

    def __init__(
        self,
        in_channels: int,
        *,
        channels: int = 32,
        feature_dim: int = 64,
        blocks: int = 2,
        pool: tuple[int, int] = (2, 2),
    ) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        ]
        width = channels
        for stage in range(3):
            out = channels * 2**stage
            for i in range(blocks):
                layers.append(BasicBlock(width, out, stride=pool if stage > 0 and i == 0 else 1))
                width = out
        layers += [
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, feature_dim),
            nn.ReLU(inplace=True),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)  # (N, feature_dim)
