"""One way to build a block, shared by the DCGAN, signal and MLP nets (issue 17): an optional resize, fresh
noise channels, a weight layer (conv 1-d/2-d/transposed or linear), a norm, an activation and dropout. Each
switch of :class:`BlockSpec` is written here once, so every backbone has it.

Example:
    >>> spec = BlockSpec(norm="group", norm_groups=2, activation="prelu", noise=1)
    >>> [type(m).__name__ for m in block(spec, conv2d(3, 1), 4, 8)]
    ['BlockNoise', 'Conv2d', 'GroupNorm', 'PReLU']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lightning_gan.nets.conditioning import (
    ConditionalBatchNorm1d,
    ConditionalBatchNorm2d,
    ConditionalSequential,
)
from lightning_gan.nets.layers import GeneratorNormKind, make_norm
from lightning_gan.validation import require, require_int

Activation = Literal["relu", "leakyrelu", "prelu", "elu", "silu", "gelu"]
# A weight layer from (in channels, out channels, bias): conv or linear, its geometry fixed by the backbone.
WeightLayer = Callable[[int, int, bool], nn.Module]
# Norms that keep the weight layer's bias: they do not subtract a per-channel mean, which would cancel it.
_KEEP_BIAS = ("none", "layer", "group")


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Refuses ``value`` unless it is one of ``allowed``, naming the key ``name``."""
    require(value in allowed, name, value, f"choose one of {', '.join(allowed)}")


class SamplingDropout(nn.Dropout):
    """Dropout that, with ``at_sampling=True``, stays on in eval mode too: in sample grids, metrics and
    ``generate`` (the notes' more diverse samples across batches); otherwise ``nn.Dropout``."""

    def __init__(self, p: float, at_sampling: bool = False) -> None:
        super().__init__(p)
        self.at_sampling = at_sampling

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training or self.at_sampling, self.inplace)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, at_sampling={self.at_sampling}"


