"""Self-attention (Zhang et al. 2019, SAGAN) for the maps of any conv net, and where a net puts it (issue 18).

A net lists its attention points, the maps it could attend over, by resolution: the maps' last size (the
width of an image map, the time steps of a signal map). ``--model.generator.init_args.attention [14, 28]``
appends a :class:`SelfAttention` after the layers that output the 14- and 28-wide maps; a resolution the
net does not have is refused, naming the ones it has.

Example:
    >>> import torch
    >>> attn = SelfAttention(16)
    >>> attn(torch.randn(2, 16, 7, 7)).shape, attn(torch.randn(2, 16, 128)).shape
    (torch.Size([2, 16, 7, 7]), torch.Size([2, 16, 128]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_gan.validation import is_int, require


class SelfAttention(nn.Module):
    """SAGAN's self-attention block (Zhang et al. 2019, sec. 3) over every position of a map (N, C, ...).

    With x the map flattened to (N, C, L): ``s_ij = f(x_i)^T g(x_j)``, ``beta = softmax_j(s)``,
    ``o_i = v(sum_j beta_ij h(x_j))`` and the output ``x + gamma * o``. f, g and h are 1x1 convs to C/8
    channels (at least 1), v a 1x1 conv back to C, as in the paper; ``gamma`` starts at 0, so the block
    starts as the identity and the net learns how much non-local evidence to use.

    Written out with einsum rather than ``scaled_dot_product_attention``: SAGAN does not scale the scores,
    and a gradient penalty needs the double backward that the fused kernels do not have.

    Args:
        channels: C of the maps.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        require(is_int(channels) and channels >= 1, "channels", channels, "must be an integer >= 1")
        inner = max(channels // 8, 1)
        self.f = nn.Conv1d(channels, inner, 1, bias=False)  # queries
        self.g = nn.Conv1d(channels, inner, 1, bias=False)  # keys
        self.h = nn.Conv1d(channels, inner, 1, bias=False)  # values
        self.v = nn.Conv1d(inner, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C, ...) -> (N, C, ...): every position sees every other of the same sample."""
        flat = x.flatten(2)  # (N, C, L)
        scores = torch.einsum("nci,ncj->nij", self.f(flat), self.g(flat))  # (N, L, L)
        beta = torch.softmax(scores, dim=-1)  # position i's weights over positions j
        o = self.v(torch.einsum("nij,ncj->nci", beta, self.h(flat)))  # (N, C, L)
        return x + self.gamma * o.view_as(x)


def add_attention(key: str, resolutions: Sequence[int], points: dict[int, tuple[nn.Sequential, int]]) -> None:
    """Append a :class:`SelfAttention` to ``points[r]``'s Sequential (whose maps have the C it gives) for
    each resolution r in ``resolutions``.

    Args:
        key: The net's key for ``resolutions``, named in errors (``attention``).
        resolutions: The requested resolutions; empty for none (the net is then unchanged).
        points: The net's attention points: resolution -> (the Sequential outputting those maps, C).

    Raises:
        ValueError: If a resolution is not one of ``points`` or is asked for twice.
    """
    resolutions = list(resolutions)
    have = sorted(points)
    for r in resolutions:
        require(
            r in points,
            key,
            resolutions,
            f"{r} is not a resolution of this net: its maps are {have} wide (time steps for signals)",
        )
    require(len(set(resolutions)) == len(resolutions), key, resolutions, "names a resolution twice")
    for r in resolutions:
        sequential, channels = points[r]
        sequential.append(SelfAttention(channels))


def halving_points(stages: nn.Sequential, size: int, channels: int) -> dict[int, tuple[nn.Sequential, int]]:
    """The attention points of a discriminator whose stage i outputs maps ``size / 2^(i+1)`` wide with
    ``channels * 2^i`` channels (the DCGAN, signal and ResNet Ds), for :func:`add_attention`."""
    return {size // 2 ** (i + 1): (stage, channels * 2**i) for i, stage in enumerate(stages)}
