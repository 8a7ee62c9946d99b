"""What the DCGAN, ResNet and signal generators share (issues 17, 18): the keys every generator takes (norm,
the label's way in, the block switches), z's projection to the start map, and a forward that adds and
removes the virtual batch norm's reference batch. A backbone builds its stages from ``ConvGenerator.spec``
in between."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, get_args

from torch import Tensor, nn

from lightning_gan.nets.blocks import Activation, WeightLayer, check_choice, generator_spec, repeat_blocks
from lightning_gan.nets.conditioning import ConditionalSequential, LatentConditioning, require_labels
from lightning_gan.nets.layers import GeneratorNormKind, init_dcgan_weights_
from lightning_gan.nets.vbn import ReferenceBatch, decode_with_reference
from lightning_gan.validation import require_int

Conditioning = Literal["concat", "multiply", "cbn"]


class ConvGenerator(nn.Module):
    """The base of the DCGAN, ResNet and signal generators: z (and a label) -> Linear to a start map -> the
    backbone's stages (``self.stages``, after ``self.project_norm``) -> :meth:`to_output`.

    Args:
        latent_dim: Size of z.
        num_classes: Number of classes K; 0 for an unconditional generator.
        dims: The maps' spatial dimensions (2, or 1 for Conv1d stages): set by the backbone.
        norm: Norm after every stage but the output; ``"virtual"``: virtual batch norm
            (:mod:`lightning_gan.nets.vbn`) over a reference batch that every forward decodes too.
        conditioning: How labels enter when ``num_classes > 0``: ``"concat"``/``"multiply"`` into z (see
            ``LatentConditioning``), or ``"cbn"``: class-conditional BatchNorm (needs ``norm="batch"``).
        embed_dim: Label embedding size for ``conditioning="concat"``.
        vbn_reference: Size R >= 2 of the reference batch of ``norm="virtual"`` (unused otherwise).
        extra_blocks: Stride-1 conv blocks added at every resolution but the output's (depth).
        activation, activation_slope: The blocks' activation (:class:`~lightning_gan.nets.blocks.BlockSpec`);
            ReLU by default.
        block_switches: ``norm_groups``, ``dropout``, ``dropout_at_sampling``, ``block_noise``, see
            :func:`~lightning_gan.nets.blocks.generator_spec`.
    """

    def __init__(
        self,
        latent_dim: int,
        num_classes: int = 0,
        *,
        dims: int = 2,
        norm: GeneratorNormKind = "batch",
        conditioning: Conditioning = "concat",
        embed_dim: int = 10,
        vbn_reference: int = 64,
        extra_blocks: int = 0,
        activation: Activation = "relu",
        activation_slope: float = 0.2,
        **block_switches,
    ) -> None:
        super().__init__()
        require_int("latent_dim", latent_dim, 1)
        require_int("num_classes", num_classes, 0)
        check_choice("norm", norm, get_args(GeneratorNormKind))
        check_choice("conditioning", conditioning, get_args(Conditioning))
        cbn = num_classes > 0 and conditioning == "cbn"
        self.spec = generator_spec(
            norm,
            activation,
            activation_slope,
            dims,
            num_classes if cbn else 0,
            vbn_reference,
            **block_switches,
        )
        self.latent_dim, self.num_classes, self.extra_blocks = latent_dim, num_classes, extra_blocks
        # None when unconditional, so an unconditional G keeps its parameter names and init RNG stream.
        latent_cond = num_classes > 0 and not cbn
        self.condition = (
            LatentConditioning(latent_dim, num_classes, conditioning, embed_dim) if latent_cond else None
        )
        self.reference: ReferenceBatch | None = None

    def project_to(self, start_shape: tuple[int, ...], same: WeightLayer | None) -> None:
        """z's Linear to ``start_shape`` (C, ...), then its norm, activation and the extra blocks (``same``:
        a stride-1 weight layer of the backbone) as ``self.project_norm``; with ``same=None`` nothing follows
        the Linear (a ResNet's blocks start with their own norm and activation)."""
        self.start_shape = start_shape
        in_dim = self.condition.out_dim if self.condition is not None else self.latent_dim
        self.project = nn.Linear(in_dim, math.prod(start_shape))
        channels = start_shape[0]
        after = [] if same is None else self.spec.post(channels)
        if same is not None:
            after += repeat_blocks(self.spec, same, channels, self.extra_blocks)
        self.project_norm = ConditionalSequential(*after)

    def init_weights(self, init: Callable[[nn.Module], None] = init_dcgan_weights_) -> None:
        """``init`` of every weight (the DCGAN init by default), then the reference batch of
        ``norm="virtual"`` (drawn after the weights, which are then those of the same G with another norm).
        The backbone calls it last."""
        init(self)
        if self.spec.norm == "virtual":
            self.reference = ReferenceBatch(self.spec.vbn_reference, self.latent_dim, self.num_classes)

    def to_output(self, x: Tensor, labels: Tensor | None) -> Tensor:
        """The last stage's maps (and the labels, for a conditional norm) to the output; the identity unless
        the backbone says otherwise."""
        return x

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Map z (N, latent_dim) and labels (N,) (int64; needed iff ``num_classes > 0``, else ignored) to
        samples (N, C, H, W) in [-1, 1]."""
        if self.num_classes > 0:
            labels = require_labels(labels, self.num_classes)
        return decode_with_reference(self.reference, self._decode, z, labels)

    def _decode(self, z: Tensor, labels: Tensor | None) -> Tensor:
        if self.condition is not None:
            z = self.condition(z, labels)  # (N, latent_dim + embed_dim) for concat
        x = self.project(z).view(len(z), *self.start_shape)
        return self.to_output(self.stages(self.project_norm(x, labels), labels), labels)