class BlockNoise(nn.Module):
    """Concatenates ``channels`` maps of fresh N(0, 1) noise to its input: (N, C, ...) -> (N, C + k, ...),
    in training and sampling alike. Drawn from the global torch RNG, so a training step's forked random
    stream repeats it on resume."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        noise = torch.randn(len(x), self.channels, *x.shape[2:], dtype=x.dtype, device=x.device)
        return torch.cat([x, noise], dim=1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


@dataclass(frozen=True)
class BlockSpec:
    """The switches of one network's blocks, checked when built (each error names its key).

    Attributes:
        norm: batch, instance, layer, group, none, or virtual (generators; needs G's reference batch).
        norm_groups: Groups of ``norm="group"``; must divide the channels of every normalised layer.
        activation: relu, leakyrelu, prelu (one learnt slope, from 0.25), elu, silu or gelu.
        activation_slope: Negative slope of ``leakyrelu``.
        dims: The maps' spatial dimensions: 2 (N, C, H, W), 1 (N, C, L) or 0 for features (N, C).
        cbn_classes: K > 0: class-conditional BatchNorm (needs ``norm="batch"``); 0 for a plain norm.
        vbn_reference: Reference batch size of ``norm="virtual"``.
        dropout: Dropout probability after every activation; 0 for none.
        dropout_at_sampling: Keep that dropout on in eval mode (:class:`SamplingDropout`).
        noise: Channels of fresh N(0, 1) noise concatenated to every block's input (key ``block_noise``).
    """

    norm: str = "batch"
    norm_groups: int = 8
    activation: str = "relu"
    activation_slope: float = 0.2
    dims: int = 2
    cbn_classes: int = 0
    vbn_reference: int = 64
    dropout: float = 0.0
    dropout_at_sampling: bool = False
    noise: int = 0

    def __post_init__(self) -> None:
        check_choice("norm", self.norm, get_args(GeneratorNormKind))
        require_int("norm_groups", self.norm_groups, 1)
        check_choice("activation", self.activation, get_args(Activation))
        require(self.activation_slope >= 0, "activation_slope", self.activation_slope, "must be >= 0")
        require(0 <= self.dropout < 1, "dropout", self.dropout, "must be in [0, 1)")
        require(
            self.dropout > 0 or not self.dropout_at_sampling,
            "dropout_at_sampling",
            self.dropout_at_sampling,
            "keeps G's dropout on when sampling, and needs dropout > 0",
        )
        require_int("block_noise", self.noise, 0)
        require(
            not (self.norm == "instance" and self.dims == 0),
            "norm",
            self.norm,
            "instance norm of features (N, C), a 1x1 map, has nothing to normalise over: use another norm",
        )
        if self.cbn_classes > 0:
            require(self.norm == "batch", "norm", self.norm, "conditioning='cbn' needs norm='batch'")

    def norm_layer(self, channels: int) -> nn.Module:
        """The norm of a block with ``channels`` output channels."""
        if self.cbn_classes > 0:
            cbn = ConditionalBatchNorm2d if self.dims == 2 else ConditionalBatchNorm1d
            return cbn(channels, self.cbn_classes)
        if self.norm == "group":
            require(
                channels % self.norm_groups == 0,
                "norm_groups",
                self.norm_groups,
                f"must divide the channels of every normalised layer, and one has {channels}",
            )
        return make_norm(self.norm, channels, max(self.dims, 1), self.vbn_reference, self.norm_groups)

    def activation_layer(self) -> nn.Module:
        """A fresh activation module."""
        if self.activation == "leakyrelu":
            return nn.LeakyReLU(self.activation_slope)
        return {"relu": nn.ReLU, "prelu": nn.PReLU, "elu": nn.ELU, "silu": nn.SiLU, "gelu": nn.GELU}[
            self.activation
        ]()

    def post(self, channels: int, norm: bool = True) -> list[nn.Module]:
        """What follows a block's weight layer: norm (if ``norm``), activation, dropout (if any)."""
        layers = [self.norm_layer(channels)] if norm else []
        layers.append(self.activation_layer())
        if self.dropout > 0:
            layers.append(SamplingDropout(self.dropout, self.dropout_at_sampling))
        return layers


def generator_spec(
    norm: str,
    activation: str,
    activation_slope: float,
    dims: int,
    cbn_classes: int = 0,
    vbn_reference: int = 64,
    *,
    norm_groups: int = 8,
    dropout: float = 0.0,
    dropout_at_sampling: bool = False,
    block_noise: int = 0,
) -> BlockSpec:
    """The :class:`BlockSpec` of a generator: the switches every generator takes as keys of its own
    (``norm_groups``, ``dropout``, ``dropout_at_sampling``, ``block_noise``) come in here, written once.

    Args:
        norm, activation, activation_slope, dims, cbn_classes, vbn_reference: As :class:`BlockSpec`.
        norm_groups: Groups of ``norm: group``; must divide the channels of every normalised layer.
        dropout: Dropout after every hidden block's activation; 0 for none.
        dropout_at_sampling: Keep G's dropout on when sampling (grids, metrics, ``generate``).
        block_noise: Channels of fresh N(0, 1) noise concatenated to the input of every block.
    """
    return BlockSpec(
        norm, norm_groups, activation, activation_slope, dims, cbn_classes, vbn_reference, dropout,
        dropout_at_sampling, block_noise,
    )  # fmt: skip


def block(
    spec: BlockSpec,
    weight: WeightLayer,
    c_in: int,
    c_out: int,
    *,
    norm: bool = True,
    last: nn.Module | None = None,
    pre: Sequence[nn.Module] = (),
) -> list[nn.Module]:
    """The layers of one block: ``pre`` (e.g. an upsampling), :class:`BlockNoise` (``spec.noise > 0``), the
    weight layer from ``c_in`` (plus the noise channels) to ``c_out``, then ``spec.post`` (its norm unless
    ``norm=False``), or for a net's output block the single module ``last`` (e.g. Tanh) instead.

    The weight layer has a bias unless a norm follows that subtracts a per-channel mean, cancelling it.
    """
    layers = list(pre)
    if spec.noise > 0:
        layers.append(BlockNoise(spec.noise))
    normed = norm and last is None
    layers.append(weight(c_in + spec.noise, c_out, not normed or spec.norm in _KEEP_BIAS))
    return [*layers, last] if last is not None else layers + spec.post(c_out, normed)


def _same_padding(kernel: int) -> int | str:
    return (kernel - 1) // 2 if kernel % 2 else "same"  # "same": torch pads an even kernel asymmetrically


def conv2d(kernel: int, stride: int) -> WeightLayer:
    """Conv2d(kernel) that keeps H x W (stride 1) or halves even H, W (stride 2)."""
    padding = _same_padding(kernel) if stride == 1 else (kernel - 1) // 2

    def make(c_in: int, c_out: int, bias: bool) -> nn.Module:
        return nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=bias)

    return make


def conv_transpose2d(kernel: int) -> WeightLayer:
    """ConvTranspose2d(kernel, stride 2) that doubles H x W, for any kernel: 4 is DCGAN's (4, 2, 1)."""

    def make(c_in: int, c_out: int, bias: bool) -> nn.Module:
        pad = (kernel - 1) // 2
        return nn.ConvTranspose2d(c_in, c_out, kernel, 2, pad, output_padding=kernel % 2, bias=bias)

    return make


def linear(c_in: int, c_out: int, bias: bool) -> nn.Module:
    """The weight layer of an MLP block."""
    return nn.Linear(c_in, c_out, bias=bias)


def repeat_blocks(spec: BlockSpec, weight: WeightLayer, channels: int, count: int) -> list[nn.Module]:
    """``count`` stride-1 blocks (``weight`` keeps the map's size) of ``channels`` in and out, each a
    ``ConditionalSequential``: the extra depth of a resolution stage (key ``extra_blocks``)."""
    require_int("extra_blocks", count, 0)
    return [ConditionalSequential(*block(spec, weight, channels, channels)) for _ in range(count)]


def downsampling_stages(
    spec: BlockSpec, weight: WeightLayer, same: WeightLayer, c_in: int, channels: int, n: int, extra: int
) -> nn.Sequential:
    """A discriminator's ``n`` stages: ``weight`` (a stride-2 conv) doubling the channels from ``channels``
    (the first from ``c_in``, with no norm after it, as in DCGAN), each followed by ``extra`` stride-1
    blocks (``same``)."""
    stages = []
    for i in range(n):
        c_out = channels * 2**i
        first = block(spec, weight, c_in, c_out, norm=i > 0)
        stages.append(nn.Sequential(*first, *repeat_blocks(spec, same, c_out, extra)))
        c_in = c_out
    return nn.Sequential(*stages)
