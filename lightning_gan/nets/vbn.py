"""Virtual batch normalisation (Salimans et al. 2016, "Improved Techniques for Training GANs", sec. 3.5), a
norm choice of the generators (``norm="virtual"``, ``vbn_reference=R``).

BatchNorm makes a sample's output depend on the other samples of its batch. VBN normalises each sample
instead with the statistics of a *reference batch* fixed once, when G is built, plus the sample itself. Here
G holds R reference latent vectors (and, for a conditional G, R balanced labels ``arange(R) % K``) as
buffers (:class:`ReferenceBatch`: in every checkpoint, so a resume and ``lightning-gan generate`` use the
same), and each forward decodes them together with the asked batch, the reference first: every
:class:`VirtualBatchNorm` layer then takes the first R rows of its input as the reference batch. Training
and sampling compute the same thing (there are no running statistics), and a sample's output never depends
on the rest of its batch.

Cost: every G forward decodes R more samples than asked (R = 64 by default), in training and in sampling.

Example:
    >>> import torch
    >>> vbn = VirtualBatchNorm(4, reference_size=8)
    >>> x = torch.randn(8 + 3, 4, 5, 5)  # the reference batch, then 3 samples
    >>> out = vbn(x)
    >>> out.shape
    torch.Size([11, 4, 5, 5])
    >>> torch.allclose(vbn(torch.cat([x[:8], x[9:10]]))[8], out[9])  # the other samples play no part
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lightning_gan.validation import is_int, require

EPS = 1e-5  # as the authors' VBN (openai/improved-gan) and BatchNorm


def require_reference_size(size: object) -> None:
    """Refuses a reference batch of fewer than 2 samples, which has no batch statistics."""
    require(
        is_int(size) and size >= 2,
        "vbn_reference",
        size,
        "must be an integer >= 2: a reference batch of one sample has no batch statistics",
    )


class VirtualBatchNorm(nn.Module):
    """Virtual batch normalisation of maps (N, C, ...) whose first ``reference_size`` rows are the reference
    batch: (N, C), (N, C, L) or (N, C, H, W).

    The reference rows are normalised with the reference batch's own per-channel mean and mean of squares
    (over the batch and the spatial or time dimensions). Each other row x_i is normalised with statistics
    combined from the reference batch and itself, as the authors' code does::

        mean_i = mean(x_i) / (R + 1) + R / (R + 1) * ref_mean      (likewise for the mean of squares)
        out_i = (x_i - mean_i) / sqrt(meansq_i - mean_i^2 + eps) * gamma + beta

    with a per-channel affine ``gamma``, ``beta`` (``init_dcgan_weights_`` draws gamma ~ N(1, 0.02)).
    Gradients flow through the reference statistics too. The variance is clamped at 0 against rounding.

    Args:
        num_features: Channels C.
        reference_size: R, the rows of every input that are the reference batch (>= 2).
    """

    def __init__(self, num_features: int, reference_size: int) -> None:
        super().__init__()
        require(is_int(num_features) and num_features >= 1, "num_features", num_features, "must be >= 1")
        require_reference_size(reference_size)
        self.num_features = num_features
        self.reference_size = reference_size
        self.weight = nn.Parameter(torch.ones(num_features))  # gamma
        self.bias = nn.Parameter(torch.zeros(num_features))  # beta

    def forward(self, x: Tensor) -> Tensor:
        """Normalise x (R + N, C, ...), the reference batch first; returns the same shape."""
        r = self.reference_size
        require(
            x.ndim >= 2 and len(x) >= r,
            "input shape",
            tuple(x.shape),
            f"needs (N, C, ...) with the reference batch of {r} samples first",
        )
        spatial = tuple(range(2, x.ndim))
        # per-sample means over the spatial dimensions: (R + N, C, 1, ...)
        mean = x.mean(spatial, keepdim=True) if spatial else x
        meansq = x.square().mean(spatial, keepdim=True) if spatial else x.square()
        ref_mean, ref_meansq = mean[:r].mean(0, keepdim=True), meansq[:r].mean(0, keepdim=True)
        new = 1 / (r + 1)
        mean = torch.cat([ref_mean.expand(r, *ref_mean.shape[1:]), new * mean[r:] + (1 - new) * ref_mean])
        meansq = torch.cat(
            [ref_meansq.expand(r, *ref_meansq.shape[1:]), new * meansq[r:] + (1 - new) * ref_meansq]
        )
        var = (meansq - mean.square()).clamp_min(0)
        shape = (1, -1) + (1,) * len(spatial)  # broadcast (C,) over (N, C, ...)
        return (x - mean) * torch.rsqrt(var + EPS) * self.weight.view(shape) + self.bias.view(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, reference_size={self.reference_size}"


class ReferenceBatch(nn.Module):
    """A generator's VBN reference batch: R latent vectors ``z`` ~ N(0, I), drawn from the global torch RNG
    when built (so ``seed_everything`` repeats them), and for a conditional G the balanced labels
    ``arange(R) % K``; both persistent buffers. Calling it decodes the reference batch with the asked one.

    Args:
        size: R (>= 2).
        latent_dim: Size of z.
        num_classes: K; 0 for an unconditional G (no labels buffer).

    Example:
        >>> ref = ReferenceBatch(4, latent_dim=3, num_classes=3)
        >>> ref.z.shape, ref.labels
        (torch.Size([4, 3]), tensor([0, 1, 2, 0]))
        >>> ref(lambda z, labels: z * 2, torch.ones(2, 3), torch.tensor([1, 1]))
        tensor([[2., 2., 2.],
                [2., 2., 2.]])
    """

    def __init__(self, size: int, latent_dim: int, num_classes: int = 0) -> None:
        super().__init__()
        require_reference_size(size)
        self.register_buffer("z", torch.randn(size, latent_dim))
        labels = torch.arange(size) % num_classes if num_classes > 0 else None
        self.register_buffer("labels", labels)

    def forward(
        self, decode: Callable[[Tensor, Tensor | None], Tensor], z: Tensor, labels: Tensor | None = None
    ) -> Tensor:
        """``decode`` (G's layers) of the reference batch followed by z (N, latent_dim) and labels (N,), with
        the reference rows sliced off the output: N rows."""
        z = torch.cat([self.z.to(z.dtype), z])
        # an unconditional G ignores labels; a conditional one has checked that it got them
        labels = None if self.labels is None else torch.cat([self.labels, labels.to(self.labels.dtype)])
        return decode(z, labels)[len(self.z) :]


def decode_with_reference(
    reference: ReferenceBatch | None,
    decode: Callable[[Tensor, Tensor | None], Tensor],
    z: Tensor,
    labels: Tensor | None,
) -> Tensor:
    """``decode(z, labels)``, through ``reference`` when G has one (``norm="virtual"``): the one place the
    generators add and remove their reference batch."""
    return decode(z, labels) if reference is None else reference(decode, z, labels)
