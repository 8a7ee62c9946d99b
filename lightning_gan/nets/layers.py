"""Building blocks shared by every backbone: the discriminator output type, norms, init, spectral norm."""

from collections.abc import Callable, Iterable
from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from lightning_gan.nets.vbn import VirtualBatchNorm

NormKind = Literal["batch", "instance", "layer", "group", "none"]
# A generator's norms: D's, and virtual batch norm (lightning_gan.nets.vbn), which needs G's reference batch.
GeneratorNormKind = Literal["batch", "instance", "layer", "group", "none", "virtual"]

# The weight layers that init_dcgan_weights_ initialises; apply_spectral_norm normalises these and embeddings.
_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


class DOut(NamedTuple):
    """What every discriminator returns, whatever its conditioning mode.

    Attributes:
        logits: Real/fake score of shape (N,); higher means "more real" (see ``lightning_gan.losses``).
        class_logits: Class scores of shape (N, K) for ACGAN/SSGAN heads; None for an unconditional head.
        features: Penultimate features of shape (N, F), e.g. for feature matching.
    """

    logits: Tensor  # (N,)
    class_logits: Tensor | None  # (N, K)
    features: Tensor  # (N, F)


def check_img_shape(img_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Return ``img_shape`` as a tuple after checking it is three positive ints (C, H, W).

    Raises:
        ValueError: If ``img_shape`` is not three positive ints.
    """
    shape = tuple(img_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(f"img_shape must be three positive ints (C, H, W), got {img_shape!r}")
    return shape  # type: ignore[return-value]


def make_norm(
    kind: GeneratorNormKind, channels: int, dims: int = 2, reference: int = 64, groups: int = 8
) -> nn.Module:
    """A normalisation layer for conv feature maps of shape (N, channels, H, W), or (N, channels, L) with
    ``dims=1``.

    ``"layer"`` is ``GroupNorm(1, channels)``: it normalises each sample over (C, H, W), like a
    LayerNorm that does not need the spatial size; ``"group"`` is ``GroupNorm(groups, channels)`` (Wu & He
    2018). ``"none"`` is ``nn.Identity``. ``"virtual"`` (generators
    only) is a ``VirtualBatchNorm`` whose inputs start with a reference batch of ``reference`` samples.

    Raises:
        ValueError: If ``kind`` is not one of ``GeneratorNormKind``.

    Example:
        >>> make_norm("layer", 8).num_groups
        1
    """
    if kind == "batch":
        return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(channels)
    if kind == "instance":
        return (nn.InstanceNorm1d if dims == 1 else nn.InstanceNorm2d)(channels, affine=True)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "group":
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    if kind == "virtual":
        return VirtualBatchNorm(channels, reference)
    raise ValueError(f"norm={kind!r} is not allowed: choose one of {', '.join(get_args(GeneratorNormKind))}")


def _init_weights_(
    module: nn.Module, weight: Callable[[Tensor], object], scale: Callable[[Tensor], object]
) -> None:
    """``weight`` on every conv/linear weight, ``scale`` on every norm's scale; biases and shifts 0."""
    for m in module.modules():
        if isinstance(m, _WEIGHT_LAYERS):
            weight(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif (
            isinstance(m, _BatchNorm | _InstanceNorm | nn.GroupNorm | VirtualBatchNorm)
            and m.weight is not None
        ):
            scale(m.weight)
            nn.init.zeros_(m.bias)


def init_dcgan_weights_(module: nn.Module) -> None:
    """In-place DCGAN init (Radford et al. 2016, sec. 4): conv/linear weights ~ N(0, 0.02), biases 0,
    norm scales ~ N(1, 0.02), norm shifts 0."""
    _init_weights_(module, lambda w: nn.init.normal_(w, 0.0, 0.02), lambda w: nn.init.normal_(w, 1.0, 0.02))


def init_xavier_weights_(module: nn.Module) -> None:
    """In-place init of the ResNet nets, as SNGAN's code (``GlorotUniform``): conv/linear weights
    Xavier-uniform, biases 0, norm scales 1, norm shifts 0."""
    _init_weights_(module, nn.init.xavier_uniform_, nn.init.ones_)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Wrap every Conv1d/Conv2d/ConvTranspose2d/Linear and every Embedding in ``module`` with spectral
    normalisation (Miyato et al. 2018), skipping layers whose weight is already parametrised. Embeddings
    score inputs too in a discriminator (the projection head's class embedding, a label embedding fed to an
    MLP): they are normalised as the authors' ``SNEmbedID`` does (Miyato & Koyama 2018), by the largest
    singular value of the (classes x features) matrix.

    Returns:
        ``module`` itself, modified in place.

    Example:
        >>> d = apply_spectral_norm(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 1)))
        >>> parametrize.is_parametrized(d[0], "weight")
        True
    """
    for m in list(module.modules()):  # list first: wrapping adds parametrization submodules
        if isinstance(m, (*_WEIGHT_LAYERS, nn.Embedding)) and not parametrize.is_parametrized(m, "weight"):
            spectral_norm(m)
    return module


def has_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` contains any BatchNorm layer (which breaks per-sample penalties like WGAN-GP)."""
    return any(isinstance(m, _BatchNorm) for m in module.modules())


@torch.no_grad()
def estimate_batchnorm_(
    module: nn.Module, run: Callable[[Tensor], object], batches: Iterable[Tensor]
) -> bool:
    """Sets the running statistics of every BatchNorm layer in ``module`` to those of its inputs over
    ``batches`` (each passed through ``run``): "precise BN", with ``momentum=None`` (a plain average over
    the batches) instead of a moving average over training. Every other layer stays in eval mode (no dropout
    draws, nothing random); the modes and momenta are put back. Returns whether ``module`` has BatchNorm.

    Example:
        >>> bn = nn.BatchNorm1d(1)
        >>> estimate_batchnorm_(bn, bn, [torch.full((4, 1), 3.0), torch.full((4, 1), 5.0)])
        True
        >>> bn.running_mean
        tensor([4.])
    """
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm)]
    if not norms:
        return False
    modes = {m: m.training for m in module.modules()}
    momenta = {m: m.momentum for m in norms}
    module.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for batch in batches:
            run(batch)
    finally:
        for m, mode in modes.items():
            m.training = mode
        for m, momentum in momenta.items():
            m.momentum = momentum
    return True
