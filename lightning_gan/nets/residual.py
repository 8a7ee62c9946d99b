"""Residual blocks and what every ResNet generator and discriminator builds from them (issue 18).

The blocks are those of SNGAN and BigGAN (Miyato et al. 2018, app. B; Brock et al. 2019, fig. 15), put
together from the block builder (:mod:`lightning_gan.nets.blocks`), so that the norm, activation, kernel,
dropout and noise switches work on them as on the DCGAN nets:

- G: ``norm, act, upsample, conv, norm, act, conv`` beside a shortcut ``upsample, 1x1 conv``;
- D: ``norm, act, conv, norm, act, conv, downsample`` beside ``1x1 conv, downsample``; D's first block
  starts at its conv (the input image is not activated) and its shortcut pools before its 1x1 conv.

A 1x1 conv stands in the shortcut only where the channels change; a block that keeps its size and width
adds its input as it is. A net is stages of blocks, one stage per resolution: the first block of G's stage
doubles the map, the last block of D's stage halves it. The images' and the signal windows' nets
(:mod:`lightning_gan.nets.resnet_gan`) differ only in their :class:`Resampling`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from lightning_gan.nets.attention import SelfAttention, add_attention, halving_points
from lightning_gan.nets.blocks import BlockSpec, WeightLayer, block
from lightning_gan.nets.conditioning import ConditionalSequential
from lightning_gan.nets.discriminator import ConditionalDiscriminator
from lightning_gan.nets.generator import ConvGenerator
from lightning_gan.nets.layers import init_xavier_weights_
from lightning_gan.validation import is_int, require


@dataclass(frozen=True)
class Resampling:
    """How a ResNet's maps are convolved and resized: an image's both sides, or a signal's time only.

    Attributes:
        conv: The blocks' stride-1 conv (its kernel fixed by the net).
        pointwise: The shortcut's 1x1 conv.
        up: A fresh x2 upsampling.
        down: A fresh /2 average pooling.
    """

    conv: WeightLayer
    pointwise: WeightLayer
    up: Callable[[], nn.Module]
    down: Callable[[], nn.Module]


class ResBlock(nn.Module):
    """``shortcut(x) + residual(x)``; the residual path gets the labels of its conditional norms.

    Attributes:
        residual: The block's norms, activations and convs (a ``ConditionalSequential``).
        shortcut: Identity, a resize, a 1x1 conv, or both.
    """

    takes_labels = True

    def __init__(self, residual: ConditionalSequential, shortcut: nn.Module) -> None:
        super().__init__()
        self.residual = residual
        self.shortcut = shortcut

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.shortcut(x) + self.residual(x, labels)


def _shortcut(resize: nn.Module | None, conv: nn.Module | None, conv_first: bool) -> nn.Module:
    layers = [m for m in ((conv, resize) if conv_first else (resize, conv)) if m is not None]
    return nn.Sequential(*layers) if layers else nn.Identity()


def up_block(spec: BlockSpec, geo: Resampling, c_in: int, c_out: int, upsample: bool) -> ResBlock:
    """G's block from ``c_in`` to ``c_out`` channels, doubling the map if ``upsample``."""
    pre = (geo.up(),) if upsample else ()
    residual = ConditionalSequential(
        *spec.post(c_in),
        *block(spec, geo.conv, c_in, c_out, pre=pre),
        *block(spec, geo.conv, c_out, c_out, last=nn.Identity()),  # the sum with the shortcut follows
    )
    conv = geo.pointwise(c_in, c_out, True) if c_in != c_out else None
    return ResBlock(residual, _shortcut(geo.up() if upsample else None, conv, conv_first=False))


def down_block(
    spec: BlockSpec, geo: Resampling, c_in: int, c_out: int, downsample: bool, first: bool
) -> ResBlock:
    """D's block from ``c_in`` to ``c_out`` channels, halving the map if ``downsample``; the ``first`` block
    of D reads the input as it is (no norm or activation before its conv)."""
    residual = ConditionalSequential(
        *([] if first else spec.post(c_in)),
        *block(spec, geo.conv, c_in, c_out),
        *block(spec, geo.conv, c_out, c_out, last=geo.down() if downsample else nn.Identity()),
    )
    conv = geo.pointwise(c_in, c_out, True) if c_in != c_out else None
    return ResBlock(residual, _shortcut(geo.down() if downsample else None, conv, conv_first=not first))


