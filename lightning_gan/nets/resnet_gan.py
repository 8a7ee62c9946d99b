"""ResNet generators and discriminators (issue 18) of images and of signal windows, from the residual
blocks of :mod:`lightning_gan.nets.residual`: the source notes' best HAR pair was a ResNet G of 18 layers
against a ResNet D of 7 ("gres18", "dres7"; ``configs/har_resnet_acgan.yaml``).

Depth is counted as the notes and ResNet-18 count it, in weight layers on the main path: G has z's Linear,
two convs per block and the output conv (1 + 2 * blocks + 1), D two convs per block and its Linear head.
"""

from collections.abc import Sequence
from typing import Literal, get_args

from torch import Tensor, nn

from lightning_gan.nets.blocks import Activation, check_choice, conv2d
from lightning_gan.nets.dcgan import image_stages
from lightning_gan.nets.layers import NormKind, check_img_shape
from lightning_gan.nets.residual import Resampling, ResNetDiscriminatorBase, ResNetGeneratorBase, stage_blocks
from lightning_gan.nets.signal import (
    Conv,
    SignalNet,
    Upsample,
    check_kernel,
    to_windows,
)
from lightning_gan.validation import require_int

ImageUpsample = Literal["nearest", "bilinear"]


def _image_resampling(kernel: int, upsample: str = "nearest") -> Resampling:
    require_int("kernel", kernel, 1)
    return Resampling(
        conv2d(kernel, 1), conv2d(1, 1), lambda: nn.Upsample(scale_factor=2, mode=upsample),
        lambda: nn.AvgPool2d(2),
    )  # fmt: skip


