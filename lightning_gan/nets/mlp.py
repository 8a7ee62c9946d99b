"""Fully connected CGAN generator and discriminator (Mirza & Osindero 2014), the source notes' MNIST nets.

With (1, 28, 28), latent 100 and 10 classes: G is [100-d z, 10-d label embedding] -> 256 -> 512 -> 1024 ->
784 -> Tanh; D is [784 pixels, 10-d label embedding] -> 1024 -> 512 -> 256 -> 1, with LeakyReLU(0.2).
"""

import math
from typing import get_args

import torch
from einops import rearrange
from torch import Tensor, nn

from lightning_gan.nets.blocks import Activation, BlockSpec, block, check_choice, generator_spec, linear
from lightning_gan.nets.conditioning import require_labels
from lightning_gan.nets.layers import DOut, NormKind, check_img_shape
from lightning_gan.nets.minibatch import MinibatchKind, make_minibatch_layer
from lightning_gan.validation import require, require_int


def _check_hidden(hidden: tuple[int, ...]) -> tuple[int, ...]:
    hidden = tuple(hidden)
    ok = len(hidden) > 0 and all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden)
    require(ok, "hidden", hidden, "must be one or more integers >= 1")
    return hidden


class MLPGenerator(nn.Module):
    """MLP generator: [z, label embedding] -> hidden Linear layers -> Linear to C*H*W -> Tanh -> image.

    Each hidden layer is Linear -> norm -> activation (BatchNorm1d and LeakyReLU by default). The label
    embedding is concatenated to z only when ``num_classes > 0``; an unconditional net ignores labels.

    Args:
        latent_dim: Size of z.
        img_shape: Output shape (C, H, W).
        num_classes: Number of classes K; 0 for an unconditional generator.
        hidden: Widths of the hidden layers.
        embed_dim: Size of the label embedding.
        negative_slope: LeakyReLU slope.
        norm: The norm after every hidden Linear: ``true`` (BatchNorm1d, which cancels the Linear's bias, so
            that bias is dropped), ``false`` (none), or a name: batch, layer, group, none (``instance`` has
            nothing to normalise in features and is refused).
        activation: The activation of the hidden layers (leakyrelu uses ``negative_slope``).
        block_switches: ``norm_groups``, ``dropout``, ``dropout_at_sampling``, ``block_noise``, see
            :func:`~lightning_gan.nets.blocks.generator_spec`.

    Example:
        >>> g = MLPGenerator(100, (1, 28, 28), 10)
        >>> g(torch.randn(5, 100), torch.arange(5)).shape
        torch.Size([5, 1, 28, 28])
    """

    def __init__(
        self,
        latent_dim: int,
        img_shape: tuple[int, int, int],
        num_classes: int = 0,
        *,
        hidden: tuple[int, ...] = (256, 512, 1024),
        embed_dim: int = 10,
        negative_slope: float = 0.2,
        norm: bool | NormKind = True,
        activation: Activation = "leakyrelu",
        **block_switches,
    ) -> None:
        super().__init__()
        require_int("latent_dim", latent_dim, 1)
        require_int("num_classes", num_classes, 0)
        require_int("embed_dim", embed_dim, 1)
        require(negative_slope >= 0, "negative_slope", negative_slope, "must be >= 0")
        hidden = _check_hidden(hidden)
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.img_shape = check_img_shape(img_shape)

        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes > 0 else None
        if isinstance(norm, bool):
            norm = "batch" if norm else "none"
        check_choice("norm", norm, get_args(NormKind))
        spec = generator_spec(norm, activation, negative_slope, 0, **block_switches)
        layers: list[nn.Module] = []
        width = latent_dim + embed_dim if num_classes > 0 else latent_dim
        for h in hidden:
            layers += block(spec, linear, width, h, norm=spec.norm != "none")
            width = h
        layers += block(spec, linear, width, math.prod(self.img_shape), last=nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Map z (N, latent_dim) and labels (N,) (int64; needed iff ``num_classes > 0``, else ignored)
        to images (N, C, H, W) in [-1, 1]."""
        if self.embed is not None:
            z = torch.cat([z, self.embed(require_labels(labels, self.num_classes))], dim=1)  # (N, in)
        c, h, w = self.img_shape
        return rearrange(self.net(z), "n (c h w) -> n c h w", c=c, h=h, w=w)


class MLPDiscriminator(nn.Module):
    """MLP discriminator: [flattened image, label embedding] -> hidden Linear layers -> features -> score.

    Each hidden layer is Linear -> LeakyReLU -> Dropout. There is no BatchNorm, so each sample's score
    depends only on that sample, as a gradient penalty or spectral norm assumes.

    Args:
        img_shape: Input shape (C, H, W).
        num_classes: Number of classes K whose label D takes as input (CGAN); 0 for none.
        class_head: Size of an extra class-logit head on the features (ACGAN, semi-supervised GAN); 0 for
            none, giving ``class_logits=None``.
        hidden: Widths of the hidden layers; the last is the feature size F.
        embed_dim: Size of the label embedding.
        negative_slope: LeakyReLU slope.
        activation: The activation of the hidden layers (leakyrelu uses ``negative_slope``).
        dropout: Dropout probability after every hidden layer; 0 for none.
        minibatch: ``none``, ``stddev`` (minibatch standard deviation, Karras et al. 2018) or
            ``discrimination`` (Salimans et al. 2016, sec. 3.2): batch statistics appended to the features.
        minibatch_kernels, minibatch_kernel_dim: B and C of minibatch discrimination.

    Example:
        >>> d = MLPDiscriminator((1, 28, 28), 10, class_head=10)
        >>> out = d(torch.randn(5, 1, 28, 28), torch.arange(5))
        >>> out.logits.shape, out.class_logits.shape, out.features.shape
        (torch.Size([5]), torch.Size([5, 10]), torch.Size([5, 256]))
    """

    def __init__(
        self,
        img_shape: tuple[int, int, int],
        num_classes: int = 0,
        *,
        class_head: int = 0,
        hidden: tuple[int, ...] = (1024, 512, 256),
        embed_dim: int = 10,
        negative_slope: float = 0.2,
        dropout: float = 0.3,
        minibatch: MinibatchKind = "none",
        minibatch_kernels: int = 50,
        minibatch_kernel_dim: int = 5,
        activation: Activation = "leakyrelu",
    ) -> None:
        super().__init__()
        require_int("num_classes", num_classes, 0)
        require_int("class_head", class_head, 0)
        require_int("embed_dim", embed_dim, 1)
        require(negative_slope >= 0, "negative_slope", negative_slope, "must be >= 0")
        hidden = _check_hidden(hidden)
        self.num_classes = num_classes
        self.img_shape = check_img_shape(img_shape)

        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes > 0 else None
        layers: list[nn.Module] = []
        self.layer_ends: list[int] = []
        width = math.prod(self.img_shape) + (embed_dim if num_classes > 0 else 0)
        spec = BlockSpec(
            "none", activation=activation, activation_slope=negative_slope, dims=0, dropout=dropout
        )
        for h in hidden:
            layers += block(spec, linear, width, h, norm=False)
            self.layer_ends.append(len(layers) - 1)  # index of each hidden layer's last module
            width = h
        self.net = nn.Sequential(*layers)
        self.minibatch, width = make_minibatch_layer(
            minibatch, width, minibatch_kernels, minibatch_kernel_dim
        )
        self.num_features = width
        self.head = nn.Linear(width, 1)
        self.classifier = nn.Linear(width, class_head) if class_head > 0 else None

    def feature_blocks(self) -> list[nn.Module]:
        """D's blocks in order, which ``--model.feature_layer`` indexes: the last module (LeakyReLU or
        Dropout) of each hidden layer, whose output is that layer's."""
        return [self.net[end] for end in self.layer_ends]

    def forward(self, x: Tensor, labels: Tensor | None = None) -> DOut:
        """Score images x (N, C, H, W) given labels (N,) (int64; needed iff ``num_classes > 0``, else
        ignored)."""
        x = rearrange(x, "n c h w -> n (c h w)")
        if self.embed is not None:
            x = torch.cat([x, self.embed(require_labels(labels, self.num_classes))], dim=1)  # (N, CHW + E)
        features = self.net(x)  # (N, F)
        if self.minibatch is not None:
            features = self.minibatch(features)  # (N, F + batch statistics)
        logits = rearrange(self.head(features), "n 1 -> n")  # (N,)
        class_logits = self.classifier(features) if self.classifier is not None else None  # (N, K)
        return DOut(logits=logits, class_logits=class_logits, features=features)
