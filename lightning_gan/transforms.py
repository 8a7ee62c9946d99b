"""Transforms of what D sees in training (issue 16): small modules the GAN applies to every input D scores in
its training step (real and generated samples, in D's and in G's updates), never in validation, metrics or
sampling. Their randomness is drawn inside the step's own stream (``GAN.step_rng``), so a resume is exact;
under DDP every rank draws for the samples of all ranks and keeps its own share (:class:`Share`), so the ranks
get different draws while their streams stay identical.

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

from collections.abc import Callable
from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor, nn

from lightning_gan.validation import require, require_int

NoiseKind = Literal["none", "gaussian", "uniform"]


class Share(NamedTuple):
    """This process's share of a step's draws: rank ``rank`` of ``world``. Each draw is made for the
    samples of every rank, in one call, and sliced to this rank's rows.

    Example:
        >>> a, b = Share(0, 2).rand((3,)), Share(1, 2).rand((3,))  # two ranks, from identical streams
        >>> a.shape, bool((a != b).all())
        (torch.Size([3]), True)
    """

    rank: int = 0
    world: int = 1

    def _rows(self, draw: Tensor) -> Tensor:
        n = len(draw) // self.world
        return draw[self.rank * n : (self.rank + 1) * n]

    def rand(self, shape: tuple[int, ...], device: torch.device | None = None) -> Tensor:
        """U(0, 1) of ``shape`` (rows first) for this rank."""
        return self._rows(torch.rand(shape[0] * self.world, *shape[1:], device=device))

    def randn(self, shape: tuple[int, ...], device: torch.device | None = None) -> Tensor:
        """N(0, 1) of ``shape`` (rows first) for this rank."""
        return self._rows(torch.randn(shape[0] * self.world, *shape[1:], device=device))

    def randint(self, low: int, high: int, rows: int, device: torch.device | None = None) -> Tensor:
        """One integer in [low, high) per row for this rank."""
        return self._rows(torch.randint(low, high, (rows * self.world,), device=device))


#: The share of a process that is not one of several DDP ranks.
ONE_PROCESS = Share()


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

    def forward(self, x: Tensor, step: int, share: Share = ONE_PROCESS) -> Tensor:
        scale = self.scale_at(step)
        if scale == 0:
            return x
        draw = share.randn if self.kind == "gaussian" else share.rand
        return x + scale * draw(x.shape, x.device)


# ------------------------------------------------------------------ differentiable augmentation
#: The augmentations of ``--model.augment``: DiffAugment's three for images (Zhao et al. 2020), and three
#: for sensor windows (C, sensors, time) from the wearable-sensor literature (Um et al. 2017).
IMAGE_AUGMENTS = ("translation", "cutout", "color")
SIGNAL_AUGMENTS = ("shift", "scale", "jitter")
#: StyleGAN2-ADA adjusts p every 4 minibatches (Karras et al. 2020, sec. 3); here every 4 generator steps.
ADA_INTERVAL = 4


def shift_rows(x: Tensor, shifts: Tensor, dim: int) -> Tensor:
    """Each sample ``x[i]`` shifted by ``shifts[i]`` positions along ``dim`` (> 0: towards higher indices),
    zeros shifted in. A gather, so gradients of every order flow through it (a penalty's double backward)."""
    length = x.shape[dim]
    source = torch.arange(length, device=x.device) - shifts[:, None]  # (N, L): where each output comes from
    inside = ((source >= 0) & (source < length)).to(x.dtype)
    view = [len(x)] + [1] * (x.ndim - 1)
    view[dim] = length
    index = source.clamp(0, length - 1).view(view).expand_as(x)
    return x.gather(dim, index) * inside.view(view)


def _translation(x: Tensor, share: Share, ratio: float = 1 / 8) -> Tensor:
    """Translate by up to ``ratio`` of the height and of the width (zero padding), as DiffAugment."""
    for dim in (2, 3):
        reach = int(x.shape[dim] * ratio + 0.5)
        x = shift_rows(x, share.randint(-reach, reach + 1, len(x), x.device), dim)
    return x


def _cutout(x: Tensor, share: Share, ratio: float = 1 / 2) -> Tensor:
    """Zero a square of ``ratio`` of the height and width centred on a random pixel, as DiffAugment."""
    inside = []
    for dim in (2, 3):
        size = int(x.shape[dim] * ratio + 0.5)
        start = share.randint(0, x.shape[dim], len(x), x.device)[:, None] - size // 2
        position = torch.arange(x.shape[dim], device=x.device)
        inside.append(((position >= start) & (position < start + size)).to(x.dtype))  # (N, H) and (N, W)
    rows, columns = inside
    return x * (1 - rows[:, None, :, None] * columns[:, None, None, :])


def _color(x: Tensor, share: Share) -> Tensor:
    """Brightness + U(-1/2, 1/2), saturation x U(0, 2), contrast x U(1/2, 3/2) per sample, as DiffAugment."""
    per_sample = (len(x), 1, 1, 1)
    x = x + share.rand(per_sample, x.device) - 0.5
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * 2 * share.rand(per_sample, x.device) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (share.rand(per_sample, x.device) + 0.5) + mean


def _shift(x: Tensor, share: Share, ratio: float = 1 / 8) -> Tensor:
    """Shift a window in time (its last axis) by up to ``ratio`` of its length; zeros (the mean) come in."""
    reach = int(x.shape[-1] * ratio + 0.5)
    return shift_rows(x, share.randint(-reach, reach + 1, len(x), x.device), x.ndim - 1)


def _scale(x: Tensor, share: Share, spread: float = 1 / 4) -> Tensor:
    """Scale each sensor row of a window (all but the batch and time axes) by U(1 - spread, 1 + spread)."""
    factor = 1 + spread * (2 * share.rand((*x.shape[:-1], 1), x.device) - 1)
    return x * factor


def _jitter(x: Tensor, share: Share, sigma: float = 0.05) -> Tensor:
    """Add N(0, sigma^2) to every value (sigma in the data's [-1, 1] units: 0.2 of a channel's std for the
    sensor windows, which are scaled to 4 std per unit)."""
    return x + sigma * share.randn(x.shape, x.device)


_AUGMENTS = {
    "translation": _translation,
    "cutout": _cutout,
    "color": _color,
    "shift": _shift,
    "scale": _scale,
    "jitter": _jitter,
}


class DiffAugment(nn.Module):
    """Differentiable augmentation of every input D scores in training (Zhao et al. 2020), each of the
    policy's augmentations applied to each sample with probability p (Karras et al. 2020), so that D sees
    augmented real and generated samples alike and G learns through the augmentation. D's training data then
    look less like a few memorised samples: the regime of a GAN trained on 100 digits per class.

    With ``adaptive``, p starts at ``p`` and follows D's overfitting as StyleGAN2-ADA: every
    :data:`ADA_INTERVAL` generator steps r_t = E[sign(D(real))] over the interval's D updates (all ranks)
    is compared with ``target``, and p moves by ``ADA_INTERVAL / ada_steps`` up when r_t > target, down
    when r_t < target, within [0, 1]. p and the running sums are buffers: checkpoints carry them, a resume
    is exact.

    Args:
        policy: ``none`` or a comma-separated list of :data:`IMAGE_AUGMENTS` / :data:`SIGNAL_AUGMENTS`.
        p: The probability (the start of an adaptive p).
        adaptive: Adjust p from D's outputs on real samples.
        target: The r_t that adaptive p steers to (0.6 in StyleGAN2-ADA); needed with, and only with,
            ``adaptive``.
        ada_steps: Generator steps in which a steady r_t > target takes p from 0 to 1.

    Example:
        >>> augment = DiffAugment("translation,cutout", p=1.0)
        >>> x = torch.rand(2, 1, 8, 8)
        >>> augment(x).shape, bool((augment(x) == x).all())
        (torch.Size([2, 1, 8, 8]), False)
    """

    def __init__(
        self,
        policy: str = "none",
        p: float = 0.0,
        adaptive: bool = False,
        target: float | None = None,
        ada_steps: int = 500,
    ) -> None:
        super().__init__()
        names = [] if policy == "none" else [name.strip() for name in policy.split(",")]
        allowed = ", ".join(_AUGMENTS)
        require(
            all(name in _AUGMENTS for name in names) and len(set(names)) == len(names),
            "model.augment",
            policy,
            f"'none' or a comma-separated list of distinct augmentations from: {allowed}",
        )
        require(0 <= p <= 1, "model.augment_p", p, "must satisfy 0 <= p <= 1")
        if not names:
            require(p == 0 and not adaptive, "model.augment", policy, "name augmentations to apply with p")
        else:
            require(
                adaptive or p > 0, "model.augment_p", p, "augments nothing: set p > 0 or augment_adaptive"
            )
        require(
            not adaptive or target is not None,
            "model.augment_target",
            target,
            "model.augment_adaptive=true needs the r_t to steer to (StyleGAN2-ADA: 0.6)",
        )
        require(
            target is None or (adaptive and 0 <= target < 1),
            "model.augment_target",
            target,
            "needs model.augment_adaptive=true and 0 <= target < 1",
        )
        require_int("model.augment_ada_steps", ada_steps, 1)
        self.names, self.adaptive, self.target, self.ada_steps = names, adaptive, target, ada_steps
        if names:  # no buffers without augmentation: checkpoints of other runs load unchanged
            self.register_buffer("p", torch.tensor(float(p), dtype=torch.float64))
        if adaptive:  # since the last adjustment: sum of sign(D(real)), their count, generator steps
            self.register_buffer("sign_sums", torch.zeros(3, dtype=torch.float64))

    @property
    def enabled(self) -> bool:
        return bool(self.names)

    def forward(self, x: Tensor, share: Share = ONE_PROCESS) -> Tensor:
        # Every draw is made whatever p is, so an adaptive p changes no later random number.
        for name in self.names:
            applied = share.rand((len(x),), x.device) < self.p
            x = torch.where(applied.view(-1, *[1] * (x.ndim - 1)), _AUGMENTS[name](x, share), x)
        return x

    def observe(self, real_scores: Tensor) -> None:
        """Counts the signs of D's outputs on (augmented) real samples of one D update, for adaptive p."""
        if self.adaptive:
            signs = real_scores.detach().sign().to(torch.float64)
            self.sign_sums[:2] += torch.stack([signs.sum(), signs.new_tensor(signs.numel())])

    def adjust(self, reduce: Callable[[Tensor], Tensor] = lambda t: t) -> Tensor | None:
        """After each generator step: every :data:`ADA_INTERVAL` steps moves p by r_t (``reduce`` sums the
        counts over DDP ranks), then starts counting again. Returns r_t when it moved p."""
        if not self.adaptive:
            return None
        self.sign_sums[2] += 1
        if self.sign_sums[2] < ADA_INTERVAL:
            return None
        signs, count = reduce(self.sign_sums[:2].clone()).unbind()
        r_t = signs / count.clamp(min=1)
        self.p.copy_((self.p + torch.sign(r_t - self.target) * ADA_INTERVAL / self.ada_steps).clamp(0.0, 1.0))
        self.sign_sums.zero_()
        return r_t
