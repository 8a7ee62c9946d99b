"""Image grids: tiling with einops, writing with PIL (torchvision does not import beside this torch build)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image
from torch import Tensor


def make_grid(images: Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tiles images in [-1, 1] into one uint8 picture.

    Args:
        images: (N, C, H, W) with C = 1 or 3, values in [-1, 1].
        nrow: Images per row; default the ceiling of sqrt(N).
        padding: Pixels of black border around every tile.

    Returns:
        (rows * (H + 2p), nrow * (W + 2p)) for C = 1, with a trailing 3 for C = 3; dtype uint8.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"make_grid expects (N, C, H, W) with C in (1, 3), got {tuple(images.shape)}")
    n = images.shape[0]
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    pixels = (images.detach().float().cpu().clamp(-1, 1) + 1) / 2  # (x + 1) / 2 for display
    blank = torch.zeros(rows * nrow - n, *pixels.shape[1:])
    tiles = torch.nn.functional.pad(torch.cat([pixels, blank]), (padding,) * 4)
    grid = rearrange(tiles, "(r c) ch h w -> (r h) (c w) ch", r=rows, c=nrow)
    grid = (grid * 255).round().to(torch.uint8).numpy()
    return grid[..., 0] if grid.shape[-1] == 1 else grid


def save_png(grid: np.ndarray, path: str | Path) -> Path:
    """Writes a uint8 picture from :func:`make_grid` as a PNG at ``path`` (folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


SIGNAL_MAX_ROWS = 7  # a 1-channel "image" with fewer rows than this (and a longer time axis) is a signal


def is_signal_shape(shape: tuple[int, ...]) -> bool:
    """Whether (C, H, W) holds a signal window (1, S sensor rows, T time steps) rather than a picture: one
    channel, at most ``SIGNAL_MAX_ROWS`` rows and at least 8 time steps, as the classifier's rule for
    downsampling time only (:func:`lightning_gan.models.classifier.pool_size`).

    Example:
        >>> is_signal_shape((1, 6, 128)), is_signal_shape((1, 28, 28)), is_signal_shape((3, 6, 128))
        (True, False, False)
    """
    c, h, w = shape
    return c == 1 and h <= SIGNAL_MAX_ROWS and w >= 8


def signal_grid(
    signals: Tensor,
    nrow: int | None = None,
    *,
    row_names: list[str] | None = None,
    channel_names: list[str] | None = None,
    title: str | None = None,
) -> np.ndarray:
    """Line plots of signal windows, one small panel per window with every channel as a line, tiled.

    Args:
        signals: (N, S, T) or (N, 1, S, T) windows, in any units (the y axis is shared by all panels).
        nrow: Panels per row; default the ceiling of sqrt(N). With one class per row, ``per_class``.
        row_names: Label of each row of panels (e.g. class names), written at its left.
        channel_names: Legend entries for the S channels; default ``ch0 ... ch{S-1}``.
        title: Title above the grid.

    Returns:
        The rendered picture, (height, width, 3) uint8, for :func:`save_png` or a logger.

    Example:
        >>> signal_grid(torch.randn(12, 1, 6, 128), nrow=4, row_names=["a", "b", "c"]).shape[-1]
        3
    """
    # A figure of its own, drawn by Agg, outside pyplot: no display needed (a cluster node), and the
    # caller's backend (a notebook's inline one) is left as it was
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = signals.detach().float().cpu()
    if values.ndim == 4:
        values = rearrange(values, "n 1 s t -> n s t")
    if values.ndim != 3:
        raise ValueError(f"signal_grid expects (N, S, T) or (N, 1, S, T), got {tuple(signals.shape)}")
    n, s, t = values.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    names = channel_names or [f"ch{i}" for i in range(s)]
    label = 0.3 + 0.075 * max((len(name) for name in row_names or []), default=0)  # inches for row names
    width = 1.6 * nrow + label + 0.1
    legend_columns = max(1, min(s, int(width // 1.1)))
    top = 0.4 + 0.2 * math.ceil(s / legend_columns)  # inches for the title, then the legend's lines below it
    height = 1.1 * rows + top + 0.1
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(rows, nrow, sharex=True, sharey=True, squeeze=False)
    low, high = float(values.min()), float(values.max())
    margin = 0.05 * (high - low or 1.0)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i < n:
            for channel in range(s):
                ax.plot(values[i, channel].numpy(), linewidth=0.6, label=names[channel])
        else:
            ax.axis("off")
    axes.flat[0].set_ylim(low - margin, high + margin)
    for row, name in enumerate(row_names or []):
        if row < rows:
            axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.legend(
        *axes.flat[0].get_legend_handles_labels(),
        loc="upper left",
        bbox_to_anchor=(0.0, 1 - 0.3 / height),
        ncol=legend_columns,
        fontsize=7,
        frameon=False,
    )
    fig.suptitle(
        title or f"{n} windows, {s} channels x {t} steps",
        x=0.01,
        y=1 - 0.05 / height,
        ha="left",
        va="top",
        fontsize=9,
    )
    fig.subplots_adjust(
        left=label / width, right=0.99, bottom=0.1 / height, top=1 - top / height, hspace=0.08, wspace=0.04
    )
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def sample_picture(
    samples: Tensor,
    nrow: int | None = None,
    *,
    row_names: list[str] | None = None,
    channel_names: list[str] | None = None,
    to_signal: Callable[[Tensor], Tensor] | None = None,
) -> np.ndarray:
    """The picture of generated samples: an image grid (:func:`make_grid`), or line plots
    (:func:`signal_grid`) when the samples are signal windows (:func:`is_signal_shape`).

    Args:
        samples: (N, C, H, W) in [-1, 1].
        nrow: Samples per row.
        row_names: Signals only: names of the rows (class names when there is one class per row).
        channel_names: Signals only: names of the sensor channels.
        to_signal: Signals only: maps (N, 1, S, T) in [-1, 1] to physical units for the y axis (e.g.
            :meth:`lightning_gan.data.HARDataModule.to_signal`); default the values as they are.
    """
    if not is_signal_shape(tuple(samples.shape[1:])):
        return make_grid(samples, nrow=nrow)
    values = to_signal(samples) if to_signal is not None else samples
    return signal_grid(values, nrow, row_names=row_names, channel_names=channel_names)
