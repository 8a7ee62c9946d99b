"""Loss terms beside the adversarial losses (the training stabilisers), as pure functions.

Each returns a scalar the player it belongs to *minimises*, without its weight: the module multiplies by the
weight the user sets (see :class:`lightning_gan.models.terms.LossTerms`). Critics map inputs (N, ...) to
scores (N,) or (N, 1), higher meaning "more real", as in :mod:`lightning_gan.losses`.

Example:
    >>> import torch
    >>> real, fake = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.zeros(2, 2)
    >>> feature_matching(real, fake, "sum"), feature_matching(real, fake)  # ||(2, 3) - (0, 0)||^2, and / F
    (tensor(13.), tensor(6.5000))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from lightning_gan.losses import flat_scores


def input_gradient(
    critic: Callable[[Tensor], Tensor], x: Tensor, scaler: torch.amp.GradScaler | None = None
) -> Tensor:
    """The gradient of each sample's score with respect to that sample, (N, ...), with its graph kept
    (``create_graph=True``) so that a penalty on it can be backpropagated into the critic.

    Scores of different samples must not interact (no BatchNorm in the critic, see ``nets.has_batchnorm``):
    the gradient of their sum is then each one's own gradient. Under fp16 mixed precision pass the step's
    loss scaler: the gradient is taken of the scaled scores and unscaled afterwards, as PyTorch's AMP recipe
    for gradient penalties does, so that small gradients do not underflow in fp16 on their way back.
    """
    x = x.detach().requires_grad_(True)
    scores = flat_scores(critic(x), "critic(x)")
    if scaler is None or not scaler.is_enabled():
        (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
        return grad
    (scaled,) = torch.autograd.grad(scaler.scale(scores.sum()), x, create_graph=True)
    return scaled / scaler.get_scale()


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

    Args:
        critic: Maps inputs (N, ...) to scores (N,) or (N, 1); no BatchNorm (see :func:`input_gradient`).
        real: Real samples (N, ...), e.g. images (N, C, H, W) or signals (N, C, L).
        fake: Generated samples, same shape as ``real``; detached here.
        generator: Random generator for eps, on ``real``'s device; None uses the global one.
        scaler: Under fp16 mixed precision, the loss scaler of the training step (see :func:`input_gradient`).

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
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    grad_norm = torch.linalg.vector_norm(input_gradient(critic, x_hat, scaler).flatten(1), ord=2, dim=1)
    return (grad_norm - 1).square().mean()


def r1_penalty(
    critic: Callable[[Tensor], Tensor], real: Tensor, scaler: torch.amp.GradScaler | None = None
) -> Tensor:
    """R1 penalty (Mescheder et al. 2018, eq. 9) without its gamma/2: the batch mean of
    ||grad_x critic(x)||^2 over real samples x (squared L2 norm over all non-batch dims).

    Example:
        >>> import torch
        >>> w = torch.tensor([3.0, 4.0])
        >>> r1_penalty(lambda x: x @ w, torch.randn(8, 2))  # ||w||^2
        tensor(25.)
    """
    return input_gradient(critic, real, scaler).flatten(1).square().sum(1).mean()


def feature_matching(real_features: Tensor, fake_features: Tensor, reduction: str = "mean") -> Tensor:
    """Feature matching (Salimans et al. 2016, sec. 3.1) between the batch means of D's features of real and
    of generated samples, each (N, ...) flattened per sample to F features. ``reduction="sum"``: the paper's
    ||E f(x) - E f(G(z))||_2^2; ``"mean"``: the same divided by F, as the authors' code (``T.mean(T.square(m1
    - m2))``) and TorchGAN compute it, so that one weight means the same for layers of any size. Detach
    ``real_features``: G's objective treats them as constants."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"model.feature_matching_reduction={reduction!r} is not allowed: choose mean or sum")
    squared = (real_features.flatten(1).mean(0) - fake_features.flatten(1).mean(0)).square()
    return squared.mean() if reduction == "mean" else squared.sum()


def historical_average(params: Iterable[Tensor], means: Iterable[Tensor]) -> Tensor:
    """Historical averaging (Salimans et al. 2016, sec. 3.3): ||theta - mean of past theta||_2^2, summed
    over every parameter tensor and its running mean (see ``models.terms.HistoricalAverage``)."""
    return sum((p - m).square().sum() for p, m in zip(params, means, strict=True))


def mode_seeking(fake: Tensor, z: Tensor, eps: float = 1e-5) -> Tensor:
    """Mode-seeking term (Mao et al. 2019, eq. 3, as their code minimises it): 1 / (ratio + eps), with
    ratio = mean |G(z1) - G(z2)| / mean |z1 - z2| over pairs of samples of one condition; small when G turns
    different z into different samples.

    The pairs are the batch's first and second halves (sample i with sample i + N//2; an odd last sample is
    left out): the caller gives both halves the same classes.
    """
    half = len(z) // 2
    if half == 0:
        raise ValueError("the mode-seeking term needs at least 2 samples per batch, got 1")
    images = (fake[:half] - fake[half : 2 * half]).abs().mean()
    latents = (z[:half] - z[half : 2 * half]).abs().mean()
    return 1 / (images / latents + eps)
