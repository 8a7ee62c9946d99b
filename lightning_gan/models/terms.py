"""The optional terms of D's and G's objectives (the stabilisers), with the state they keep.

:class:`LossTerms` is owned by the GAN (as ``gan.loss_terms``, so its state is in every checkpoint). The
training step asks it for the enabled terms of the objective it is computing, ``{name: (weight, value)}``,
adds ``weight * value`` and logs ``loss/<name>`` in one place (``GANObjectives.add_terms``). The formulas
are the pure functions of :mod:`lightning_gan.regularizers`.

How a feature layer of D is named (``feature_layer``): ``"penultimate"`` is the flattened input of D's
real/fake head (``DOut.features``), which every discriminator returns; an integer K is the output of D's K-th
block (0 is the first; negative counts from the end, so -1 is the last block, the penultimate features before
flattening, or before a ResNet D's sum over positions). D's blocks are what its ``feature_blocks()`` lists:
the conv stages of the DCGAN, signal and ResNet discriminators, the hidden layers (Linear, LeakyReLU,
Dropout) of the MLP one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from lightning_gan.nets import DOut
from lightning_gan.regularizers import (
    feature_matching,
    gradient_penalty,
    historical_average,
    mode_seeking,
    r1_penalty,
)
from lightning_gan.validation import is_int, require, require_int

FeatureLayer = int | Literal["penultimate"]
Terms = dict[str, tuple[float, Tensor]]  # name -> (weight, unweighted value)


def feature_blocks(discriminator: nn.Module) -> list[nn.Module]:
    """D's blocks in order, which an integer ``feature_layer`` indexes (see the module's docstring)."""
    if not hasattr(discriminator, "feature_blocks"):
        raise ValueError(
            f"model.feature_layer: {type(discriminator).__name__} does not list its blocks (no "
            "feature_blocks() method): use feature_layer=penultimate"
        )
    return list(discriminator.feature_blocks())


class HistoricalAverage(nn.Module):
    """The running mean of every value a network's parameters had at the start of its updates, kept in
    buffers (so checkpoints carry it and a resume continues it bit-exactly) with the number of values seen.

    :meth:`forward` adds the current values to the mean, then returns the historical-averaging penalty
    ``||theta - mean||^2``: at update t the mean is over theta[1..t], as Salimans et al. (2016, sec. 3.3)
    write it; the first update's penalty is 0.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        for name, param in net.named_parameters():
            self.register_buffer(self.key(name), param.detach().clone())

    @staticmethod
    def key(name: str) -> str:
        return "mean__" + name.replace(".", "__")

    def forward(self, net: nn.Module) -> Tensor:
        params = [p for _, p in net.named_parameters()]
        means = [getattr(self, self.key(name)) for name, _ in net.named_parameters()]
        with torch.no_grad():
            self.count += 1
            for p, mean in zip(params, means, strict=True):
                mean.add_((p.detach() - mean) / self.count.to(mean.dtype))
        return historical_average(params, means)


