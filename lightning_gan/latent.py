"""The distribution of G's latent vectors z (notes 003 compared them: Gaussian and Laplace alike, uniform far
worse), drawn the same way wherever z is drawn: the training step (from its own stream), ``SampleGrid``,
``GANMetrics``, ``generate`` and ``MixedDataModule`` (from their seeded generators), all through
:meth:`lightning_gan.models.GAN.sample_latent`.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> z = draw_latent("laplace", 20000, 2, generator=g)
    >>> round(z.mean().item(), 1), round(z.var().item(), 1)  # Laplace(0, 1): mean 0, variance 2
    (0.0, 2.0)
    >>> bool(draw_latent("gaussian", 100, 8, truncation=0.5).abs().max() <= 0.5)
    True
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from lightning_gan.validation import require

LatentKind = Literal["gaussian", "uniform", "laplace"]


def check_latent(kind: str) -> None:
    """Refuses a latent distribution that is not one of :data:`LatentKind`, naming ``model.latent``."""
    kinds = get_args(LatentKind)
    require(kind in kinds, "model.latent", kind, f"choose one of {', '.join(kinds)}")


def check_truncation(truncation: float | None, kind: str = "gaussian", key: str = "truncation") -> None:
    """Refuses a truncation threshold <= 0, or one for a distribution other than the gaussian."""
    if truncation is None:
        return
    require(truncation > 0, key, truncation, "must be > 0 (or unset for no truncation)")
    require(
        kind == "gaussian", key, truncation, f"truncates the gaussian latent only, not model.latent={kind!r}"
    )


def draw_latent(
    kind: LatentKind,
    num_samples: int,
    latent_dim: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    truncation: float | None = None,
) -> Tensor:
    """z of shape (num_samples, latent_dim): ``gaussian`` N(0, 1), ``uniform`` U(-1, 1) (DCGAN's, Radford et
    al. 2016) or ``laplace`` Laplace(0, 1) (the difference of two Exp(1)) in each coordinate. With
    ``truncation`` t, gaussian coordinates with |z| > t are drawn again until none is left (the truncation
    trick: samples nearer the mode, less varied). Drawn on ``device`` (the generator's, when given one)."""
    check_latent(kind)
    check_truncation(truncation, kind)
    if generator is not None:
        device = generator.device
    shape = (num_samples, latent_dim)
    if kind == "uniform":
        return torch.rand(shape, generator=generator, device=device) * 2 - 1
    if kind == "laplace":
        exponentials = torch.empty(2, *shape, device=device).exponential_(generator=generator)
        return exponentials[0] - exponentials[1]
    z = torch.randn(shape, generator=generator, device=device)
    if truncation is not None:
        while (outside := z.abs() > truncation).any():
            z[outside] = torch.randn(int(outside.sum()), generator=generator, device=device)
    return z
