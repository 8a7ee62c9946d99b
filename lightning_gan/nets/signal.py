"""Generator and discriminator for multichannel signals, such as sensor windows of S channels x T time steps.

A window is held as a 1-channel image (1, S, T), as the data modules give it (see
:class:`~lightning_gan.data.HARDataModule`). Two ways to convolve it:

- ``conv="2d"``: as an image, with small kernels that span a few time steps and one or two neighbouring
  sensor channels. The source notes' generator used kernels of 5x2 in its hidden layers and 5x1 at the
  output (``kernel=(5, 2)``, ``out_kernel=(5, 1)``), and gained 0.3 points of classifier accuracy from
  larger ones ("a large kernel sees more of the window").
- ``conv="1d"``: as a sequence of S-dimensional vectors, each Conv1d spanning every sensor channel.

Upsampling and striding act on time only; the S sensor rows keep their size through every layer.
Kernels are written ``(time, sensor)``; a 1-D net uses the time size only.
"""

from collections.abc import Sequence
from typing import Literal, get_args

from einops import rearrange
from torch import Tensor, nn

from lightning_gan.nets.attention import add_attention, halving_points
from lightning_gan.nets.blocks import (
    WeightLayer,
    block,
    check_choice,
    downsampling_stages,
    repeat_blocks,
)
from lightning_gan.nets.conditioning import ConditionalSequential
from lightning_gan.nets.discriminator import ConditionalDiscriminator
from lightning_gan.nets.generator import ConvGenerator
from lightning_gan.nets.layers import check_img_shape, init_dcgan_weights_
from lightning_gan.nets.residual import Resampling
from lightning_gan.validation import require, require_int

Conv = Literal["2d", "1d"]
Upsample = Literal["linear", "nearest"]

MAX_STAGES = 4
MIN_START = 4  # time steps of the first (generator) or last (discriminator) map


def check_kernel(name: str, kernel: tuple[int, int]) -> tuple[int, int]:
    kernel = tuple(kernel)
    require(
        len(kernel) == 2 and all(isinstance(k, int) and k >= 1 for k in kernel),
        name,
        kernel,
        "must be two positive integers (time, sensor)",
    )
    return kernel  # type: ignore[return-value]


