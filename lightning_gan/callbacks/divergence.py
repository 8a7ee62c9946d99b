"""Watches a GAN run for divergence and warns, stops or rolls back to the last good checkpoint."""

from __future__ import annotations

import math
import statistics
from collections import deque
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_gan.validation import require

DivergenceAction = Literal["warn", "stop", "rollback"]
COVERAGE_KEY = "metrics/coverage"  # logged every K steps by GANMetrics


def _check(ok: bool, key: str, value: object, allowed: str) -> None:
    require(ok, f"DivergenceWatch.{key}", value, allowed)


class DivergenceWatch(Callback):
    """Detects a diverging GAN run, then warns, stops training or rolls back to the last good checkpoint.

    Four signals, checked after every generator step:

    - ``nan``: a logged ``loss/*`` value, or a gradient norm of G or D, is NaN or infinite. Fires at once,
      even before ``min_steps``. Non-finite gradients (and gradient penalties, taken of scaled scores) are
      ignored when a GradScaler (fp16 AMP) is active: the scaler skips those steps by design.
    - ``loss_trend``: D wins and G loses. The mean D loss over the last ``window`` generator steps is below
      ``d_loss_floor`` *and* the median G loss over the last half of the window is at least ``g_loss_growth``
      times the median G loss of the last ``window`` steps whose D loss was still ``>= d_loss_floor``
      (the G level of the last fair game). Once D wins, G's loss grows only like D's logits, about
      logarithmically, so two halves of one window rarely differ by 2x even in a dead run; the level before D
      won is the stable reference, and medians ignore single-batch spikes. Needs non-negative D losses and
      positive G losses: it is off, with a warning at the start of the run, for ``wasserstein`` (a critic's
      loss has no floor) and ``minimax`` (G loss <= 0; SSGAN's too). LSGAN's G loss is capped at 0.5 by a
      perfect D: lower ``g_loss_growth`` there.
    - ``grad_norm``: the total L2 norm of G's or D's gradients at any optimizer step exceeded
      ``grad_norm_max``. Fires at any step. The norm is the one before ``--model.grad_clip_g/_d`` clips it
      (callbacks' ``on_before_optimizer_step`` runs before the module's, which clips): a clipped run still
      shows its gradients blowing up.
    - ``coverage``: ``metrics/coverage`` (logged by :class:`GANMetrics`, when present) fell below
      ``min_coverage``.

    ``loss_trend`` and ``coverage`` wait for ``min_steps`` generator steps (and ``loss_trend`` for a full
    window): early in training D legitimately dominates and G covers few classes.

    A rollback restores the module's weights (EMA included) and the optimizer states from
    the ``last_model_path`` of the run's checkpoint callbacks (``last.ckpt`` of :class:`GANCheckpoint`),
    multiplies
    every learning rate in use by ``lr_factor`` (and LR schedulers' base LRs, so a schedule cannot undo the
    cut), and clears the loss window. The generator-step counter, the data position, LR schedule positions
    and the other callbacks' state are *not* rolled back: training continues forward from the restored
    weights with lower LRs. Without a last checkpoint, with a non-finite one, or after ``max_rollbacks``
    rollbacks, it stops.

    Args:
        action: ``warn`` (once per episode of a signal), ``stop`` (end training at this step) or ``rollback``.
        window: Generator steps of loss history the ``loss_trend`` signal looks at.
        min_steps: Generator steps before ``loss_trend`` or ``coverage`` may fire.
        d_loss_floor: ``loss_trend`` needs the window's mean D loss below this; 0 turns the signal off.
        g_loss_growth: ``loss_trend`` also needs G's recent median loss this many times its level of the
            last fair game (>= 1; 1 flags a D that wins while G merely holds its level).
        grad_norm_max: Bound on the total gradient norm of either network; 0 = off.
        min_coverage: Bound on ``metrics/coverage``, in [0, 1]; 0 = off.
        max_rollbacks: Rollbacks allowed before a divergence stops the run.
        lr_factor: Learning-rate multiplier applied at each rollback, in (0, 1].

    Attributes:
        reason: The message of the divergence that stopped training, else None.
        events: One dict per fired signal: ``step``, ``signal``, ``message`` and the ``action`` taken.
        rollbacks: Rollbacks done so far.

    Example:
        In a config's ``trainer.callbacks`` (``lightning-gan fit``)::

            - class_path: lightning_gan.callbacks.DivergenceWatch
              init_args: {action: rollback, window: 200, min_steps: 1000}
    """

    def __init__(
        self,
        action: DivergenceAction = "stop",
        window: int = 200,
        min_steps: int = 500,
        d_loss_floor: float = 0.05,
        g_loss_growth: float = 2.0,
        grad_norm_max: float = 1e4,
        min_coverage: float = 0.0,
        max_rollbacks: int = 3,
        lr_factor: float = 0.5,
    ) -> None:
        _check(action in ("warn", "stop", "rollback"), "action", action, "choose warn, stop or rollback")
        _check(isinstance(window, int) and window >= 2, "window", window, "must be an integer >= 2")
        _check(
            isinstance(min_steps, int) and min_steps >= 0, "min_steps", min_steps, "must be an integer >= 0"
        )
        _check(d_loss_floor >= 0, "d_loss_floor", d_loss_floor, "must be >= 0 (0 = off)")
        _check(g_loss_growth >= 1, "g_loss_growth", g_loss_growth, "must be >= 1 (a growth factor)")
        _check(grad_norm_max >= 0, "grad_norm_max", grad_norm_max, "must be >= 0 (0 = off)")
        _check(0 <= min_coverage <= 1, "min_coverage", min_coverage, "must be in [0, 1] (0 = off)")
        _check(
            isinstance(max_rollbacks, int) and max_rollbacks >= 0,
            "max_rollbacks",
            max_rollbacks,
            "must be an integer >= 0",
        )
        _check(0 < lr_factor <= 1, "lr_factor", lr_factor, "must be in (0, 1]")
        self.action = action
        self.window = window
        self.min_steps = min_steps
        self.d_loss_floor = d_loss_floor
        self.g_loss_growth = g_loss_growth
        self.grad_norm_max = grad_norm_max
        self.min_coverage = min_coverage
        self.max_rollbacks = max_rollbacks
        self.lr_factor = lr_factor

        self.d_losses: deque[float] = deque(maxlen=window)
        self.g_losses: deque[float] = deque(maxlen=window)
        self.g_fair: deque[float] = deque(maxlen=window)  # G losses of steps whose D loss was >= d_loss_floor
        self.rollbacks = 0
        self.events: list[dict[str, Any]] = []
        self.reason: str | None = None
        self._active: set[str] = set()  # signals that fired at the last check: `warn` warns on new ones only
        # The coverage reading a rollback made stale (it is logged every K steps): ignored until it changes.
        self._stale_coverage: float | None = None
        self._trend_on = d_loss_floor > 0
        self._grad_max: dict[str, Tensor] = {}  # largest gradient norm per network since the last check
        self._net_names: dict[int, str] = {}

    # ---------------------------------------------------------------- observing
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        loss = getattr(pl_module, "hparams", {}).get("loss")
        why_off = {
            "wasserstein": "a critic's loss has no floor at 0",
            "minimax": "G's minimax loss, log(1 - D(G(z))), is <= 0 and cannot grow by g_loss_growth (SSGAN "
            "uses it too)",
        }.get(loss)
        self._trend_on = self.d_loss_floor > 0 and why_off is None
        if self.d_loss_floor > 0 and why_off is not None:
            rank_zero_warn(
                f"DivergenceWatch: the loss_trend signal is off for loss={loss!r} ({why_off}); the nan, "
                "grad_norm and coverage signals stay on"
            )

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        generator = getattr(pl_module, "generator", None)
        g_params = {id(p) for p in generator.parameters()} if isinstance(generator, nn.Module) else set()
        for i, optimizer in enumerate(trainer.optimizers):
            first = next((p for group in optimizer.param_groups for p in group["params"]), None)
            if not g_params:
                name = f"optimizer {i}"
            else:
                name = "G" if first is not None and id(first) in g_params else "D"
            self._net_names[id(optimizer)] = name

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # Called for G's step and for each of D's n_critic steps (GAN steps D through the strategy, which runs
        # this hook too), after backward and after AMP's unscale_, so the norm is the true one.
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads)  # stays on the device: read once per generator step
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            norm = torch.nan_to_num(norm, nan=0.0, posinf=0.0)  # fp16 overflow: the scaler skips this step
        name = self._net_names.get(id(optimizer), "optimizer")
        previous = self._grad_max.get(name)
        self._grad_max[name] = norm if previous is None else torch.maximum(previous, norm)  # NaN propagates

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        step = trainer.global_step  # called after the generator step, so this already counts it
        signals = self._signals(trainer, pl_module, step)
        if self.action != "warn":
            # Every process must act alike: a rollback on one rank only would leave DDP replicas with
            # different weights. Single-device strategies return the decision unchanged.
            if trainer.strategy.reduce_boolean_decision(bool(signals), all=False) and not signals:
                signals = {"other_rank": "another process saw a divergence signal"}
            new = set(signals)
        else:
            new = set(signals) - self._active
        self._active = set(signals)
        if not new:
            return
        message = f"Training diverged at generator step {step}: " + "; ".join(
            text for name, text in signals.items() if name in new
        )
        if self.action == "warn":
            rank_zero_warn(f"{message}. Training continues (DivergenceWatch.action='warn').")
            taken = "warn"
        elif self.action == "rollback":
            taken = self._rollback(trainer, pl_module, step, message)
        else:
            self._stop(trainer, f"{message}. Training stops (DivergenceWatch.action='stop').")
            taken = "stop"
        self.events += [
            {"step": step, "signal": name, "message": message, "action": taken} for name in sorted(new)
        ]

    def _signals(self, trainer: Trainer, pl_module: LightningModule, step: int) -> dict[str, str]:
        """Reads this step's figures and returns ``{signal: description}`` of every signal that fires."""
        metrics = trainer.callback_metrics
        keys = [k for k in metrics if k.startswith("loss/")]
        if self.min_coverage > 0 and COVERAGE_KEY in metrics:
            keys.append(COVERAGE_KEY)
        grad_names = list(self._grad_max)
        names = keys + grad_names
        tensors = [torch.as_tensor(metrics[k], dtype=torch.float32, device=pl_module.device) for k in keys]
        tensors += [self._grad_max[name].float().to(pl_module.device) for name in grad_names]
        # One device-to-host copy per generator step instead of one per figure.
        values = dict(zip(names, torch.stack(tensors).tolist(), strict=True)) if tensors else {}
        figures = {k: values[k] for k in keys}
        grad_norms = {name: values[name] for name in grad_names}
        self._grad_max.clear()
        signals: dict[str, str] = {}

        # Under a GradScaler the gradient penalty is taken of scaled scores: an overflow there, like one in
        # the gradients, is a step the scaler skips, not a divergence.
        scaled = getattr(trainer.precision_plugin, "scaler", None) is not None
        non_finite = [
            f"{k}={v}" for k, v in figures.items() if not math.isfinite(v) and not (scaled and k == "loss/gp")
        ]
        non_finite += [f"{name} gradient norm={v}" for name, v in grad_norms.items() if not math.isfinite(v)]
        if non_finite:
            signals["nan"] = "non-finite (NaN/Inf) " + ", ".join(non_finite)

        too_large = {n: v for n, v in grad_norms.items() if math.isfinite(v) and v > self.grad_norm_max > 0}
        if too_large:
            signals["grad_norm"] = ", ".join(
                f"{name} gradient norm reached {v:.3g} (> grad_norm_max={self.grad_norm_max:g})"
                for name, v in too_large.items()
            )

        d, g = figures.get("loss/d"), figures.get("loss/g")
        if self._trend_on and d is not None and g is not None and math.isfinite(d) and math.isfinite(g):
            self.d_losses.append(d)
            self.g_losses.append(g)
            if d >= self.d_loss_floor:
                self.g_fair.append(g)
            trend = self._loss_trend(step)
            if trend:
                signals["loss_trend"] = trend

        coverage = figures.get(COVERAGE_KEY)
        if coverage is not None and coverage != self._stale_coverage:
            self._stale_coverage = None
            if step >= self.min_steps and coverage < self.min_coverage:
                signals["coverage"] = (
                    f"class coverage fell to {coverage:.3g} (< min_coverage={self.min_coverage:g})"
                )
        return signals

    def _loss_trend(self, step: int) -> str | None:
        """Describes the D-wins, G-loses signature when the window shows it (see the class docstring)."""
        if step < self.min_steps or len(self.d_losses) < self.window or not self.g_fair:
            return None
        d_mean = statistics.fmean(self.d_losses)
        half = self.window - self.window // 2
        g_late = statistics.median(list(self.g_losses)[-half:])
        g_fair = statistics.median(self.g_fair)
        if not (d_mean < self.d_loss_floor and g_fair > 0 and g_late >= self.g_loss_growth * g_fair):
            return None
        return (
            f"D loss fell to {self.d_losses[-1]:.3g} (mean {d_mean:.3g} over the last {self.window} steps "
            f"< d_loss_floor={self.d_loss_floor:g}) while G loss grew {g_late / g_fair:.1f}x (median "
            f"{g_late:.3g} over the last {half} steps vs {g_fair:.3g} while D loss was "
            f">= {self.d_loss_floor:g})"
        )

    # ---------------------------------------------------------------- acting
    def _stop(self, trainer: Trainer, message: str) -> None:
        trainer.should_stop = True
        self.reason = message
        rank_zero_warn(message)

    def _rollback(self, trainer: Trainer, pl_module: LightningModule, step: int, message: str) -> str:
        """Restores the last checkpoint with lower LRs, or stops when it cannot. Returns the action taken."""
        # The checkpoint callback that keeps last.ckpt; a best-by-FID one beside it has no last_model_path.
        paths = [getattr(cb, "last_model_path", "") for cb in trainer.checkpoint_callbacks]
        path = next((p for p in paths if p), "")
        ckpt, why = None, ""
        if self.rollbacks >= self.max_rollbacks:
            why = f"its budget of DivergenceWatch.max_rollbacks={self.max_rollbacks} rollbacks is used up"
        elif not path or not Path(path).is_file():
            why = "there is no last checkpoint yet (keep a GANCheckpoint with save_last=True in the run)"
        else:
            ckpt = torch.load(path, map_location=pl_module.device, weights_only=False)
            # Buffers too: BatchNorm's running statistics turn NaN with the weights and come back with them.
            if not all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()):
                ckpt, why = None, f"the last checkpoint {path} holds NaN/Inf weights"
        if ckpt is None:
            self._stop(trainer, f"{message}. Training stops: it cannot roll back, {why}.")
            return "stop"

        lrs = [[group["lr"] for group in optimizer.param_groups] for optimizer in trainer.optimizers]
        pl_module.load_state_dict(ckpt["state_dict"])
        for optimizer, state, old_lrs in zip(trainer.optimizers, ckpt["optimizer_states"], lrs, strict=True):
            # Loading also brings back the checkpoint's LRs: the cut applies to the LRs in use until now.
            optimizer.load_state_dict(state)
            for group, lr in zip(optimizer.param_groups, old_lrs, strict=True):
                group["lr"] = lr * self.lr_factor
        for config in trainer.lr_scheduler_configs:
            # Schedulers such as LambdaLR or OneCycleLR set lr = base_lr * f(step) and would undo the cut.
            if hasattr(config.scheduler, "base_lrs"):
                config.scheduler.base_lrs = [lr * self.lr_factor for lr in config.scheduler.base_lrs]
        # The window restarts from the restored weights; g_fair, G's level in the last fair game, is kept as
        # the reference the restored run is judged against.
        self.d_losses.clear()
        self.g_losses.clear()
        self._grad_max.clear()
        coverage = trainer.callback_metrics.get(COVERAGE_KEY)
        self._stale_coverage = None if coverage is None else float(coverage)
        self.rollbacks += 1
        rank_zero_warn(
            f"{message}. Rolled back to {path} (generator step {ckpt['global_step']}) with learning rates "
            f"x{self.lr_factor:g} (rollback {self.rollbacks} of {self.max_rollbacks}); the generator-step "
            f"counter and the data continue from step {step}."
        )
        return "rollback"

    # ---------------------------------------------------------------- resuming
    def state_dict(self) -> dict[str, Any]:
        return {
            "d_losses": list(self.d_losses),
            "g_losses": list(self.g_losses),
            "g_fair": list(self.g_fair),
            "rollbacks": self.rollbacks,
            "events": list(self.events),
            "reason": self.reason,
            "active": sorted(self._active),
            "stale_coverage": self._stale_coverage,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # A resumed run may pass another window: the history is kept up to the new length.
        self.d_losses = deque(state_dict["d_losses"], maxlen=self.window)
        self.g_losses = deque(state_dict["g_losses"], maxlen=self.window)
        self.g_fair = deque(state_dict["g_fair"], maxlen=self.window)
        self.rollbacks = state_dict["rollbacks"]
        self.events = list(state_dict["events"])
        self.reason = state_dict["reason"]
        self._active = set(state_dict["active"])
        self._stale_coverage = state_dict["stale_coverage"]