class LossTerms(nn.Module):
    """The stabilisers' weights and state; see the GAN's docstring for each key."""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        *,
        gp_weight: float,
        r1_weight: float,
        r1_every: int,
        feature_matching: float,
        feature_layer: FeatureLayer,
        feature_matching_only: bool,
        feature_matching_reduction: str,
        hist_avg_g: float,
        hist_avg_d: float,
        mode_seeking: float,
    ) -> None:
        super().__init__()
        for key, value in (
            ("gp_weight", gp_weight),
            ("r1_weight", r1_weight),
            ("feature_matching", feature_matching),
            ("hist_avg_g", hist_avg_g),
            ("hist_avg_d", hist_avg_d),
            ("mode_seeking", mode_seeking),
        ):
            require(value >= 0, f"model.{key}", value, "must be >= 0 (0 = off)")
        require_int("model.r1_every", r1_every, 1)
        require(
            feature_matching_reduction in ("mean", "sum"),
            "model.feature_matching_reduction",
            feature_matching_reduction,
            "choose mean or sum",
        )
        require(
            not feature_matching_only or feature_matching > 0,
            "model.feature_matching_only",
            feature_matching_only,
            "makes feature matching G's whole objective: set model.feature_matching > 0 (its weight)",
        )
        if feature_layer != "penultimate":
            require(
                is_int(feature_layer),
                "model.feature_layer",
                feature_layer,
                "name a layer as penultimate or a block index (int)",
            )
            n = len(feature_blocks(discriminator))
            require(
                -n <= feature_layer < n,
                "model.feature_layer",
                feature_layer,
                f"{type(discriminator).__name__} has {n} blocks: choose penultimate or -{n}..{n - 1}",
            )
        self.gp_weight, self.r1_weight, self.r1_every = gp_weight, r1_weight, r1_every
        self.fm_weight, self.feature_layer, self.fm_only = (
            feature_matching,
            feature_layer,
            feature_matching_only,
        )
        self.fm_reduction = feature_matching_reduction
        self.ms_weight = mode_seeking
        self.hist_weights = {"g": hist_avg_g, "d": hist_avg_d}
        # None when off, so a run without them keeps its checkpoint keys.
        self.hist_g = HistoricalAverage(generator) if hist_avg_g > 0 else None
        self.hist_d = HistoricalAverage(discriminator) if hist_avg_d > 0 else None

    @property
    def needs_real_batch_for_g(self) -> bool:
        return self.fm_weight > 0

    @property
    def pairs_latents(self) -> bool:
        """Whether G's batch is two halves of the same classes (the mode-seeking term's pairs)."""
        return self.ms_weight > 0

    def features(self, discriminator: nn.Module, x: Tensor, labels: Tensor | None) -> tuple[DOut, Tensor]:
        """D's output on x, and its features at ``feature_layer``, (N, F)."""
        if self.feature_layer == "penultimate":
            out = discriminator(x, labels)
            return out, out.features
        captured: list[Tensor] = []
        block = feature_blocks(discriminator)[self.feature_layer]
        handle = block.register_forward_hook(lambda module, args, output: captured.append(output))
        try:
            out = discriminator(x, labels)
        finally:
            handle.remove()
        return out, captured[-1].flatten(1)

    def d_terms(
        self,
        discriminator: nn.Module,
        critic: Callable[[Tensor], Tensor],
        real: Tensor,
        fake: Tensor,
        d_step: int,
        scaler: torch.amp.GradScaler | None,
    ) -> Terms:
        """D's enabled terms at its ``d_step``-th update (0-based, over the whole run)."""
        terms: Terms = {}
        if self.gp_weight > 0:
            terms["gp"] = (self.gp_weight, gradient_penalty(critic, real, fake, scaler=scaler))
        if self.r1_weight > 0 and d_step % self.r1_every == 0:
            # Lazy regularisation (Karras et al. 2020, sec. 3.1): every k-th update, weighted k times.
            terms["r1"] = (self.r1_weight / 2 * self.r1_every, r1_penalty(critic, real, scaler))
        if self.hist_d is not None:
            terms["hist_avg_d"] = (self.hist_weights["d"], self.hist_d(discriminator))
        return terms

    def g_terms(
        self,
        generator: nn.Module,
        fake_features: Tensor,
        real_features: Tensor | None,
        fake: Tensor,
        z: Tensor,
    ) -> Terms:
        """G's enabled terms, given D's features of its samples (and, for feature matching, of real ones)."""
        terms: Terms = {}
        if self.fm_weight > 0:
            terms["fm"] = (
                self.fm_weight,
                feature_matching(real_features.detach(), fake_features, self.fm_reduction),
            )
        if self.hist_g is not None:
            terms["hist_avg_g"] = (self.hist_weights["g"], self.hist_g(generator))
        if self.ms_weight > 0:
            terms["ms"] = (self.ms_weight, mode_seeking(fake, z))
        return terms
