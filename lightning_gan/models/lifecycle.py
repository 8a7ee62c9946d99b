"""The GAN module's life outside the training step: its optimizers, speed switches once per fit, checkpoints
that resume exactly (the step's random stream, the global RNG states, what data G learnt from, D's evaluation
statistics), and checks of the assembled run."""

from __future__ import annotations

import copy
import functools
from collections.abc import MutableMapping, Sequence
from typing import Any, Literal

import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from lightning_gan.models.class_head import ClassHeadEvaluation
from lightning_gan.rng import rng_states, set_rng_states
from lightning_gan.validation import require

OptimizerName = Literal["adam", "adamw", "adamax", "radam", "rmsprop"]
#: The optimizers of ``--model.optimizer_g/_d`` (notes 003 compared them: RAdam > AdamW > Adam for stability,
#: Adamax worst). ``rmsprop`` is WGAN's (Arjovsky et al. 2017, Alg. 1): momentum-free, betas unused.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adamax": torch.optim.Adamax,
    "radam": torch.optim.RAdam,
    "rmsprop": torch.optim.RMSprop,
}


def as_class_config(value: Any) -> Any:
    """A class, or a ``functools.partial`` of one with keywords only, as jsonargparse writes it
    (``{"class_path": ..., "init_args": {...}}``); anything else unchanged.

    Example:
        >>> as_class_config(functools.partial(torch.optim.lr_scheduler.StepLR, step_size=5))
        {'class_path': 'torch.optim.lr_scheduler.StepLR', 'init_args': {'step_size': 5}}
    """
    func, keywords = (value.func, value.keywords) if isinstance(value, functools.partial) else (value, {})
    if not isinstance(func, type) or (isinstance(value, functools.partial) and value.args):
        return value
    return {"class_path": f"{func.__module__}.{func.__qualname__}", "init_args": dict(keywords)}


def record_python_hparams(hparams: MutableMapping[str, Any], cls: type, keys: Sequence[str]) -> None:
    """Makes the hyperparameters of a module built in Python (not by LightningCLI) load as the CLI's do.

    LightningCLI records classes as class paths, and the module's own class path with Lightning's
    instantiator, so a checkpoint loads with ``torch.load(weights_only=True)`` (``load_gan``,
    ``MixedDataModule``) and rebuilds the preset through jsonargparse. A module built in Python records the
    class objects themselves, which a weights-only load refuses: this writes them in the CLI's form.
    """
    if "_instantiator" in hparams:  # built by LightningCLI: already in that form
        return
    for key in keys:
        hparams[key] = as_class_config(hparams[key])
    hparams["_class_path"] = f"{cls.__module__}.{cls.__qualname__}"
    hparams["_instantiator"] = "lightning.pytorch.cli.instantiate_module"


def make_optimizer(
    name: str,
    params: Sequence[nn.Parameter],
    lr: float,
    betas: tuple[float, float],
    weight_decay: float = 0.0,
    key: str = "model.optimizer_g",
) -> torch.optim.Optimizer:
    """Builds the optimizer a user names with ``--model.optimizer_g`` / ``--model.optimizer_d``: the Adam
    family with ``betas``, and ``weight_decay`` (decoupled for ``adamw``, an L2 term for the others)."""
    require(name in OPTIMIZERS, key, name, f"choose one of {', '.join(OPTIMIZERS)}")
    kwargs = {} if name == "rmsprop" else {"betas": betas}
    return OPTIMIZERS[name](params, lr=lr, weight_decay=weight_decay, **kwargs)


def adapt_state(module: nn.Module, state: dict[str, torch.Tensor], prefix: str) -> None:
    """Make a checkpoint's ``state`` fit the stabilisers of ``module`` switched on now: one switched on for a
    resumed run starts its state afresh (a historical average from the checkpoint's weights, adaptive p from
    its start), one switched off drops its saved state."""
    own = {prefix + key: value for key, value in module.state_dict().items()}
    for key in [k for k in state if k.startswith(prefix) and k not in own]:
        del state[key]
    for key, value in own.items():
        state.setdefault(key, value.clone())


