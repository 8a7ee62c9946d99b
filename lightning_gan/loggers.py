"""A CSV logger that keeps a run's metrics when the run resumes into its own folder, and the resolved config
in every other logger's hyperparameters."""

from __future__ import annotations

import csv
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer deletes an existing metrics.csv; this one appends to it, keeping its columns."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = list(csv.DictReader(file).fieldnames or [])


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger, but appending to the run's ``metrics.csv`` on ``--ckpt_path last``."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def flat_config(config: Namespace | dict[str, Any]) -> dict[str, Any]:
    """The resolved config as flat dotted keys spelt like the CLI flags that set them: ``model.lr_d``,
    ``data.batch_size``, ``trainer.max_steps``, ``seed_everything``; the class of ``model`` and ``data`` under
    ``model.class_path``. The ``init_args`` level right under ``model`` and ``data`` is dropped, as in
    ``--model.lr_d`` (and in the keys a W&B sweep sets); deeper ones stay, as in
    ``--model.generator.init_args.base_channels``. Lists (``trainer.callbacks``) stay whole values.

    Example:
        >>> flat_config({"model": {"class_path": "DCGAN", "init_args": {"lr_d": 0.1}}, "seed_everything": 0})
        {'model.class_path': 'DCGAN', 'model.lr_d': 0.1, 'seed_everything': 0}
    """
    config = config.as_dict() if isinstance(config, Namespace) else config
    flat: dict[str, Any] = {}

    def visit(prefix: str, value: Any, top: bool) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                if top and key == "init_args" and "class_path" in value:
                    visit(prefix, item, top=False)
                else:
                    visit(f"{prefix}.{key}" if prefix else key, item, top=not prefix)
        else:
            flat[prefix] = value

    visit("", config, top=True)
    return flat


class ConfigToLoggers(SaveConfigCallback):
    """LightningCLI's config saving (``config.yaml`` in the run folder), plus the whole resolved config, as
    :func:`flat_config` keys, in every logger's hyperparameters except the CSV file's (whose run folder has
    ``config.yaml``): a W&B run can then be grouped and filtered by any setting, under the keys a sweep sets.
    """

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        flat = flat_config(self.config)
        for logger in trainer.loggers:
            if not isinstance(logger, LightningCSVLogger):
                logger.log_hyperparams(flat)
