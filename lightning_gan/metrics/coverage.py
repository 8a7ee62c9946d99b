"""Mode collapse and mode dropping, measured on the judge's class predictions for generated samples."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class ClassCoverage(Metric):
    """How the judge spreads generated samples over the classes, against the real class histogram.

    ``coverage`` is the fraction of classes that receive at least ``min_share`` of the share they have in
    the real data (mode dropping lowers it); ``class_kl`` is KL(real || generated) between the class
    histograms, which grows without bound as classes are dropped and stays 0 for a perfect match.

    Args:
        real_distribution: (K,) class frequencies of the real data (normalised here).
        min_share: A class counts as covered when its generated share is at least this fraction of its
            real share (0.5: at least half as often as in the real data).
        eps: Added to every generated share before the KL, so a dropped class gives a large finite value.

    Example:
        >>> metric = ClassCoverage(torch.tensor([0.5, 0.5]))
        >>> metric.update(torch.tensor([[2.0, 0.0], [3.0, 1.0], [0.0, 1.0]]))
        >>> {k: round(v.item(), 3) for k, v in metric.compute().items()}
        {'coverage': 1.0, 'classes_covered': 2.0, 'class_kl': 0.059}
    """

    full_state_update = False
    counts: Tensor

    def __init__(
        self, real_distribution: Tensor, min_share: float = 0.5, eps: float = 1e-6, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if real_distribution.ndim != 1 or len(real_distribution) < 2 or (real_distribution < 0).any():
            raise ValueError(
                f"real_distribution of shape {tuple(real_distribution.shape)} is not allowed: "
                "need non-negative class frequencies of shape (K,) with K >= 2"
            )
        if not 0 < min_share <= 1:
            raise ValueError(f"min_share={min_share!r} is not allowed: must satisfy 0 < min_share <= 1")
        self.min_share = min_share
        self.eps = eps
        self.register_buffer("real_distribution", real_distribution.double() / real_distribution.sum())
        self.add_state(
            "counts", torch.zeros(len(real_distribution), dtype=torch.float64), dist_reduce_fx="sum"
        )

    def update(self, logits: Tensor) -> None:
        """Counts the judge's predicted class of each generated sample; logits (N, K)."""
        predicted = logits.argmax(dim=1)
        self.counts += torch.bincount(predicted, minlength=len(self.counts)).to(self.counts)

    def compute(self) -> dict[str, Tensor]:
        generated = self.counts / self.counts.sum()
        real = self.real_distribution
        covered = generated >= self.min_share * real
        present = real > 0  # a class absent from the real data adds nothing to KL(real || generated)
        kl = (real[present] * (real[present] / (generated[present] + self.eps)).log()).sum()
        return {
            "coverage": covered[present].double().mean(),
            "classes_covered": covered[present].double().sum(),
            "class_kl": kl,
        }
