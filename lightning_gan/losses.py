"""Adversarial losses, as pure functions (the terms beside them are in :mod:`lightning_gan.regularizers`).

Sign convention, for every function here: the discriminator/critic returns raw scores (logits, for
the BCE losses) of shape (N,) or (N, 1), where higher means "more real". Every function returns a
scalar, the mean over the batch, that is *minimised* by the player it belongs to.

Example:
    >>> import torch
    >>> loss = get_loss("hinge")
    >>> real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    >>> loss.d(real, fake), loss.g(fake)
    (tensor(1.7500), tensor(1.2500))
"""

from collections.abc import Callable
from functools import partial
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AdvLoss = Literal["bce", "minimax", "lsgan", "hinge", "wasserstein"]


class AdversarialLoss(NamedTuple):
    """The two halves of an adversarial loss: ``d(real_scores, fake_scores)`` and ``g(fake_scores)``."""

    d: Callable[[Tensor, Tensor], Tensor]
    g: Callable[[Tensor], Tensor]


def flat_scores(scores: Tensor, name: str) -> Tensor:
    """Scores of shape (N,) or (N, 1) as (N,); anything else is a caller bug (e.g. class logits)."""
    if scores.ndim == 2 and scores.shape[1] == 1:
        return scores[:, 0]
    if scores.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) or (N, 1), got {tuple(scores.shape)}")
    return scores


# Each D loss takes the real and fake means separately, so real and fake batches may differ in size
# and an (N,) tensor never broadcasts against an (N, 1) one.


def d_bce(real_scores: Tensor, fake_scores: Tensor, real_target: float = 1.0) -> Tensor:
    """BCE-with-logits D loss, real target 1, fake target 0 (Goodfellow et al. 2014, eq. 1). A
    ``real_target`` below 1 is one-sided label smoothing (Salimans et al. 2016, sec. 3.4): fake stays 0."""
    # -log D(x) - log(1 - D(G(z))) with D = sigmoid, as softplus(-real) + softplus(fake) for stability.
    real, fake = flat_scores(real_scores, "real_scores"), flat_scores(fake_scores, "fake_scores")
    if real_target == 1.0:
        real_loss = F.softplus(-real).mean()
    else:
        real_loss = F.binary_cross_entropy_with_logits(real, torch.full_like(real, real_target))
    return real_loss + F.softplus(fake).mean()


def g_nonsaturating(fake_scores: Tensor) -> Tensor:
    """Non-saturating G loss (Goodfellow et al. 2014, sec. 3)."""
    return F.softplus(-flat_scores(fake_scores, "fake_scores")).mean()  # -log D(G(z)) = -log(sigmoid(fake))


def g_minimax(fake_scores: Tensor) -> Tensor:
    """Saturating G loss of the original minimax game (Goodfellow et al. 2014, eq. 1).

    Its gradient vanishes when D confidently rejects fakes, which is why ``"bce"`` is the default.
    """
    return -F.softplus(flat_scores(fake_scores, "fake_scores")).mean()  # log(1 - D(G(z))) = -softplus(fake)


def d_lsgan(real_scores: Tensor, fake_scores: Tensor, real_target: float = 1.0) -> Tensor:
    """Least-squares D loss (Mao et al. 2017, eq. 2 with a=0, b=``real_target``, 1 unless smoothed)."""
    # 1/2 (D(x) - b)^2 + 1/2 D(G(z))^2
    real, fake = flat_scores(real_scores, "real_scores"), flat_scores(fake_scores, "fake_scores")
    return 0.5 * (real - real_target).square().mean() + 0.5 * fake.square().mean()


def g_lsgan(fake_scores: Tensor) -> Tensor:
    """Least-squares G loss (Mao et al. 2017, eq. 2 with c=1)."""
    return 0.5 * (flat_scores(fake_scores, "fake_scores") - 1).square().mean()  # 1/2 (D(G(z)) - 1)^2


def d_hinge(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Hinge D loss (Lim & Ye 2017; Miyato et al. 2018): pushes real scores above 1, fake below -1."""
    # max(0, 1 - D(x)) + max(0, 1 + D(G(z)))
    real, fake = flat_scores(real_scores, "real_scores"), flat_scores(fake_scores, "fake_scores")
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def d_wasserstein(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Wasserstein critic loss (Arjovsky et al. 2017, Algorithm 1): maximise f(x) - f(G(z))."""
    return flat_scores(fake_scores, "fake_scores").mean() - flat_scores(real_scores, "real_scores").mean()


def g_wasserstein(fake_scores: Tensor) -> Tensor:
    """Wasserstein G loss -f(G(z)) (Arjovsky et al. 2017, Algorithm 1), also the hinge G loss."""
    return -flat_scores(fake_scores, "fake_scores").mean()


LOSSES: dict[str, AdversarialLoss] = {
    "bce": AdversarialLoss(d_bce, g_nonsaturating),
    "minimax": AdversarialLoss(d_bce, g_minimax),
    "lsgan": AdversarialLoss(d_lsgan, g_lsgan),
    # The hinge G loss is the Wasserstein one (Lim & Ye 2017; Miyato et al. 2018).
    "hinge": AdversarialLoss(d_hinge, g_wasserstein),
    "wasserstein": AdversarialLoss(d_wasserstein, g_wasserstein),
}


#: The losses whose D has a real target that one-sided label smoothing can lower.
SMOOTHABLE = ("bce", "minimax", "lsgan")


def get_loss(name: AdvLoss, one_sided_smoothing: float = 0.0) -> AdversarialLoss:
    """The ``AdversarialLoss`` called ``name``; with ``one_sided_smoothing`` s > 0, D's target for real
    samples is 1 - s (Salimans et al. 2016, sec. 3.4), its target for generated ones stays 0.

    Raises:
        ValueError: If ``name`` is not one of ``AdvLoss``, or s is outside [0, 1) or set for a loss without
            targets (hinge, wasserstein).
    """
    if name not in LOSSES:
        raise ValueError(f"model.loss={name!r} is not allowed: choose one of {', '.join(LOSSES)}")
    if not 0 <= one_sided_smoothing < 1:
        raise ValueError(f"model.one_sided_smoothing={one_sided_smoothing!r} must satisfy 0 <= s < 1")
    if one_sided_smoothing == 0:
        return LOSSES[name]
    if name not in SMOOTHABLE:
        raise ValueError(
            f"model.one_sided_smoothing={one_sided_smoothing!r} with model.loss={name!r}: smoothing lowers "
            f"D's real target, which only {', '.join(SMOOTHABLE)} have; {name} has a margin or none"
        )
    loss = LOSSES[name]
    return AdversarialLoss(partial(loss.d, real_target=1.0 - one_sided_smoothing), loss.g)


@torch.no_grad()
def clip_weights_(module: nn.Module, clip_value: float) -> None:
    """Clamp every parameter of ``module`` to [-clip_value, clip_value] in place (WGAN weight
    clipping, Arjovsky et al. 2017, Algorithm 1, where c = 0.01)."""
    if clip_value <= 0:
        raise ValueError(f"clip_value must be > 0, got {clip_value}")
    for p in module.parameters():
        p.clamp_(-clip_value, clip_value)
