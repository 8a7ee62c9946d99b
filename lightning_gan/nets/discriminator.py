"""What every conv discriminator shares (DCGAN, signal, ResNet): the keys every D takes (norm, the label's
way in, the minibatch layer, the class head, the block switches), the heads on D's features, and a forward
returning :class:`~lightning_gan.nets.layers.DOut`. A backbone builds its ``stages`` from
``ConditionalDiscriminator.spec`` in between."""

from __future__ import annotations

from typing import Literal, get_args

from torch import Tensor, nn

from lightning_gan.nets.blocks import Activation, BlockSpec, check_choice
from lightning_gan.nets.conditioning import LabelMaps, ProjectionHead, require_labels
from lightning_gan.nets.layers import DOut, NormKind
from lightning_gan.nets.minibatch import MinibatchKind, make_minibatch_layer
from lightning_gan.validation import require_int

LabelInput = Literal["concat", "projection"]


class ConditionalDiscriminator(nn.Module):
    """The base of the conv discriminators: x (and a label) -> :meth:`to_input` -> label maps (concat) ->
    the backbone's ``self.stages`` -> :meth:`to_features` -> minibatch layer -> real/fake head (+ projection
    term) and class head.

    A backbone calls ``super().__init__`` first (``self.label_channels`` then says how many label maps its
    first conv gets, ``self.spec`` holds its blocks' switches), builds ``self.stages``, then calls
    :meth:`init_heads` with the size of its features.

    Args:
        num_classes: Number of classes K whose label D takes as input (CGAN); 0 for none.
        class_head: Size of an extra class-logit head on the features (ACGAN's auxiliary classifier, the
            semi-supervised GAN's K classes); 0 for none, giving ``class_logits=None``.
        dims: The maps' spatial dimensions (2, or 1 for Conv1d stages): set by the backbone.
        norm: The blocks' norm. Use ``"none"``/``"layer"``/``"instance"`` with a gradient penalty, which
            assumes each sample's score depends only on that sample.
        label_input: How labels enter when ``num_classes > 0``: ``"concat"``: one-hot maps appended to the
            input (``LabelMaps``); ``"projection"``: a ``ProjectionHead`` term added to the logits.
        minibatch: ``none``, ``stddev`` (minibatch standard deviation, Karras et al. 2018) or
            ``discrimination`` (Salimans et al. 2016, sec. 3.2): batch statistics appended to the features.
        minibatch_kernels, minibatch_kernel_dim: B and C of minibatch discrimination.
        norm_groups, activation, activation_slope: The block switches
            (:class:`~lightning_gan.nets.blocks.BlockSpec`); LeakyReLU(0.2) by default.
    """

    stages: nn.Module

    def __init__(
        self,
        num_classes: int = 0,
        *,
        class_head: int = 0,
        dims: int = 2,
        norm: NormKind = "batch",
        label_input: LabelInput = "concat",
        minibatch: MinibatchKind = "none",
        minibatch_kernels: int = 50,
        minibatch_kernel_dim: int = 5,
        norm_groups: int = 8,
        activation: Activation = "leakyrelu",
        activation_slope: float = 0.2,
    ) -> None:
        super().__init__()
        require_int("num_classes", num_classes, 0)
        require_int("class_head", class_head, 0)
        check_choice("norm", norm, get_args(NormKind))
        check_choice("label_input", label_input, get_args(LabelInput))
        self.spec = BlockSpec(norm, norm_groups, activation, activation_slope, dims)
        self.num_classes, self.label_input, self.class_head = num_classes, label_input, class_head
        self.minibatch_args = (minibatch, minibatch_kernels, minibatch_kernel_dim)
        # None unless used, so an unconditional D keeps its parameter names and init RNG stream.
        concat = num_classes > 0 and label_input == "concat"
        self.label_maps = LabelMaps(num_classes) if concat else None
        self.label_channels = num_classes if concat else 0

    def init_heads(self, num_features: int) -> None:
        """Build the minibatch layer, the real/fake head, the projection term (when labels enter by
        projection) and the class head on ``num_features``-d features."""
        kind, *sizes = self.minibatch_args
        self.minibatch, num_features = make_minibatch_layer(kind, num_features, *sizes)
        self.num_features = num_features
        self.head = nn.Linear(num_features, 1)
        projection = self.num_classes > 0 and self.label_input == "projection"
        self.projection = ProjectionHead(num_features, self.num_classes) if projection else None
        self.classifier = nn.Linear(num_features, self.class_head) if self.class_head > 0 else None

    def to_input(self, x: Tensor) -> Tensor:
        """What the stages take, from D's input; the identity unless a subclass reshapes."""
        return x

    def to_features(self, maps: Tensor) -> Tensor:
        """D's features (N, F) from its last stage's maps; flattened unless a subclass pools."""
        return maps.flatten(1)

    def feature_blocks(self) -> list[nn.Module]:
        """D's blocks in order (its stages), which ``--model.feature_layer`` indexes."""
        return list(self.stages)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> DOut:
        """Score x (N, C, H, W) given labels (N,) (int64; needed iff ``num_classes > 0``, else ignored)."""
        if self.num_classes > 0:
            labels = require_labels(labels, self.num_classes)
        x = self.to_input(x)
        if self.label_maps is not None:
            x = self.label_maps(x, labels)  # K more channels
        features = self.to_features(self.stages(x))  # (N, F)
        if self.minibatch is not None:
            features = self.minibatch(features)  # (N, F + batch statistics)
        logits = self.head(features).squeeze(1)  # (N,)
        if self.projection is not None:
            logits = logits + self.projection(features, labels)
        class_logits = self.classifier(features) if self.classifier is not None else None  # (N, K)
        return DOut(logits=logits, class_logits=class_logits, features=features)
