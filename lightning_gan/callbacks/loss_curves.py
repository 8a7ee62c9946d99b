"""A PNG of the losses and of the sample-quality metrics over generator steps, written at the end of fit."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from lightning_gan.callbacks.metrics import GANMetrics


class LossCurves(Callback):
    """Records ``loss/*`` every generator step and plots them with the metrics of :class:`GANMetrics`.

    The picture lands in ``<run folder>/curves.png`` when training ends (also when the divergence watch
    stops it). The recorded values are saved in checkpoints, so a resumed run plots its whole history.

    Args:
        keys: Logged scalars to record every step.
        filename: Name of the PNG in the run folder.
    """

    def __init__(self, keys: tuple[str, ...] = ("loss/d", "loss/g"), filename: str = "curves.png") -> None:
        self.keys = tuple(keys)
        self.filename = filename
        self.steps: list[int] = []
        self.values: dict[str, list[float]] = {key: [] for key in self.keys}

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        logged = trainer.callback_metrics
        self.steps.append(trainer.global_step)
        for key in self.keys:
            self.values[key].append(float(logged[key]) if key in logged else math.nan)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        run_dir = Path(trainer.log_dir or trainer.default_root_dir)  # every rank: a broadcast under DDP
        if trainer.is_global_zero:
            metrics = next((cb for cb in trainer.callbacks if isinstance(cb, GANMetrics)), None)
            self.plot(run_dir / self.filename, metrics)

    def plot(self, path: Path, metrics: GANMetrics | None = None) -> Path:
        """Draws losses (first panel) and each metric (one panel each) against generator steps."""
        # outside pyplot: no display needed, and the caller's backend (a notebook's) is left as it was
        from matplotlib.figure import Figure

        history = metrics.history if metrics is not None else []
        metric_names = [k for k in (history[0] if history else {}) if k != "step"]
        panels = 1 + len(metric_names)
        cols = min(panels, 3)
        rows = math.ceil(panels / cols)
        fig = Figure(figsize=(5 * cols, 3.2 * rows))
        axes = fig.subplots(rows, cols, squeeze=False)
        ax = axes.flat[0]
        for key in self.keys:
            ax.plot(self.steps, self.values[key], label=key, linewidth=0.8)
        ax.set(title="losses", xlabel="generator step")
        ax.legend()
        for ax, name in zip(axes.flat[1:], metric_names, strict=False):
            ax.plot([h["step"] for h in history], [h[name] for h in history], marker="o")
            ax.set(title=name, xlabel="generator step")
        for ax in axes.flat[panels:]:
            ax.axis("off")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        return path

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "values": self.values}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps = state_dict["steps"]
        self.values = state_dict["values"]