def depth(net: nn.Module) -> int:
    """A net's weight layers on its main path, as the notes count "gres18" and ResNet-18 counts its 18: every
    conv and Linear but those of shortcuts, self-attention, class heads and minibatch layers.

    Example:
        >>> from lightning_gan.nets import SignalResNetDiscriminator
        >>> depth(SignalResNetDiscriminator((1, 6, 128), 6, class_head=6, num_stages=3))
        7
    """
    aside = [m for m in net.modules() if isinstance(m, SelfAttention)]
    aside += [getattr(net, name, None) for name in ("classifier", "minibatch")]
    aside += [m.shortcut for m in net.modules() if isinstance(m, ResBlock)]
    skip = {id(m) for a in aside if a is not None for m in a.modules()}
    weights = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    return sum(isinstance(m, weights) and id(m) not in skip for m in net.modules())


def stage_blocks(blocks: int | Sequence[int], stages: int, what: str) -> list[int]:
    """The residual blocks of each of ``stages`` stages: ``blocks`` if it is a list (one entry per stage),
    else ``blocks`` at every stage. ``what`` says where the stage count comes from, for the error."""
    if is_int(blocks):
        require(blocks >= 1, "blocks", blocks, "a stage needs at least one block (the one that resizes)")
        return [blocks] * stages
    blocks = list(blocks)
    require(
        len(blocks) == stages and all(is_int(b) and b >= 1 for b in blocks),
        "blocks",
        blocks,
        f"{what} has {stages} stages: give {stages} counts >= 1, one per stage, or one count for all",
    )
    return blocks


class ResNetGeneratorBase(ConvGenerator):
    """What the image and signal ResNet generators share: z -> Linear to ``start_shape`` -> stages of
    :func:`up_block` -> norm, activation, conv, Tanh. Xavier-uniform init, as SNGAN's code."""

    def build(
        self,
        geo: Resampling,
        start_shape: tuple[int, ...],
        blocks: list[int],
        out_channels: int,
        attention: Sequence[int],
        output: WeightLayer | None = None,
    ) -> None:
        """Build the net: ``blocks[i]`` blocks at stage i, channels halving from ``start_shape[0]``,
        ``attention`` at the resolutions asked, and an output conv to ``out_channels`` (``output``, by
        default the blocks' conv)."""
        require(
            self.extra_blocks == 0,
            "extra_blocks",
            self.extra_blocks,
            "a ResNet generator's depth is its blocks key: set blocks instead",
        )
        spec = self.spec
        self.project_to(start_shape, None)
        c_in, size = start_shape[0], start_shape[-1]
        stages, points = [], {size: (self.project_norm, c_in)}  # attention points: resolution -> (after, C)
        for i, count in enumerate(blocks):
            c_out, size = start_shape[0] // 2**i, size * 2
            resblocks = [up_block(spec, geo, c_in if j == 0 else c_out, c_out, j == 0) for j in range(count)]
            stages.append(ConditionalSequential(*resblocks))
            points[size] = (stages[-1], c_out)
            c_in = c_out
        self.stages = ConditionalSequential(*stages)
        self.output = ConditionalSequential(
            *spec.post(c_in), *block(spec, output or geo.conv, c_in, out_channels, last=nn.Tanh())
        )
        add_attention("attention", attention, points)
        self.init_weights(init_xavier_weights_)

    def to_output(self, x: Tensor, labels: Tensor | None) -> Tensor:
        return self.output(x, labels)


class ResNetDiscriminatorBase(ConditionalDiscriminator):
    """What the image and signal ResNet discriminators share: stages of :func:`down_block` (channels
    doubling from ``base_channels``) -> activation -> sum over positions (SNGAN's global sum pooling) ->
    the heads of :class:`~lightning_gan.nets.discriminator.ConditionalDiscriminator`."""

    def build(
        self, geo: Resampling, c_in: int, base_channels: int, blocks: list[int], resolution: int,
        attention: Sequence[int],
    ) -> None:  # fmt: skip
        """Build the net from ``c_in`` input channels (labels' maps included) and ``resolution`` (the
        input's last size)."""
        spec = self.spec
        stages = []
        for i, count in enumerate(blocks):
            c_out = base_channels * 2**i
            resblocks = [
                down_block(spec, geo, c_in if j == 0 else c_out, c_out, j == count - 1, i == j == 0)
                for j in range(count)
            ]
            stages.append(nn.Sequential(*resblocks))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.final_activation = spec.activation_layer()
        add_attention("attention", attention, halving_points(self.stages, resolution, base_channels))
        self.init_heads(c_in)
        init_xavier_weights_(self)

    def to_features(self, maps: Tensor) -> Tensor:
        """Activation, then the sum over every position: (N, C, ...) -> (N, C)."""
        return self.final_activation(maps).flatten(2).sum(dim=2)
