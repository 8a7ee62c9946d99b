"""Label-injection blocks that any backbone composes: into G's latent or norms, into D's input or head.

Every block takes integer class labels of shape (N,) (int64) next to its usual input.
"""

from typing import Literal, get_args

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lightning_gan.validation import require, require_int

LatentMode = Literal["concat", "multiply"]


def require_labels(labels: Tensor | None, num_classes: int) -> Tensor:
    """Return ``labels``, raising if a conditional net (``num_classes > 0``) was called without them.

    Raises:
        ValueError: If ``labels`` is None.

    Example:
        >>> require_labels(None, 10)
        Traceback (most recent call last):
        ...
        ValueError: labels=None is not allowed: a net with num_classes=10 needs labels of shape (N,)
    """
    require(
        labels is not None,
        "labels",
        labels,
        f"a net with num_classes={num_classes} needs labels of shape (N,)",
    )
    return labels  # type: ignore[return-value]


class LatentConditioning(nn.Module):
    """Inject the label into G's latent vector before G's first layer.

    ``"concat"``: ``cat(z, Embedding(y))`` with an ``embed_dim``-d embedding, the CGAN input of Mirza &
    Osindero 2014 (100-d noise + 10-d label embedding in the source notes). ``"multiply"``:
    ``z * Embedding(y)`` with a ``latent_dim``-d embedding, as in PyTorch-GAN's ACGAN
    (``torch.mul(self.label_emb(labels), noise)``); ``embed_dim`` is then unused.

    Args:
        latent_dim: Size of z.
        num_classes: Number of classes K.
        mode: ``"concat"`` or ``"multiply"``.
        embed_dim: Embedding size for ``"concat"``.

    Attributes:
        out_dim: Size of the conditioned latent: ``latent_dim + embed_dim`` (concat) or ``latent_dim``.

    Example:
        >>> cond = LatentConditioning(100, 10, "concat")
        >>> cond(torch.randn(4, 100), torch.arange(4)).shape, cond.out_dim
        (torch.Size([4, 110]), 110)
    """

    def __init__(self, latent_dim: int, num_classes: int, mode: LatentMode, embed_dim: int = 10) -> None:
        super().__init__()
        require_int("latent_dim", latent_dim, 1)
        require_int("num_classes", num_classes, 1)
        require_int("embed_dim", embed_dim, 1)
        allowed = get_args(LatentMode)
        require(mode in allowed, "mode", mode, f"choose one of {', '.join(allowed)}")
        self.mode = mode
        dim = embed_dim if mode == "concat" else latent_dim
        self.embed = nn.Embedding(num_classes, dim)
        self.out_dim = latent_dim + embed_dim if mode == "concat" else latent_dim

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        """Map z (N, latent_dim) and labels (N,) to the conditioned latent (N, out_dim)."""
        e = self.embed(labels)  # (N, embed_dim) or (N, latent_dim)
        return torch.cat([z, e], dim=1) if self.mode == "concat" else z * e


class ConditionalBatchNorm(nn.Module):
    """BatchNorm whose scale and shift are looked up per class (de Vries et al. 2017; Miyato &
    Koyama 2018, sec. 4): ``gamma[y] * BN(x) + beta[y]``, for maps of any number of spatial dimensions.

    ``gamma`` starts at 1 and ``beta`` at 0, so the layer starts as a plain BatchNorm for every class. Use
    :class:`ConditionalBatchNorm2d` (N, C, H, W) or :class:`ConditionalBatchNorm1d` (N, C, L).
    """

    batch_norm: type[nn.Module] = nn.BatchNorm2d
    takes_labels = True

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        require_int("num_features", num_features, 1)
        require_int("num_classes", num_classes, 1)
        self.bn = self.batch_norm(num_features, affine=False)
        self.gamma = nn.Embedding(num_classes, num_features)
        self.beta = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """Normalise x (N, C, ...) with the scale and shift of labels (N,); returns (N, C, ...)."""
        trailing = (1,) * (x.ndim - 2)  # broadcast (N, C) over the spatial dimensions
        gamma = self.gamma(labels).view(*labels.shape, -1, *trailing)
        beta = self.beta(labels).view(*labels.shape, -1, *trailing)
        return gamma * self.bn(x) + beta


