"""Transforms of what D sees in training (issue 16): small modules the GAN applies to every input D scores in
its training step (real and generated samples, in D's and in G's updates), never in validation, metrics or
sampling. Their randomness is drawn inside the step's own stream (``GAN.step_rng``), so a resume is exact.

Example:
    >>> import torch
    >>> noise = InstanceNoise("uniform", 1 / 128, anneal_steps=100)
    >>> noise.scale_at(50), noise.scale_at(100)
    (0.00390625, 0.0)
    >>> x = torch.zeros(2, 1, 4, 4)
    >>> bool(((noise(x, step=0) - x) >= 0).all() and ((noise(x, step=0) - x) <= 1 / 128).all())
    True
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor, nn

from lightning_gan.validation import require, require_int

NoiseKind = Literal["none", "gaussian", "uniform"]


class InstanceNoise(nn.Module):
    """Instance noise on D's inputs (Sønderby et al. 2017; the notes, 000): ``gaussian`` adds N(0, s^2) to
    every element, ``uniform`` adds U(0, s) (the notes: s = 1/128 steadied early training without slowing it,
    where gaussian noise slowed it badly). With ``anneal_steps`` N > 0 the scale falls linearly from s at
    generator step 0 to 0 at step N, and no noise is added from then on.

    Args:
        kind: ``none``, ``gaussian`` or ``uniform``.
        scale: s, the gaussian's sigma or the uniform's upper bound; > 0 unless kind is ``none``.
        anneal_steps: N; 0 keeps s for the whole run.
    """

    def __init__(self, kind: NoiseKind = "none", scale: float = 0.0, anneal_steps: int = 0) -> None:
        super().__init__()
        kinds = get_args(NoiseKind)
        require(kind in kinds, "model.instance_noise", kind, f"choose one of {', '.join(kinds)}")
        require(scale >= 0, "model.instance_noise_scale", scale, "must be >= 0")
        require(
            (kind == "none") == (scale == 0),
            "model.instance_noise_scale",
            scale,
            f"with model.instance_noise={kind!r}: "
            + ("set a scale > 0" if kind != "none" else "choose gaussian or uniform noise, or scale 0"),
        )
        require_int("model.instance_noise_anneal", anneal_steps, 0)
        self.kind, self.scale, self.anneal_steps = kind, scale, anneal_steps

    def scale_at(self, step: int) -> float:
        """The noise scale at generator step ``step``."""
        if self.anneal_steps == 0:
            return self.scale
        return self.scale * max(0.0, 1.0 - step / self.anneal_steps)

    def forward(self, x: Tensor, step: int) -> Tensor:
        scale = self.scale_at(step)
        if scale == 0:
            return x
        if self.kind == "gaussian":
            return x + scale * torch.randn_like(x)
        return x + scale * torch.rand_like(x)
