"""DCGAN generator and discriminator (Radford et al. 2016) for any image size with enough factors of 2."""

from collections.abc import Sequence
from typing import Literal, get_args

from torch import nn

from lightning_gan.nets.attention import add_attention, halving_points
from lightning_gan.nets.blocks import (
    block,
    check_choice,
    conv2d,
    conv_transpose2d,
    downsampling_stages,
    repeat_blocks,
)
from lightning_gan.nets.conditioning import ConditionalSequential
from lightning_gan.nets.discriminator import ConditionalDiscriminator
from lightning_gan.nets.generator import ConvGenerator
from lightning_gan.nets.layers import check_img_shape, init_dcgan_weights_
from lightning_gan.validation import require_int

Upsample = Literal["transposed", "nearest", "bilinear"]


def image_stages(img_shape: tuple[int, int, int]) -> int:
    """The largest n with H and W divisible by 2^n and both H/2^n, W/2^n >= 3.

    28 -> 2 stages from 7x7, 32 -> 3 from 4x4, 64 -> 4 from 4x4, (32, 48) -> 3 from 4x6.
    """
    _, h, w = img_shape

    def fits(k: int) -> bool:
        s = 2**k
        return h % s == 0 and w % s == 0 and h // s >= 3 and w // s >= 3

    n = 0
    while fits(n + 1):
        n += 1
    if n == 0:
        raise ValueError(
            f"img_shape={img_shape!r} is not supported by DCGAN and ResNet nets: H and W must be even and at "
            "least 6, so that one x2 stage starts from a map of at least 3x3"
        )
    return n


