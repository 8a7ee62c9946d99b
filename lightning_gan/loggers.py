"""A CSV and a TensorBoard logger that keep a run's metrics when the run resumes into its own folder, and the
resolved config in every other logger's hyperparameters (and, for TensorBoard, as text)."""

from __future__ import annotations

import csv
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer deletes an existing metrics.csv; this one appends to it, keeping its columns, and
    first drops the rows of steps after ``keep_up_to`` (the resumed checkpoint's step): those steps are
    trained and logged again, so each step keeps one row even after a kill between two checkpoints."""

    def __init__(self, log_dir: str, keep_up_to: int | None = None) -> None:
        self.keep_up_to = keep_up_to
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            self.metrics_keys = list(reader.fieldnames or [])
            rows = list(reader)
        kept = [r for r in rows if self.keep_up_to is None or int(float(r["step"])) <= self.keep_up_to]
        if len(kept) == len(rows):
            return
        temporary = f"{self.metrics_file_path}.tmp"
        with self._fs.open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(kept)
        self._fs.mv(temporary, self.metrics_file_path)


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger, but appending to the run's ``metrics.csv`` on ``--ckpt_path last`` (keeping
    only the rows up to :attr:`resumed_step`, which the CLI sets to the checkpoint's step)."""

    resumed_step: int | None = None

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir, keep_up_to=self.resumed_step)
        return self._experiment


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger with the run's folder as its default place: ``save_dir`` None is
    ``--trainer.default_root_dir`` (the CLI fills it in, as for the CSV file) and runs are kept in
    ``<save_dir>/tensorboard/version_N``, apart from the CSV logger's. Needs ``pip install
    'lightning-gan[tensorboard]'``.

    Args:
        save_dir: Where the runs' folders go; None: the run's default root dir.
        name: The folder under ``save_dir`` that holds the versions.
        kwargs: Lightning's TensorBoardLogger keys and those of torch's ``SummaryWriter`` (``purge_step``:
            the CLI sets it on ``--ckpt_path last``, so the events of steps after the checkpoint go).
    """

    def __init__(self, save_dir: str | None = None, name: str = "tensorboard", **kwargs: Any) -> None:
        super().__init__("." if save_dir is None else save_dir, name, **kwargs)


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
            if isinstance(logger, LightningTensorBoardLogger):  # the config.yaml of the run, in its TEXT tab
                text = self.parser.dump(self.config, skip_none=False)
                block = "\n".join("    " + line for line in text.splitlines())  # markdown code block
                logger.experiment.add_text("config", block, global_step=trainer.global_step)
