"""Image grids: tiling with einops, writing with PIL (torchvision does not import beside this torch build)."""

from __future__ import annotations

import math
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