class DCGANGenerator(ConvGenerator):
    """DCGAN generator: z -> Linear to a small map, then n x2 upsampling stages -> Tanh image.

    The number of stages n is the largest with H and W divisible by 2^n and the start map at least
    3x3; channels halve at each stage from ``base_channels * 2^(n-1)``. With ``num_classes > 0`` the net
    is conditional and ``forward`` needs labels; with 0 it is unconditional and ignores them.

    Args:
        latent_dim: Size of z.
        img_shape: Output shape (C, H, W).
        num_classes: Number of classes K; 0 for an unconditional generator.
        base_channels: Channels before the output conv; the first map has ``base_channels * 2^(n-1)``.
        upsample: ``"transposed"``: ConvTranspose2d(4, 2, 1); ``"nearest"``/``"bilinear"``: resize then
            Conv2d(3, 1, 1), which avoids checkerboard artefacts (Odena et al. 2016).
        kernel: Kernel of the stage convs; by default 4 (transposed) or 3 (resize then conv).
        attention: Resolutions (map widths) after which a self-attention block sits
            (:mod:`lightning_gan.nets.attention`): the start map's and every stage's but the image's.
        generator_args: The keys every generator takes (``norm``, ``conditioning``, ``embed_dim``,
            ``vbn_reference``, ``extra_blocks`` and the block switches), see
            :class:`~lightning_gan.nets.generator.ConvGenerator`; ``cbn`` makes every BatchNorm a
            ``ConditionalBatchNorm2d``.

    Example:
        >>> import torch
        >>> g = DCGANGenerator(100, (1, 28, 28), base_channels=8)
        >>> g(torch.randn(5, 100)).shape
        torch.Size([5, 1, 28, 28])
        >>> g = DCGANGenerator(100, (1, 28, 28), 10, base_channels=8, conditioning="cbn")
        >>> g(torch.randn(5, 100), torch.arange(5)).shape
        torch.Size([5, 1, 28, 28])
        >>> g = DCGANGenerator(100, (1, 28, 28), 10, base_channels=8, norm="virtual", vbn_reference=16)
        >>> g(torch.randn(5, 100), torch.arange(5)).shape, g.reference.z.shape
        (torch.Size([5, 1, 28, 28]), torch.Size([16, 100]))
    """

    def __init__(
        self,
        latent_dim: int,
        img_shape: tuple[int, int, int],
        num_classes: int = 0,
        *,
        base_channels: int = 64,
        upsample: Upsample = "transposed",
        kernel: int | None = None,
        attention: Sequence[int] = (),
        **generator_args,
    ) -> None:
        super().__init__(latent_dim, num_classes, **generator_args)
        require_int("base_channels", base_channels, 1)
        check_choice("upsample", upsample, get_args(Upsample))
        transposed = upsample == "transposed"
        kernel = (4 if transposed else 3) if kernel is None else kernel
        require_int("kernel", kernel, 1)
        spec = self.spec
        self.img_shape = check_img_shape(img_shape)
        c, h, w = self.img_shape
        n = image_stages(self.img_shape)
        same = conv2d(kernel, 1)
        self.project_to((base_channels * 2 ** (n - 1), h // 2**n, w // 2**n), same)
        weight = conv_transpose2d(kernel) if transposed else same
        stages, points = [], {w // 2**n: (self.project_norm, self.start_shape[0])}  # resolution -> (after, C)
        for i in range(n):
            c_in = self.start_shape[0] // 2**i
            last = nn.Tanh() if i == n - 1 else None  # G's output has no norm
            c_out = c if last else c_in // 2
            pre = () if transposed else (nn.Upsample(scale_factor=2, mode=upsample),)
            extra = repeat_blocks(spec, same, c_out, 0 if last else self.extra_blocks)
            stages.append(
                ConditionalSequential(*block(spec, weight, c_in, c_out, last=last, pre=pre), *extra)
            )
            if not last:
                points[w // 2 ** (n - i - 1)] = (stages[-1], c_out)
        self.stages = ConditionalSequential(*stages)
        add_attention("attention", attention, points)
        self.init_weights()


class DCGANDiscriminator(ConditionalDiscriminator):
    """DCGAN discriminator: n strided convs (the generator's mirror) -> flatten -> Linear score.

    Each stage is Conv2d(4, 2, 1) doubling channels from ``base_channels``, then norm (except after the
    input conv, as in DCGAN) and LeakyReLU(0.2). With ``num_classes > 0`` the label is an input of D
    and ``forward`` needs it; with 0 the score ignores labels.

    Args:
        img_shape: Input shape (C, H, W).
        num_classes: Number of classes K whose label D takes as input (CGAN); 0 for none.
        base_channels: Channels of the first conv.
        kernel: Kernel of every conv (padding keeps the x2 downsampling).
        extra_blocks: Stride-1 conv blocks added to every stage (depth).
        attention: Resolutions (map widths) after which a self-attention block sits: any stage's output.
        discriminator_args: The keys every D takes (``class_head``, ``norm`` after every conv but the
            first, ``label_input``, ``minibatch`` and its sizes, the block switches), see
            :class:`~lightning_gan.nets.discriminator.ConditionalDiscriminator`.

    Example:
        >>> import torch
        >>> d = DCGANDiscriminator((1, 28, 28), base_channels=8)
        >>> out = d(torch.randn(5, 1, 28, 28))
        >>> out.logits.shape, out.features.shape
        (torch.Size([5]), torch.Size([5, 784]))
        >>> d = DCGANDiscriminator((1, 28, 28), 10, class_head=10, base_channels=8, label_input="projection")
        >>> d(torch.randn(5, 1, 28, 28), torch.arange(5)).class_logits.shape
        torch.Size([5, 10])
    """

    def __init__(
        self,
        img_shape: tuple[int, int, int],
        num_classes: int = 0,
        *,
        base_channels: int = 64,
        kernel: int = 4,
        extra_blocks: int = 0,
        attention: Sequence[int] = (),
        **discriminator_args,
    ) -> None:
        super().__init__(num_classes, **discriminator_args)
        require_int("base_channels", base_channels, 1)
        require_int("kernel", kernel, 1)
        self.img_shape = check_img_shape(img_shape)
        c, h, w = self.img_shape
        n = image_stages(self.img_shape)
        weight, same = conv2d(kernel, 2), conv2d(kernel, 1)
        self.stages = downsampling_stages(
            self.spec, weight, same, c + self.label_channels, base_channels, n, extra_blocks
        )
        add_attention("attention", attention, halving_points(self.stages, w, base_channels))
        self.init_heads(base_channels * 2 ** (n - 1) * (h // 2**n) * (w // 2**n))
        init_dcgan_weights_(self)  # leaves the embeddings of ProjectionHead as it initialised them
