"""Adversarial losses and penalties, as pure functions.

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
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AdvLoss = Literal["bce", "minimax", "lsgan", "hinge", "wasserstein"]


class AdversarialLoss(NamedTuple):
    """The two halves of an adversarial loss: ``d(real_scores, fake_scores)`` and ``g(fake_scores)``."""

    d: Callable[[Tensor, Tensor], Tensor]
    g: Callable[[Tensor], Tensor]


def _flat(scores: Tensor, name: str) -> Tensor:
    """Scores of shape (N,) or (N, 1) as (N,); anything else is a caller bug (e.g. class logits)."""
    if scores.ndim == 2 and scores.shape[1] == 1:
        return scores[:, 0]
    if scores.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) or (N, 1), got {tuple(scores.shape)}")
    return scores


# Each D loss takes the real and fake means separately, so real and fake batches may differ in size
# and an (N,) tensor never broadcasts against an (N, 1) one.


def d_bce(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """BCE-with-logits D loss, real target 1, fake target 0 (Goodfellow et al. 2014, eq. 1)."""
    # -log D(x) - log(1 - D(G(z))) with D = sigmoid, as softplus(-real) + softplus(fake) for stability.
    real, fake = _flat(real_scores, "real_scores"), _flat(fake_scores, "fake_scores")
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def g_nonsaturating(fake_scores: Tensor) -> Tensor:
    """Non-saturating G loss (Goodfellow et al. 2014, sec. 3)."""
    return F.softplus(-_flat(fake_scores, "fake_scores")).mean()  # -log D(G(z)) = -log(sigmoid(fake))


def g_minimax(fake_scores: Tensor) -> Tensor:
    """Saturating G loss of the original minimax game (Goodfellow et al. 2014, eq. 1).

    Its gradient vanishes when D confidently rejects fakes, which is why ``"bce"`` is the default.
    """
    return -F.softplus(_flat(fake_scores, "fake_scores")).mean()  # log(1 - D(G(z))) = -softplus(fake)


def d_lsgan(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Least-squares D loss (Mao et al. 2017, eq. 2 with a=0, b=1)."""
    # 1/2 (D(x) - 1)^2 + 1/2 D(G(z))^2
    real, fake = _flat(real_scores, "real_scores"), _flat(fake_scores, "fake_scores")
    return 0.5 * (real - 1).square().mean() + 0.5 * fake.square().mean()


def g_lsgan(fake_scores: Tensor) -> Tensor:
    """Least-squares G loss (Mao et al. 2017, eq. 2 with c=1)."""
    return 0.5 * (_flat(fake_scores, "fake_scores") - 1).square().mean()  # 1/2 (D(G(z)) - 1)^2


def d_hinge(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Hinge D loss (Lim & Ye 2017; Miyato et al. 2018): pushes real scores above 1, fake below -1."""
    # max(0, 1 - D(x)) + max(0, 1 + D(G(z)))
    real, fake = _flat(real_scores, "real_scores"), _flat(fake_scores, "fake_scores")
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def d_wasserstein(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Wasserstein critic loss (Arjovsky et al. 2017, Algorithm 1): maximise f(x) - f(G(z))."""
    return _flat(fake_scores, "fake_scores").mean() - _flat(real_scores, "real_scores").mean()


def g_wasserstein(fake_scores: Tensor) -> Tensor:
    """Wasserstein G loss -f(G(z)) (Arjovsky et al. 2017, Algorithm 1), also the hinge G loss."""
    return -_flat(fake_scores, "fake_scores").mean()


LOSSES: dict[str, AdversarialLoss] = {
    "bce": AdversarialLoss(d_bce, g_nonsaturating),
    "minimax": AdversarialLoss(d_bce, g_minimax),
    "lsgan": AdversarialLoss(d_lsgan, g_lsgan),
    # The hinge G loss is the Wasserstein one (Lim & Ye 2017; Miyato et al. 2018).
    "hinge": AdversarialLoss(d_hinge, g_wasserstein),
    "wasserstein": AdversarialLoss(d_wasserstein, g_wasserstein),
}


def get_loss(name: AdvLoss) -> AdversarialLoss:
    """The ``AdversarialLoss`` called ``name``.

    Raises:
        ValueError: If ``name`` is not one of ``AdvLoss``.
    """
    if name not in LOSSES:
        raise ValueError(f"model.loss={name!r} is not allowed: choose one of {', '.join(LOSSES)}")
    return LOSSES[name]


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    generator: torch.Generator | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> Tensor:
    """WGAN-GP two-sided gradient penalty (Gulrajani et al. 2017, eq. 3 and Algorithm 1).

    Samples x_hat = eps * real + (1 - eps) * fake with one eps ~ U(0, 1) per sample and returns
    the batch mean of (||grad_x critic(x_hat)||_2 - 1)^2, the norm taken over all non-batch dims.
    The graph is kept (``create_graph=True``), so the penalty can be backpropagated into the critic.
    Per-sample gradients assume a critic without BatchNorm (see ``nets.has_batchnorm``).

    Args:
        critic: Maps inputs (N, ...) to scores (N,) or (N, 1).
        real: Real samples (N, ...), e.g. images (N, C, H, W) or signals (N, C, L).
        fake: Generated samples, same shape as ``real``; detached here.
        generator: Random generator for eps, on ``real``'s device; None uses the global one.
        scaler: Under fp16 mixed precision, the loss scaler of the training step: the input gradient is
            then taken of the scaled scores and unscaled afterwards, as PyTorch's AMP recipe for gradient
            penalties does, so that small gradients do not underflow in fp16 on their way back.

    Returns:
        A scalar tensor.

    Example:
        >>> import torch
        >>> w = torch.tensor([3.0, 4.0])  # critic(x) = x @ w has gradient w everywhere: GP = (5 - 1)^2
        >>> gradient_penalty(lambda x: x @ w, torch.randn(8, 2), torch.randn(8, 2))
        tensor(16.)
    """
    if real.shape != fake.shape:
        raise ValueError(
            f"real and fake must have one shape, got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    eps_shape = (real.shape[0],) + (1,) * (real.ndim - 1)  # (N, 1, 1, ...): one eps per sample
    eps = torch.rand(eps_shape, generator=generator, device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    scores = _flat(critic(x_hat), "critic(x_hat)")
    # Scores of different samples do not interact, so the gradient of their sum is each one's own gradient.
    if scaler is None or not scaler.is_enabled():
        (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    else:
        (scaled,) = torch.autograd.grad(scaler.scale(scores.sum()), x_hat, create_graph=True)
        grad = scaled / scaler.get_scale()
    grad_norm = torch.linalg.vector_norm(grad.flatten(1), ord=2, dim=1)  # (N,)
    return (grad_norm - 1).square().mean()


@torch.no_grad()
def clip_weights_(module: nn.Module, clip_value: float) -> None:
    """Clamp every parameter of ``module`` to [-clip_value, clip_value] in place (WGAN weight
    clipping, Arjovsky et al. 2017, Algorithm 1, where c = 0.01)."""
    if clip_value <= 0:
        raise ValueError(f"clip_value must be > 0, got {clip_value}")
    for p in module.parameters():
        p.clamp_(-clip_value, clip_value)