class GANLifecycle(ClassHeadEvaluation):
    """Hooks of :class:`lightning_gan.models.GAN` around its training step (a mixin: the attributes it reads,
    ``hparams``, ``generator``, ``discriminator``, ``generator_ema``, ``step_rng``, are the GAN's)."""

    def configure_optimizers(self) -> list[dict]:
        hp = self.hparams
        opt_g, opt_d = (
            make_optimizer(
                hp[f"optimizer_{n}"],
                list(net.parameters()),
                hp[f"lr_{n}"],
                tuple(hp[f"betas_{n}"]),
                hp[f"weight_decay_{n}"],
                f"model.optimizer_{n}",
            )
            for n, net in (("g", self.generator), ("d", self.discriminator))
        )
        configs = []
        for opt, (key, scheduler) in zip((opt_g, opt_d), self.scheduler_factories.items(), strict=True):
            config: dict = {"optimizer": opt}
            if scheduler is not None:
                sched = scheduler(opt)
                require(
                    not isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau),
                    f"model.{key}",
                    type(sched).__name__,
                    "schedulers here are stepped per generator step without a metric",
                )
                config["lr_scheduler"] = {"scheduler": sched, "interval": "step"}
            configs.append(config)
        return configs

    def configure_model(self) -> None:
        # Once per fit, after the module is on its device and before the optimizers exist.
        hp = self.hparams
        if hp.channels_last:
            for net in (self.generator, self.discriminator):
                net.to(memory_format=torch.channels_last)  # 4-D weights only; Conv1d/Linear stay as they are
        if hp.compile and not self._compiled:
            self._compiled = True
            self.generator.compile()
            penalties = [key for key in ("gp_weight", "r1_weight") if hp[key] > 0]
            if penalties:
                rank_zero_warn(
                    f"model.compile=true with model.{'/'.join(penalties)}>0: D stays uncompiled, because an "
                    "input-gradient penalty needs a double backward through D that torch.compile does not "
                    "support; G is compiled"
                )
            else:
                self.discriminator.compile()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Saved after a generator step: the states the next step starts from.
        checkpoint["step_rng"] = self.step_rng.state_dict()
        checkpoint["rng_states"] = rng_states()
        data = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if hasattr(data, "training_record"):  # which samples G learnt from: MixedDataModule checks it
            checkpoint["training_data"] = data.training_record()
        self._export_d_statistics(checkpoint)  # D as a classifier: real-image BatchNorm statistics

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Gradient-norm clipping of G's or D's update. Lightning calls this after the precision plugin has
        # unscaled the gradients (AMP) and after the callbacks' own hook: DivergenceWatch sees the norm before
        # clipping. Manual optimization leaves clipping to the module (Trainer(gradient_clip_val) is refused).
        hp = self.hparams
        g = optimizer is self.trainer.optimizers[0]
        bound, start = (hp.grad_clip_g, hp.grad_clip_g_from) if g else (hp.grad_clip_d, hp.grad_clip_d_from)
        if bound > 0 and self.global_step >= start:
            self.clip_gradients(optimizer, gradient_clip_val=bound, gradient_clip_algorithm="norm")

    def on_train_batch_start(self, batch: object, batch_idx: int) -> None:
        # Restored here, right before the first step after a resume, not when the checkpoint is read:
        # between the two, Lightning's sanity check and new DataLoader iterators draw from the global RNG.
        if self._resume_rng_states is not None:
            set_rng_states(self._resume_rng_states)
            self._resume_rng_states = None

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.step_rng.load_state_dict(checkpoint.get("step_rng"))  # absent in older checkpoints: reseeded
        self._resume_rng_states = checkpoint.get("rng_states")
        state = checkpoint["state_dict"]
        for name in ("loss_terms", "augment"):  # stabilisers switched on or off since
            adapt_state(getattr(self, name), state, f"{name}.")
        has_ema = any(key.startswith("generator_ema.") for key in state)
        if has_ema and self.generator_ema is None:
            # A run with EMA saved generator_ema.* weights: make room for them before loading.
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        elif not has_ema and self.generator_ema is not None:
            # EMA switched on for a resumed run: the average starts from the checkpoint's G.
            prefix = "generator."
            state.update(
                {
                    f"generator_ema.{k[len(prefix) :]}": v.clone()
                    for k, v in list(state.items())
                    if k.startswith(prefix)
                }
            )

    def setup(self, stage: str) -> None:
        hidden = getattr(getattr(self.trainer, "datamodule", None), "num_labelled", None)
        require(
            not (stage == "fit" and self.d_takes_label and hidden is not None),
            "model.conditioning",
            self.conditioning,
            f"cgan feeds every real label to D, but data.num_labelled={hidden} hides most of them: "
            "use acgan or ssgan, or keep all labels",
        )
        batch_size = getattr(getattr(self.trainer, "datamodule", None), "batch_size", 2)
        require(
            not (stage == "fit" and self.hparams.mode_seeking > 0 and batch_size < 2),
            "model.mode_seeking",
            self.hparams.mode_seeking,
            f"compares pairs of samples of one batch: data.batch_size={batch_size} must be >= 2",
        )
        strategy = self.trainer.strategy
        if isinstance(strategy, DDPStrategy) and not strategy._ddp_kwargs.get("find_unused_parameters"):
            # Each D update leaves G's parameters without gradients and each G update D's (toggled off), which
            # plain DDP's reducer rejects at the next step ("Expected to have finished reduction in the prior
            # iteration"). Lightning only offers the switch as a strategy name
            # (ddp_find_unused_parameters_true); setting it here, before the strategy wraps the module, lets
            # `--trainer.strategy ddp` (and ddp_spawn) train a GAN as it is.
            strategy._ddp_kwargs["find_unused_parameters"] = True
            rank_zero_info("GAN under DDP: find_unused_parameters=True (G and D are updated in turn)")

    def on_fit_start(self) -> None:
        from lightning_gan.callbacks.ema import GeneratorEMA

        if self.generator_ema is not None and not any(
            isinstance(c, GeneratorEMA) for c in self.trainer.callbacks
        ):
            rank_zero_warn(
                "The checkpoint holds an EMA of G (generator_ema) but no GeneratorEMA callback is "
                "configured: the average stays frozen while G trains, and sampling keeps using it. Add "
                "--trainer.callbacks+=lightning_gan.callbacks.GeneratorEMA, or sample with ema=False."
            )