def check_signal_shape(img_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    shape = check_img_shape(img_shape)
    require(shape[0] == 1, "img_shape", img_shape, "a signal is a 1-channel image (1, sensors, time)")
    return shape


def signal_stages(length: int, num_stages: int | None = None) -> int:
    """How many x2 time stages a net of signals of ``length`` steps has: ``num_stages``, or by default the
    largest n <= 4 with ``length`` divisible by 2^n and at least 4 steps left (128 -> 4, from 8 steps).

    Raises:
        ValueError: If ``length`` does not allow ``num_stages`` (or a single stage) this way.

    Example:
        >>> signal_stages(128), signal_stages(100), signal_stages(128, 2)
        (4, 2, 2)
    """

    def fits(n: int) -> bool:
        return length % 2**n == 0 and length // 2**n >= MIN_START

    if num_stages is not None:
        require_int("num_stages", num_stages, 1)
        require(
            fits(num_stages),
            "num_stages",
            num_stages,
            f"the time length {length} must be divisible by 2^num_stages and leave >= {MIN_START} steps",
        )
        return num_stages
    n = 0
    while n < MAX_STAGES and fits(n + 1):
        n += 1
    require(n > 0, "img_shape", length, f"the time length must be even and at least {2 * MIN_START}")
    return n


def _pad(kernel: int) -> tuple[int, int]:
    """Zero padding (before, after) that keeps the size for a stride-1 kernel, and halves an even size for a
    stride-2 one; asymmetric for even kernels, as ``padding="same"`` is."""
    before = (kernel - 1) // 2
    return before, kernel - 1 - before


def to_windows(x: Tensor, conv: Conv) -> Tensor:
    """A net's output maps as windows (N, 1, S, T): a 1-D net's (N, S, T) get their channel axis."""
    return rearrange(x, "n s t -> n 1 s t") if conv == "1d" else x


def from_windows(x: Tensor, conv: Conv) -> Tensor:
    """Windows (N, 1, S, T) as a net of layout ``conv`` reads them: (N, S, T) for a 1-D net."""
    return rearrange(x, "n 1 s t -> n s t") if conv == "1d" else x


class SignalLayout:
    """The two layouts: a (C, S, T) map convolved as an image, or a (C, T) sequence."""

    def __init__(self, conv: Conv, kernel: tuple[int, int]) -> None:
        self.conv = conv
        self.kernel = kernel

    def conv_layer(self, kernel: tuple[int, int], stride: int) -> WeightLayer:
        """Convs whose output keeps the sensor size and has time / stride steps."""
        k_time, k_sensor = kernel

        def make(c_in: int, c_out: int, bias: bool) -> nn.Module:
            if self.conv == "1d":
                pad = nn.ConstantPad1d(_pad(k_time), 0.0)
                return nn.Sequential(pad, nn.Conv1d(c_in, c_out, k_time, stride, bias=bias))
            pad = nn.ZeroPad2d((*_pad(k_time), *_pad(k_sensor)))  # (left, right, top, bottom)
            return nn.Sequential(pad, nn.Conv2d(c_in, c_out, (k_sensor, k_time), (1, stride), bias=bias))

        return make

    def upsample(self, mode: Upsample) -> nn.Upsample:
        """Doubles the time axis only."""
        if self.conv == "1d":
            return nn.Upsample(scale_factor=2, mode=mode)
        return nn.Upsample(scale_factor=(1, 2), mode="bilinear" if mode == "linear" else mode)

    @property
    def dims(self) -> int:
        return 1 if self.conv == "1d" else 2

    def downsample(self) -> nn.Module:
        """Halves the time axis only, by averaging."""
        return nn.AvgPool1d(2) if self.conv == "1d" else nn.AvgPool2d((1, 2))

    def resampling(self, mode: Upsample) -> Resampling:
        """A ResNet's convs (the layout's kernel; 1x1 in shortcuts) and time resizing."""
        return Resampling(
            self.conv_layer(self.kernel, 1), self.conv_layer((1, 1), 1), lambda: self.upsample(mode),
            self.downsample,
        )  # fmt: skip


class SignalNet:
    """What the signal generators and discriminators share: the windows' shape, layout and stages, and
    reading the windows as the layout does (mixed into a ``ConvGenerator`` or a
    ``ConditionalDiscriminator``)."""

    conv: Conv

    def init_signal(
        self, img_shape: tuple[int, int, int], conv: Conv, kernel: tuple[int, int], num_stages: int | None
    ) -> tuple[SignalLayout, int, int]:
        """Checks and keeps the windows' shape (``self.img_shape``), ``self.conv`` and
        ``self.window_channels`` (a window's channels in the layout: S for a 1-D net, else 1); returns the
        layout, the time length T and the number of stages."""
        layout = SignalLayout(conv, check_kernel("kernel", kernel))
        self.img_shape = check_signal_shape(img_shape)
        _, sensors, length = self.img_shape
        self.conv = conv
        self.window_channels = sensors if conv == "1d" else 1
        return layout, length, signal_stages(length, num_stages)

    def map_shape(self, channels: int, length: int) -> tuple[int, ...]:
        """The shape of a map of ``channels`` and ``length`` time steps: (C, t), or (C, S, t) for 2-D."""
        return (channels, length) if self.conv == "1d" else (channels, self.img_shape[1], length)

    def to_input(self, x: Tensor) -> Tensor:
        """(N, 1, S, T) windows; a 1-D net reads them as (N, S, T)."""
        return from_windows(x, self.conv)


class SignalGenerator(SignalNet, ConvGenerator):
    """Generator of (1, S, T) signal windows: z -> Linear to a short map, then x2 time stages -> Tanh.

    Each stage upsamples time by 2 (``upsample``, then a conv, as the notes preferred to transposed
    convolutions: "the waveforms are smooth earlier"), norm and ReLU; channels halve from
    ``base_channels * 2^n`` to ``base_channels``, and an output conv with ``out_kernel`` maps to the signal.

    Args:
        latent_dim: Size of z.
        img_shape: Output shape (1, S, T): S sensor channels, T time steps.
        num_classes: Number of classes K; 0 for an unconditional generator.
        conv: ``"2d"``: the window as an image, maps (C, S, t); ``"1d"``: maps (C, t) and an output conv
            to the S channels.
        base_channels: Channels of the last stage.
        kernel: (time, sensor) kernel of the stages.
        out_kernel: (time, sensor) kernel of the output conv.
        num_stages: x2 stages; by default as many as :func:`signal_stages` allows (4 for T = 128).
        upsample: ``"linear"`` (bilinear for 2-D maps) or ``"nearest"``.
        attention: Resolutions (time steps of a map) after which a self-attention block sits
            (:mod:`lightning_gan.nets.attention`): the start map's and every stage's.
        generator_args: The keys every generator takes (``norm``, ``conditioning``, ``embed_dim``,
            ``vbn_reference``, ``extra_blocks`` (here also after the start map) and the block switches), see
            :class:`~lightning_gan.nets.generator.ConvGenerator`.

    Example:
        >>> import torch
        >>> g = SignalGenerator(32, (1, 6, 128), 6, base_channels=4)
        >>> g(torch.randn(5, 32), torch.arange(5)).shape
        torch.Size([5, 1, 6, 128])
        >>> g = SignalGenerator(32, (1, 6, 128), 6, conv="1d", base_channels=4, conditioning="cbn")
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
        spec, channels = self.spec, base_channels * 2**n
        same = layout.conv_layer(layout.kernel, 1)
        self.project_to(self.map_shape(channels, length // 2**n), same)
        stages, points = [], {length // 2**n: (self.project_norm, channels)}  # resolution -> (after, C)
        for i in range(n):
            c_out = channels // 2 ** (i + 1)
            up = (layout.upsample(upsample),)
            extra = repeat_blocks(spec, same, c_out, self.extra_blocks)
            stages.append(ConditionalSequential(*block(spec, same, 2 * c_out, c_out, pre=up), *extra))
            points[length // 2 ** (n - i - 1)] = (stages[-1], c_out)
        self.stages = ConditionalSequential(*stages)
        add_attention("attention", attention, points)
        out = layout.conv_layer(out_kernel, 1)
        self.output = nn.Sequential(*block(spec, out, base_channels, self.window_channels, last=nn.Tanh()))
        self.init_weights()

    def to_output(self, x: Tensor, labels: Tensor | None) -> Tensor:
        """The output conv, then windows (N, 1, S, T) in [-1, 1]."""
        return to_windows(self.output(x), self.conv)


class SignalDiscriminator(SignalNet, ConditionalDiscriminator):
    """Discriminator of (1, S, T) signal windows: strided convs along time -> flatten -> Linear score.

    Each stage is a conv with stride 2 in time (sensor rows keep their size), norm (except after the first,
    as in DCGAN) and LeakyReLU(0.2); channels double from ``base_channels``.

    Args:
        img_shape: Input shape (1, S, T).
        num_classes: Number of classes K whose label D takes as input (CGAN); 0 for none.
        conv: ``"2d"`` (the window as an image) or ``"1d"`` (Conv1d over the S channels).
        base_channels: Channels of the first conv.
        kernel: (time, sensor) kernel of every stage.
        num_stages: Stride-2 stages; by default as many as :func:`signal_stages` allows.
        extra_blocks: Stride-1 conv blocks added to every stage (depth).
        attention: Resolutions (time steps of a map) after which a self-attention block sits: any stage's.
        discriminator_args: The keys every D takes (``class_head``, ``norm`` after every conv but the
            first, not ``"batch"`` with a gradient penalty; ``label_input``, ``minibatch`` and its sizes, the
            block switches), see :class:`~lightning_gan.nets.discriminator.ConditionalDiscriminator`.

    Example:
        >>> import torch
        >>> d = SignalDiscriminator((1, 6, 128), 6, class_head=6, base_channels=4)
        >>> out = d(torch.randn(5, 1, 6, 128), torch.arange(5))
        >>> out.logits.shape, out.class_logits.shape, out.features.shape
        (torch.Size([5]), torch.Size([5, 6]), torch.Size([5, 1536]))
    """

    def __init__(
        self,
        img_shape: tuple[int, int, int],
        num_classes: int = 0,
        *,
        conv: Conv = "2d",
        base_channels: int = 32,
        kernel: tuple[int, int] = (5, 2),
        num_stages: int | None = None,
        extra_blocks: int = 0,
        attention: Sequence[int] = (),
        **discriminator_args,
    ) -> None:
        check_choice("conv", conv, get_args(Conv))
        super().__init__(num_classes, dims=1 if conv == "1d" else 2, **discriminator_args)
        require_int("base_channels", base_channels, 1)
        layout, length, n = self.init_signal(img_shape, conv, kernel, num_stages)
        weight, same = layout.conv_layer(layout.kernel, 2), layout.conv_layer(layout.kernel, 1)
        c_first = self.window_channels + self.label_channels
        self.stages = downsampling_stages(self.spec, weight, same, c_first, base_channels, n, extra_blocks)
        add_attention("attention", attention, halving_points(self.stages, length, base_channels))
        rows = 1 if conv == "1d" else self.img_shape[1]
        self.init_heads(base_channels * 2 ** (n - 1) * rows * (length // 2**n))
        init_dcgan_weights_(self)