class ConditionalBatchNorm2d(ConditionalBatchNorm):
    """:class:`ConditionalBatchNorm` for (N, C, H, W) maps.

    Example:
        >>> cbn = ConditionalBatchNorm2d(8, 10)
        >>> cbn(torch.randn(4, 8, 5, 5), torch.arange(4)).shape
        torch.Size([4, 8, 5, 5])
    """

    batch_norm = nn.BatchNorm2d


class ConditionalBatchNorm1d(ConditionalBatchNorm):
    """:class:`ConditionalBatchNorm` for (N, C, L) sequences (Conv1d nets).

    Example:
        >>> ConditionalBatchNorm1d(8, 10)(torch.randn(4, 8, 32), torch.arange(4)).shape
        torch.Size([4, 8, 32])
    """

    batch_norm = nn.BatchNorm1d


class ConditionalSequential(nn.Sequential):
    """A Sequential that also passes ``labels`` to the layers that take them.

    Those are the layers whose class says ``takes_labels = True``: ``ConditionalBatchNorm``, nested
    ``ConditionalSequential``s and residual blocks; every other layer gets ``x`` only. Without such layers
    it computes exactly what ``nn.Sequential`` does, with the same parameter names.

    Example:
        >>> seq = ConditionalSequential(nn.Conv2d(1, 4, 3), ConditionalBatchNorm2d(4, 10), nn.ReLU())
        >>> seq(torch.randn(2, 1, 5, 5), torch.tensor([3, 7])).shape
        torch.Size([2, 4, 3, 3])
    """

    takes_labels = True

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Apply the layers in order to x, giving ``labels`` (N,) to the label-taking ones."""
        for layer in self:
            x = layer(x, labels) if getattr(layer, "takes_labels", False) else layer(x)
        return x


class LabelMaps(nn.Module):
    """Append the one-hot label as K constant maps to D's input: the classic conv CGAN discriminator input
    (Mirza & Osindero 2014 feed y to D next to x; tiling it spatially lets a conv see it everywhere).

    Args:
        num_classes: Number of classes K.

    Example:
        >>> LabelMaps(10)(torch.randn(4, 1, 28, 28), torch.arange(4)).shape
        torch.Size([4, 11, 28, 28])
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        require_int("num_classes", num_classes, 1)
        self.num_classes = num_classes

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """Concatenate x (N, C, ...) with labels' one-hot maps of the same spatial size: images (N, C, H, W)
        give (N, C + K, H, W), sequences (N, C, L) give (N, C + K, L)."""
        one_hot = F.one_hot(labels, self.num_classes).to(x.dtype)  # (N, K)
        trailing = (1,) * (x.ndim - 2)
        maps = one_hot.view(*one_hot.shape, *trailing).expand(-1, -1, *x.shape[2:])
        return torch.cat([x, maps], dim=1)


class ProjectionHead(nn.Module):
    """The projection discriminator's class term ``<Embedding(y), phi(x)>`` (Miyato & Koyama 2018, eq. 3),
    added to D's unconditional logit ``psi(phi(x))``.

    The embedding is Glorot-uniform initialised, as in the authors' code (pfnet-research/sngan_projection,
    ``SNEmbedID(initialW=GlorotUniform())``): the default N(0, 1) would dwarf D's N(0, 0.02) head.

    Args:
        num_features: Size F of D's features phi(x).
        num_classes: Number of classes K.

    Example:
        >>> ProjectionHead(16, 10)(torch.randn(4, 16), torch.arange(4)).shape
        torch.Size([4])
    """

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        require_int("num_features", num_features, 1)
        require_int("num_classes", num_classes, 1)
        self.embed = nn.Embedding(num_classes, num_features)
        nn.init.xavier_uniform_(self.embed.weight)

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """Score features (N, F) against labels (N,); returns (N,)."""
        return (self.embed(labels) * features).sum(dim=1)