class ResNetGenerator(ResNetGeneratorBase):
    """ResNet generator of images (C, H, W): z -> Linear to a small map -> n stages of residual blocks,
    each doubling the map -> norm, activation, conv, Tanh.

    n is the DCGAN nets' (28 -> 2 stages from 7x7, 32 -> 3 from 4x4, 64 -> 4 from 4x4); channels halve at
    each stage from ``base_channels * 2^(n-1)`` to ``base_channels``.

    Args:
        latent_dim: Size of z.
        img_shape: Output shape (C, H, W).
        num_classes: Number of classes K; 0 for an unconditional generator.
        base_channels: Channels of the last stage.
        blocks: Residual blocks per stage, the first of which upsamples: one count for every stage, or a
            list of n counts.
        kernel: Kernel of the blocks' convs.
        upsample: ``"nearest"`` (SNGAN, BigGAN) or ``"bilinear"``.
        attention: Resolutions (map widths) after which a self-attention block sits: the start map's and
            every stage's, e.g. ``[14, 28]`` for the last two stages of a 28x28 G.
        generator_args: The keys every generator takes (``norm``, ``conditioning``, ``embed_dim``,
            ``vbn_reference``, the block switches), see :class:`~lightning_gan.nets.generator.ConvGenerator`.

    Example:
        >>> import torch
        >>> g = ResNetGenerator(32, (1, 28, 28), 10, base_channels=8, conditioning="cbn", attention=[28])
        >>> g(torch.randn(5, 32), torch.arange(5)).shape
        torch.Size([5, 1, 28, 28])
    """

    def __init__(
        self,
        latent_dim: int,
        img_shape: tuple[int, int, int],
        num_classes: int = 0,
        *,
        base_channels: int = 64,
        blocks: int | list[int] = 1,
        kernel: int = 3,
        upsample: ImageUpsample = "nearest",
        attention: Sequence[int] = (),
        **generator_args,
    ) -> None:
        super().__init__(latent_dim, num_classes, **generator_args)
        require_int("base_channels", base_channels, 1)
        check_choice("upsample", upsample, get_args(ImageUpsample))
        self.img_shape = check_img_shape(img_shape)
        c, h, w = self.img_shape
        n = image_stages(self.img_shape)
        blocks = stage_blocks(blocks, n, f"a {h}x{w} image from a {h // 2**n}x{w // 2**n} map")
        start = (base_channels * 2 ** (n - 1), h // 2**n, w // 2**n)
        self.build(_image_resampling(kernel, upsample), start, blocks, c, attention)


class ResNetDiscriminator(ResNetDiscriminatorBase):
    """ResNet discriminator of images (C, H, W): n stages of residual blocks, the last of each halving the
    map, channels doubling from ``base_channels`` -> activation -> global sum pooling -> Linear score.

    Args:
        img_shape: Input shape (C, H, W).
        num_classes: Number of classes K whose label D takes as input (CGAN); 0 for none.
        base_channels: Channels of the first stage.
        blocks: Residual blocks per stage (n stages as the DCGAN nets): one count or a list of n.
        kernel: Kernel of the blocks' convs.
        norm: Norm before each conv but the first; ``"none"`` by default, as SNGAN's D (use it with
            ``--model.spectral_norm true``).
        activation: The blocks' activation; ReLU by default, as SNGAN's D.
        attention: Resolutions (map widths) after which a self-attention block sits: any stage's output.
        discriminator_args: The keys every D takes (``class_head``, ``label_input``, ``minibatch`` and its
            sizes, ``norm_groups``, ``activation_slope``), see
            :class:`~lightning_gan.nets.discriminator.ConditionalDiscriminator`.

    Example:
        >>> import torch
        >>> d = ResNetDiscriminator((3, 32, 32), 10, class_head=10, base_channels=8, label_input="projection")
        >>> out = d(torch.randn(5, 3, 32, 32), torch.arange(5))
        >>> out.logits.shape, out.class_logits.shape, out.features.shape
        (torch.Size([5]), torch.Size([5, 10]), torch.Size([5, 32]))
    """

    def __init__(
        self,
        img_shape: tuple[int, int, int],
        num_classes: int = 0,
        *,
        base_channels: int = 64,
        blocks: int | list[int] = 1,
        kernel: int = 3,
        norm: NormKind = "none",
        activation: Activation = "relu",
        attention: Sequence[int] = (),
        **discriminator_args,
    ) -> None:
        super().__init__(num_classes, norm=norm, activation=activation, **discriminator_args)
        require_int("base_channels", base_channels, 1)
        self.img_shape = check_img_shape(img_shape)
        c, h, w = self.img_shape
        n = image_stages(self.img_shape)
        blocks = stage_blocks(blocks, n, f"a {h}x{w} image down to {h // 2**n}x{w // 2**n}")
        geo = _image_resampling(kernel)
        self.build(geo, c + self.label_channels, base_channels, blocks, w, attention)


class SignalResNetGenerator(SignalNet, ResNetGeneratorBase):
    """ResNet generator of (1, S, T) signal windows: z -> Linear to a short map -> stages of residual blocks,
    each doubling time -> norm, activation, output conv, Tanh. The sensor rows keep their size throughout
    (see :mod:`lightning_gan.nets.signal` for the two layouts and the (time, sensor) kernels).

    Args:
        latent_dim: Size of z.
        img_shape: Output shape (1, S, T).
        num_classes: Number of classes K; 0 for an unconditional generator.
        conv: ``"2d"`` (maps (C, S, t), kernels (time, sensor)) or ``"1d"`` (maps (C, t), Conv1d).
        base_channels: Channels of the last stage; the first has ``base_channels * 2^(n-1)``.
        blocks: Residual blocks per stage, the first of which upsamples: one count or a list of n. The
            notes' 18-layer G of 128-step windows is 4 stages of 2 blocks.
        kernel: (time, sensor) kernel of the blocks' convs.
        out_kernel: (time, sensor) kernel of the output conv.
        num_stages: x2 stages; by default as many as :func:`~lightning_gan.nets.signal.signal_stages` allows.
        upsample: ``"linear"`` (bilinear for 2-D maps) or ``"nearest"``.
        attention: Resolutions (time steps of a map) after which a self-attention block sits.
        generator_args: The keys every generator takes, see
            :class:`~lightning_gan.nets.generator.ConvGenerator`.

    Example:
        >>> import torch
        >>> g = SignalResNetGenerator(32, (1, 6, 128), 6, base_channels=4, blocks=2, attention=[64, 128])
        >>> g(torch.randn(5, 32), torch.arange(5)).shape
        torch.Size([5, 1, 6, 128])
    """

    def __init__(
        self,
        latent_dim: int,
        img_shape: tuple[int, int, int],
        num_classes: int = 0,
        *,
        conv: Conv = "2d",
        base_channels: int = 32,
        blocks: int | list[int] = 1,
        kernel: tuple[int, int] = (5, 2),
        out_kernel: tuple[int, int] = (5, 1),
        num_stages: int | None = None,
        upsample: Upsample = "linear",
        attention: Sequence[int] = (),
        **generator_args,
    ) -> None:
        check_choice("conv", conv, get_args(Conv))
        super().__init__(latent_dim, num_classes, dims=1 if conv == "1d" else 2, **generator_args)
        require_int("base_channels", base_channels, 1)
        check_choice("upsample", upsample, get_args(Upsample))
        out_kernel = check_kernel("out_kernel", out_kernel)
        layout, length, n = self.init_signal(img_shape, conv, kernel, num_stages)
        blocks = stage_blocks(blocks, n, f"a window of {length} steps (num_stages)")
        start = self.map_shape(base_channels * 2 ** (n - 1), length // 2**n)
        output = layout.conv_layer(out_kernel, 1)
        self.build(layout.resampling(upsample), start, blocks, self.window_channels, attention, output)

    def to_output(self, x: Tensor, labels: Tensor | None) -> Tensor:
        """The output block, then windows (N, 1, S, T) in [-1, 1]."""
        return to_windows(super().to_output(x, labels), self.conv)


class SignalResNetDiscriminator(SignalNet, ResNetDiscriminatorBase):
    """ResNet discriminator of (1, S, T) signal windows: stages of residual blocks, the last of each halving
    time, channels doubling from ``base_channels`` -> activation -> global sum pooling -> Linear score.

    Args:
        img_shape: Input shape (1, S, T).
        num_classes: Number of classes K whose label D takes as input (CGAN); 0 for none.
        conv: ``"2d"`` (the window as an image) or ``"1d"`` (Conv1d over the S channels).
        base_channels: Channels of the first stage.
        blocks: Residual blocks per stage: one count or a list of n. The notes' 7-layer D is 3 stages of
            one block (``num_stages: 3``).
        kernel: (time, sensor) kernel of the blocks' convs.
        num_stages: /2 stages; by default as many as :func:`~lightning_gan.nets.signal.signal_stages` allows.
        norm: Norm before each conv but the first; ``"none"`` by default, as SNGAN's D.
        activation: The blocks' activation; ReLU by default, as SNGAN's D.
        attention: Resolutions (time steps of a map) after which a self-attention block sits.
        discriminator_args: The keys every D takes, see
            :class:`~lightning_gan.nets.discriminator.ConditionalDiscriminator`.

    Example:
        >>> import torch
        >>> d = SignalResNetDiscriminator((1, 6, 128), 6, class_head=6, base_channels=4, num_stages=3)
        >>> out = d(torch.randn(5, 1, 6, 128), torch.arange(5))
        >>> out.logits.shape, out.class_logits.shape, out.features.shape
        (torch.Size([5]), torch.Size([5, 6]), torch.Size([5, 16]))
    """

    def __init__(
        self,
        img_shape: tuple[int, int, int],
        num_classes: int = 0,
        *,
        conv: Conv = "2d",
        base_channels: int = 32,
        blocks: int | list[int] = 1,
        kernel: tuple[int, int] = (5, 2),
        num_stages: int | None = None,
        norm: NormKind = "none",
        activation: Activation = "relu",
        attention: Sequence[int] = (),
        **discriminator_args,
    ) -> None:
        check_choice("conv", conv, get_args(Conv))
        dims = 1 if conv == "1d" else 2
        super().__init__(num_classes, dims=dims, norm=norm, activation=activation, **discriminator_args)
        require_int("base_channels", base_channels, 1)
        layout, length, n = self.init_signal(img_shape, conv, kernel, num_stages)
        blocks = stage_blocks(blocks, n, f"a window of {length} steps (num_stages)")
        c_in = self.window_channels + self.label_channels
        self.build(layout.resampling("linear"), c_in, base_channels, blocks, length, attention)
