"""Layers that let D see a sample next to the rest of its batch (issue 16, item 3), a remedy for mode
collapse: D can tell a batch of near-copies from a varied one. They sit between D's features and its heads,
(N, F) -> (N, F + extra), on the DCGAN, signal and MLP discriminators (``minibatch=...`` of each).

Example:
    >>> import torch
    >>> layer, width = make_minibatch_layer("discrimination", 8, kernels=3, kernel_dim=2)
    >>> layer(torch.randn(4, 8)).shape, width
    (torch.Size([4, 11]), 11)
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from einops import rearrange
from torch import Tensor, nn

from lightning_gan.validation import require, require_int

MinibatchKind = Literal["none", "stddev", "discrimination"]


class MinibatchStdDev(nn.Module):
    """The minibatch standard deviation (Karras et al. 2018, sec. 3): each feature's standard deviation over
    the batch, averaged into one number, appended to every sample's features. (N, F) -> (N, F + 1)."""

    def forward(self, features: Tensor) -> Tensor:
        std = torch.sqrt(features.var(dim=0, unbiased=False) + 1e-8).mean()
        return torch.cat([features, std.expand(len(features), 1)], dim=1)


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016, sec. 3.2): features f_i are projected by a tensor T to
    B kernels of dimension C, M_i = f_i T (B x C); o(x_i)_b = sum_{j != i} exp(-||M_{i,b} - M_{j,b}||_1) is
    appended to f_i. (N, F) -> (N, F + B).

    Args:
        num_features: F.
        kernels: B.
        kernel_dim: C.
    """

    def __init__(self, num_features: int, kernels: int = 50, kernel_dim: int = 5) -> None:
        super().__init__()
        require_int("minibatch_kernels", kernels, 1)
        require_int("minibatch_kernel_dim", kernel_dim, 1)
        self.kernels, self.kernel_dim = kernels, kernel_dim
        # DCGAN's N(0, 0.02) init, as for D's other weights (init_dcgan_weights_ knows only Conv/Linear)
        self.T = nn.Parameter(torch.randn(num_features, kernels * kernel_dim) * 0.02)

    def forward(self, features: Tensor) -> Tensor:
        m = rearrange(features @ self.T, "n (b c) -> n b c", b=self.kernels)  # (N, B, C)
        distance = (m[:, None] - m[None]).abs().sum(-1)  # (N, N, B): L1 between every pair, per kernel
        closeness = torch.exp(-distance).sum(1) - 1  # (N, B): the sample itself (exp(0) = 1) left out
        return torch.cat([features, closeness], dim=1)


def make_minibatch_layer(
    kind: MinibatchKind, num_features: int, kernels: int = 50, kernel_dim: int = 5
) -> tuple[nn.Module | None, int]:
    """The minibatch layer ``kind`` on F features (None for ``none``), and the width of its output."""
    kinds = get_args(MinibatchKind)
    require(kind in kinds, "minibatch", kind, f"choose one of {', '.join(kinds)}")
    if kind == "stddev":
        return MinibatchStdDev(), num_features + 1
    if kind == "discrimination":
        return MinibatchDiscrimination(num_features, kernels, kernel_dim), num_features + kernels
    return None, num_features
