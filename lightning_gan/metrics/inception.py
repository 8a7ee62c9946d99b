"""The InceptionV3 of the TensorFlow FID graph (Heusel et al. 2017), defined here, loaded from a local file.

torch-fidelity and torchvision do not install beside this project's torch build, and nothing is downloaded,
so the network is written out. It is the variant that pytorch-fid ports from the TF graph
``inception-2015-12-05``: it differs from torchvision's ImageNet InceptionV3 in 1008 classes and in the
pooling branch of some blocks. TF's average pool leaves the zero padding out of the mean
(``count_include_pad=False``), and the graph's last block max-pools where the paper average-pools.
Parameter names follow torchvision's ``Inception3`` (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.
running_mean``, ..., ``fc.weight``), so pytorch-fid's weight file ``pt_inception-2015-12-05-6726825d.pth``
loads unchanged with :func:`load_fid_inception`.
"""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

InceptionOutput = Literal["pool3", "logits", "logits_unbiased"]
PoolKind = Literal["avg", "max"]

INPUT_SIZE = 299  # the TF graph resizes every image to 299x299
NUM_CLASSES = 1008  # the TF graph's ImageNet head: 1000 classes plus 8 unused outputs


class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, as in TF) -> ReLU; torchvision calls it ``BasicConv2d``."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], **kwargs
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _pool_3x3(x: Tensor, kind: PoolKind) -> Tensor:
    """The same-size 3x3 pool of a pooling branch. TF's average pool divides by the number of real pixels
    under the window, not by 9, at the border: ``count_include_pad=False``."""
    if kind == "max":
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35x35 block (Mixed_5b..5d): 1x1, 5x5, double 3x3 and pool branches -> 224 + pool_features channels."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_pool_3x3(x, "avg")),
            ],
            dim=1,
        )


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17 (Mixed_6a): 384 + 96 + in_channels channels."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            dim=1,
        )


class FIDInceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b..6e): 768 channels."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = x
        for layer in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            branch7x7dbl = layer(branch7x7dbl)
        return torch.cat(
            [self.branch1x1(x), branch7x7, branch7x7dbl, self.branch_pool(_pool_3x3(x, "avg"))], dim=1
        )


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8 (Mixed_7a): 320 + 192 + in_channels channels."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch7x7x3 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = layer(branch7x7x3)
        return torch.cat(
            [self.branch3x3_2(self.branch3x3_1(x)), branch7x7x3, F.max_pool2d(x, kernel_size=3, stride=2)],
            dim=1,
        )


class FIDInceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 convolutions (Mixed_7b, 7c): 2048 channels.

    pytorch-fid's ``FIDInceptionE_1`` is ``pool="avg"`` (Mixed_7b) and ``FIDInceptionE_2`` is ``pool="max"``
    (Mixed_7c): the TF graph max-pools in its last block.
    """

    def __init__(self, in_channels: int, pool: PoolKind) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(branch3x3),
                self.branch3x3_2b(branch3x3),
                self.branch3x3dbl_3a(branch3x3dbl),
                self.branch3x3dbl_3b(branch3x3dbl),
                self.branch_pool(_pool_3x3(x, self.pool)),
            ],
            dim=1,
        )


class FIDInceptionV3(nn.Module):
    """The FID InceptionV3, always in eval mode: images -> 2048-d pool3 features (or the 1008 logits).

    Inputs are (N, 3, H, W) floats in [-1, 1], or uint8 in [0, 255]; 1-channel images are repeated to 3
    channels. Every image is resized to 299x299 (bilinear) first, as in pytorch-fid. ``num_features`` tells
    torchmetrics' FID/KID the output size, so they need no dummy forward pass.

    Args:
        output: ``"pool3"`` for the 2048-d features FID and KID use; ``"logits_unbiased"`` for the class
            logits (N, 1008) without the fc bias, which the papers' Inception score uses (as torchmetrics'
            ``logits_unbiased``); ``"logits"`` for the logits with it.

    Example:
        >>> net = FIDInceptionV3()
        >>> net(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 2048])
    """

    def __init__(self, output: InceptionOutput = "pool3") -> None:
        super().__init__()
        if output not in ("pool3", "logits", "logits_unbiased"):
            raise ValueError(f"output={output!r} is not allowed: choose pool3, logits or logits_unbiased")
        self.output = output
        self.num_features = 2048 if output == "pool3" else NUM_CLASSES
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = FIDInceptionE(2048, pool="max")
        self.fc = nn.Linear(2048, NUM_CLASSES)
        self.eval()

    def with_output(self, output: InceptionOutput) -> FIDInceptionV3:
        """The same network (the same weights, not a copy of them) giving ``output``."""
        if output not in ("pool3", "logits", "logits_unbiased"):
            raise ValueError(f"output={output!r} is not allowed: choose pool3, logits or logits_unbiased")
        view = copy.copy(self)  # a new attribute dict over the same submodules and parameters
        view.output, view.num_features = output, 2048 if output == "pool3" else NUM_CLASSES
        return view

    def train(self, mode: bool = True) -> FIDInceptionV3:
        """Stays in eval mode: a metric's feature extractor must use the BN statistics it was trained with."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """(N, 1 or 3, H, W), float in [-1, 1] or uint8 in [0, 255] -> (N, num_features) float32."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"FIDInceptionV3 needs images (N, 1 or 3, H, W), got shape {tuple(x.shape)}")
        x = x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x.float()
        x = x.expand(-1, 3, -1, -1)  # grey -> RGB; a no-op on 3 channels
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (N, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (N, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 192, 35, 35)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a):
            x = block(x)  # -> (N, 768, 17, 17)
        for block in (self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a):
            x = block(x)  # -> (N, 1280, 8, 8)
        x = self.Mixed_7c(self.Mixed_7b(x))  # (N, 2048, 8, 8)
        pool3 = x.mean(dim=(2, 3))  # (N, 2048): the global average pool FID is defined on
        if self.output == "pool3":
            return pool3
        if self.output == "logits_unbiased":
            return pool3 @ self.fc.weight.T
        return self.fc(pool3)


def load_fid_inception(path: str | Path, output: InceptionOutput = "pool3") -> FIDInceptionV3:
    """Builds :class:`FIDInceptionV3` from a local state_dict file; never downloads.

    Args:
        path: A ``torch.save``'d state_dict with torchvision ``Inception3`` names, such as pytorch-fid's
            ``pt_inception-2015-12-05-6726825d.pth``.
        output: ``"pool3"`` (FID, KID), ``"logits_unbiased"`` (Inception score) or ``"logits"``.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If the file is not a state_dict of this network (names a few missing/unexpected keys).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FID InceptionV3 weights {str(path)!r}: no such file")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"FID InceptionV3 weights {str(path)!r}: not a readable torch file ({err})") from err
    if not isinstance(state_dict, dict):
        raise ValueError(
            f"FID InceptionV3 weights {str(path)!r}: holds a {type(state_dict).__name__}, not a state_dict"
        )
    net = FIDInceptionV3(output)
    missing, unexpected = _key_mismatch(net, state_dict)
    if missing or unexpected:
        raise ValueError(
            f"FID InceptionV3 weights {str(path)!r} do not match the network: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected keys "
            f"(e.g. {unexpected[:3]})"
        )
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:  # same names, other shapes
        raise ValueError(f"FID InceptionV3 weights {str(path)!r} do not match the network: {err}") from err
    return net.requires_grad_(False)


def _key_mismatch(net: nn.Module, state_dict: dict) -> tuple[list[str], list[str]]:
    """Keys of ``net`` absent from ``state_dict`` and keys of ``state_dict`` ``net`` lacks, sorted.

    BatchNorm's ``num_batches_tracked`` counts may be absent: torch fills them in, and the TF port has none.
    """
    expected = set(net.state_dict())
    given = set(state_dict)
    missing = sorted(k for k in expected - given if not k.endswith("num_batches_tracked"))
    return missing, sorted(given - expected)
