"""An exponential moving average (EMA) of the generator's weights, kept beside G and used for sampling."""

from __future__ import annotations

import copy
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_gan.validation import require, require_int


class GeneratorEMA(Callback):
    """Keeps ``pl_module.generator_ema``, an exponential moving average of the generator's weights.

    After generator step ``t`` (``trainer.global_step``, which counts generator steps only) with
    ``t >= start_step`` and ``t % update_every == 0``, every parameter of the average moves towards G's:
    ``ema = decay * ema + (1 - decay) * g``. Before ``start_step`` the average is a plain copy of G, so it
    starts from the weights training has reached rather than remembering the random init. Averaging G smooths
    out the oscillation of adversarial training and usually gives better samples than G itself (Karras et al.
    2018, ProGAN, sec. A.1; Yazici et al. 2019, "The Unusual Effectiveness of Averaging in GAN Training").

    The average is created at the start of fit as a frozen copy of G (no gradients, in no optimizer), unless
    the module already has one (e.g. loaded from a checkpoint). As a registered submodule it moves to the
    device with the module and is saved in checkpoints as ``generator_ema.*``. ``GAN.sample()`` (and so
    sample grids, metrics and ``lightning-gan generate``) uses it; ``sample(ema=False)`` and
    ``generate --no_ema`` use G.

    Lightning's ``WeightAveraging``/``EMAWeightAveraging`` is not reused: it averages the whole
    LightningModule, D included, swaps the average into the training weights for validation, copies it over
    the training weights when fit ends, and saves it in place of the checkpoint's ``state_dict``. Here G and D
    keep training on their own weights, and a checkpoint holds both G and its average, so ``generate`` can
    choose either.

    Args:
        decay: Weight of the old average at each update, in (0, 1). With ``update_every=k`` the per-step decay
            is ``decay ** (1 / k)``.
        start_step: Generator step of the first averaging update; until then the average copies G.
        update_every: Generator steps between averaging updates.

    Example:
        >>> ema = GeneratorEMA(decay=0.999, start_step=1000)
        >>> ema.state_dict()
        {'decay': 0.999, 'start_step': 1000, 'update_every': 1, 'num_updates': 0}
    """

    def __init__(self, decay: float = 0.999, start_step: int = 0, update_every: int = 1) -> None:
        require(0 < decay < 1, "GeneratorEMA.decay", decay, "must be in (0, 1), e.g. 0.999")
        require_int("GeneratorEMA.start_step", start_step, 0)
        require_int("GeneratorEMA.update_every", update_every, 1)
        self.decay = decay
        self.start_step = start_step
        self.update_every = update_every
        self.num_updates = 0  # averaging updates done so far; the copies before start_step do not count

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not (
            isinstance(getattr(pl_module, "generator", None), nn.Module)
            and hasattr(pl_module, "generator_ema")
        ):
            raise TypeError(
                f"GeneratorEMA needs a GAN module with `generator` and `generator_ema` attributes; "
                f"{type(pl_module).__name__} lacks them"
            )
        # Only fit updates the average. Creating it here, before Lightning restores a checkpoint and moves the
        # module to its device, lets the checkpoint's generator_ema.* fill it and the move carry it along.
        if stage == "fit" and pl_module.generator_ema is None:
            # Left in train mode like the rest of the module: GAN.sample switches it to eval for each draw,
            # and an eval-mode submodule makes Lightning warn "modules in eval mode" at the start of each fit.
            ema = copy.deepcopy(pl_module.generator).requires_grad_(False)
            # A G that has trained before (an earlier fit) carries .grad tensors, which deepcopy would copy.
            ema.zero_grad(set_to_none=True)
            pl_module.generator_ema = ema

    @torch.no_grad()
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        step = trainer.global_step  # called after the generator step, so this already counts it
        averaging = step >= self.start_step
        if averaging and step % self.update_every != 0:
            return
        ema, generator = pl_module.generator_ema, pl_module.generator
        ema_params, g_params = _matched(dict(ema.named_parameters()), dict(generator.named_parameters()))
        if averaging:
            # ema += (1 - decay) * (g - ema), as torch.optim.swa_utils.get_ema_multi_avg_fn updates
            torch._foreach_lerp_(ema_params, g_params, 1 - self.decay)
            self.num_updates += 1
        else:
            torch._foreach_copy_(ema_params, g_params)
        # Buffers (BatchNorm running statistics, spectral norm's power-iteration vectors) are copied, not
        # averaged: they are statistics of G's current activations, and mixing in those of older weights
        # describes no network. StyleGAN2-ADA's training_loop.py copies G's buffers into G_ema the same way.
        ema_buffers, g_buffers = _matched(dict(ema.named_buffers()), dict(generator.named_buffers()))
        if ema_buffers:  # a G without BatchNorm or spectral norm has none
            torch._foreach_copy_(ema_buffers, g_buffers)

    def state_dict(self) -> dict[str, Any]:
        # The averaged weights themselves are in the module's state_dict (generator_ema.*).
        return {
            "decay": self.decay,
            "start_step": self.start_step,
            "update_every": self.update_every,
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.num_updates = state_dict["num_updates"]
        # The settings given now win, so a resumed run can change them on purpose; say so, as the average then
        # mixes two schedules.
        changed = {
            key: (state_dict[key], getattr(self, key))
            for key in ("decay", "start_step", "update_every")
            if state_dict[key] != getattr(self, key)
        }
        if changed:
            rank_zero_warn(
                "GeneratorEMA resumes with settings other than the checkpoint's (checkpoint, now): "
                + ", ".join(f"{key}={old!r} -> {new!r}" for key, (old, new) in changed.items())
            )


def _matched(ema: dict[str, Tensor], generator: dict[str, Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """The tensors of ``ema`` and, in the same order, G's tensors of the same names.

    Names match whether or not G is parametrized (spectral norm's ``parametrizations.weight.original`` is a
    parameter of both), as long as ``ema`` is a copy of G; anything else is a bug worth stopping for.
    """
    if ema.keys() != generator.keys():
        raise RuntimeError(
            f"generator_ema's tensors do not match the generator's (differing names: "
            f"{sorted(ema.keys() ^ generator.keys())}): generator_ema must be a copy of generator"
        )
    return list(ema.values()), [generator[name] for name in ema]
