"""The ``lightning-gan`` command: LightningCLI's ``fit``/``validate``/... plus ``generate`` and ``convert``.

LightningCLI subcommands must be Trainer methods, so ``generate`` and ``convert`` are dispatched here before
LightningCLI sees the arguments; their own parsers are built from their functions' signatures.
"""

from __future__ import annotations

import netrc
import os
import secrets
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from lightning_gan.callbacks import GANCheckpoint, SlurmRequeue
from lightning_gan.loggers import ConfigToLoggers, CSVLogger

#: Loggers that keep each run in ``<save_dir>/<name>/<version>``, where ``--ckpt_path last`` resumes in place.
FOLDER_LOGGERS = ("CSVLogger", "TensorBoardLogger")

#: Errors the project raises for bad settings; the CLI prints them as a one-line usage error, no traceback.
CONFIG_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError)


def find_last_checkpoint(root: str | Path) -> Path:
    """The newest ``last*.ckpt`` under ``root`` (crash checkpoints are named otherwise and never match)."""
    root = Path(root)
    candidates = sorted(root.glob("**/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(
            f"ckpt_path='last': no last checkpoint (checkpoints/last.ckpt) under {root.resolve()}; "
            "start a new run without --ckpt_path, or pass the path of a checkpoint"
        )
    return candidates[-1]


def wandb_can_log_in() -> bool:
    """Whether W&B has an API key to log in with: ``WANDB_API_KEY``, or a ``wandb login`` entry in ~/.netrc
    (or ``$NETRC``) for the ``WANDB_BASE_URL`` host. Checked before a run, because without one
    ``wandb.init`` asks on the terminal or waits on the network instead of failing."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def _wandb_offline(init_args: Namespace) -> bool:
    return bool(init_args.get("offline")) or os.environ.get("WANDB_MODE") in ("offline", "dryrun", "disabled")


class GANCLI(LightningCLI):
    """LightningCLI with the project's defaults, argument links, ``--ckpt_path last``, clean config errors."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The networks take the data's shape and class count: linked, never typed twice.
        parser.link_arguments("data.img_shape", "model.init_args.img_shape", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.add_lightning_class_args(GANCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                # Keep the last checkpoint and one every 500 generator steps ({step} is the generator step).
                "checkpoint.every_n_train_steps": 500,
                "checkpoint.save_top_k": -1,
                "checkpoint.save_last": True,
                "checkpoint.filename": "{step:06d}",
                # A resumed run writes last.ckpt in place instead of last-v1.ckpt beside it.
                "checkpoint.enable_version_counter": False,
                "data": {"class_path": "lightning_gan.data.DigitsDataModule"},
            }
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        if trainer.default_root_dir is None and config.get("model") is not None:
            # One folder per preset (runs/wgangp, ...): `--ckpt_path last` resumes this preset's newest run.
            trainer.default_root_dir = f"runs/{config.model.class_path.rsplit('.', 1)[-1].lower()}"
        root = Path(trainer.default_root_dir or ".")
        if trainer.logger in (None, True):
            # Lightning's default would be TensorBoard when installed; a CSV file works everywhere, offline.
            trainer.logger = Namespace(
                class_path="lightning_gan.loggers.CSVLogger", init_args=Namespace(save_dir=str(root))
            )
        logger = trainer.logger
        wandb = isinstance(logger, Namespace) and logger.class_path.endswith("WandbLogger")
        folder_logger = (
            isinstance(logger, Namespace) and logger.class_path.rsplit(".", 1)[-1] in FOLDER_LOGGERS
        )
        if folder_logger and logger.init_args.get("save_dir") is None:
            logger.init_args.save_dir = str(root)
        last = None
        if wandb and config.get("ckpt_path") is None and os.environ.get("WANDB_RUN_ID"):
            # A sweep agent's trial started again with the same run id (a requeued SLURM job, W&B's own
            # resume of a preempted run): the id names one run, so continue it from its checkpoint rather than
            # start a second run in the same folder under the same id.
            agent_run = self._runs_folder(logger, root, wandb)
            if list(agent_run.glob("**/checkpoints/last*.ckpt")):
                rank_zero_info(f"W&B run {agent_run.name} has a checkpoint in {agent_run}: resuming it")
                config.ckpt_path = "last"
        if config.get("ckpt_path") == "last":
            # Out of the box Lightning looks for "last" in the new run's own, new, version folder, finds
            # nothing and quietly starts from scratch; resume the newest run under default_root_dir, in place,
            # and only among this logger's runs: a W&B resume never continues a CSV run, nor the reverse.
            try:
                last = find_last_checkpoint(self._runs_folder(logger, root, wandb))
            except FileNotFoundError as err:
                self.parser.error(str(err))
            config.ckpt_path = str(last)
            self._resumed_step = int(
                torch.load(last, map_location="cpu", weights_only=True, mmap=True)["global_step"]
            )
            run_dir = last.parent.parent  # <save_dir>/<name>/<version>/checkpoints/last.ckpt
            # The run's config.yaml stays as it was; each resume records its own config beside it.
            resumes = len(list(run_dir.glob("config_resume_*.yaml")))
            self.save_config_kwargs["config_filename"] = f"config_resume_{resumes + 1}.yaml"
            if folder_logger:
                logger.init_args.save_dir = str(run_dir.parent.parent)
                logger.init_args.name = run_dir.parent.name
                logger.init_args.version = run_dir.name
                if "purge_step" in logger.init_args:  # TensorBoard drops the events the run logs again
                    logger.init_args.purge_step = self._resumed_step + 1
        if wandb:
            trainer.enable_autolog_hparams = False  # ConfigToLoggers logs every setting, as its flag
            self._prepare_wandb(logger.init_args, root, last)

    @staticmethod
    def _runs_folder(logger: Namespace | None, root: Path, wandb: bool) -> Path:
        """Where this run's logger keeps its runs (``--ckpt_path last`` looks only there): W&B's
        ``<save_dir>/<run id>`` folders (the agent's run alone when ``WANDB_RUN_ID`` is set), or a CSV or
        TensorBoard logger's ``<save_dir>/<name>``."""
        if not isinstance(logger, Namespace):
            return root
        init_args = logger.get("init_args") or Namespace()
        if wandb:
            folder = GANCLI._wandb_save_dir(init_args, root)
            run_id = init_args.get("id") or os.environ.get("WANDB_RUN_ID")
            return folder / run_id if run_id else folder
        if logger.class_path.rsplit(".", 1)[-1] in FOLDER_LOGGERS:
            return Path(init_args.get("save_dir") or root) / (init_args.get("name") or "lightning_logs")
        return root

    @staticmethod
    def _wandb_save_dir(init_args: Namespace, root: Path) -> Path:
        save_dir = init_args.get("save_dir")
        return root / "wandb" if save_dir in (None, ".") else Path(save_dir)

    def _prepare_wandb(self, init_args: Namespace, root: Path, last: Path | None) -> None:
        """One folder per W&B run, and a clear error instead of a login prompt or a hang.

        WandbLogger's ``save_dir`` is also the Trainer's ``log_dir``: every run would write its samples and
        config.yaml into the same folder (the second run's config.yaml fails to save). So each run gets
        ``<save_dir>/<run id>``, with the id of the sweep agent's run (``WANDB_RUN_ID``) when there is one;
        ``--ckpt_path last`` continues the checkpoint's W&B run in its folder.
        """
        if not _wandb_offline(init_args) and not wandb_can_log_in():
            self.parser.error(
                "trainer.logger=WandbLogger cannot log in to W&B: no API key (set WANDB_API_KEY or run "
                "`wandb login`). To log without an account or a network, set WANDB_MODE=offline (upload "
                "later with `wandb sync`), or use the default CSV logger"
            )
        if last is not None:  # <save_dir>/<id>/<project>/<id>/checkpoints/last.ckpt
            run_dir = last.parent.parent
            init_args.id = run_dir.name
            init_args.save_dir = str(run_dir.parent.parent)
            init_args.resume = "allow"
            return
        run_id = (
            init_args.get("id")
            or init_args.get("version")
            or os.environ.get("WANDB_RUN_ID")
            or secrets.token_hex(4)  # 8 characters of [0-9a-f], like W&B's own run ids
        )
        init_args.id = run_id
        init_args.save_dir = str(self._wandb_save_dir(init_args, root) / run_id)

    def before_fit(self) -> None:
        for logger in self.trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.resumed_step = getattr(self, "_resumed_step", None)

    def _run_subcommand(self, subcommand: str) -> None:
        # A setting that only the assembled run can check (a model.setup or callback.setup hook) fails with
        # the project's standard message; before the first step it is a usage error, not a crash.
        try:
            super()._run_subcommand(subcommand)
        except ValueError as err:
            if " is not allowed: " in str(err) and self.trainer.global_step == 0:
                self.parser.error(str(err))
            raise

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except CONFIG_ERRORS as err:
            self.parser.error(str(err))


def run(args: Sequence[str] | None = None) -> GANCLI | None:
    """Runs ``lightning-gan`` with ``args`` (default: the command line); returns the CLI object, for tests."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "generate":
        from lightning_gan.generate import generate_cli

        generate_cli(argv[1:])
        return None
    if argv and argv[0] == "convert":
        from lightning_gan.data.streaming import convert_cli

        convert_cli(argv[1:])
        return None
    return GANCLI(
        LightningModule,  # any preset, and the judge classifier, by class path
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=None if args is None else argv,
        parser_kwargs={"description": "Train GANs (fit, ...). Also: lightning-gan generate|convert --help"},
        auto_configure_optimizers=False,
        save_config_callback=ConfigToLoggers,
    )


#: Set by ``configs/slurm/sweep.sh``: where a W&B sweep trial writes how to start it again after a requeue.
TRIAL_RECORD = "LIGHTNING_GAN_TRIAL_RECORD"


def write_trial_record() -> Path | None:
    """Under ``configs/slurm/sweep.sh`` (``$LIGHTNING_GAN_TRIAL_RECORD`` set), a sweep agent's trial
    (``WANDB_RUN_ID`` set) writes a bash script that starts it again as it was started: its folder, its
    ``WANDB_*`` environment and its command line. A requeued job runs it before its agent asks for another
    trial, and the trial, seeing its run id's checkpoint, resumes it. Returns the script's path."""
    path = os.environ.get(TRIAL_RECORD)
    if not path or not os.environ.get("WANDB_RUN_ID") or os.environ.get("SLURM_PROCID", "0") != "0":
        return None
    environment = {
        k: v for k, v in os.environ.items() if k.startswith("WANDB_") and k != "WANDB_SERVICE"
    }  # WANDB_SERVICE: the agent's own W&B process, gone after a requeue
    lines = [
        "#!/bin/bash",
        "# A W&B sweep trial that SLURM's time limit interrupted; configs/slurm/sweep.sh runs it again.",
        f"cd {shlex.quote(os.getcwd())}",
        *(f"export {k}={shlex.quote(v)}" for k, v in sorted(environment.items())),
        "exec " + shlex.join([sys.executable, "-m", "lightning_gan", *sys.argv[1:]]),
    ]
    record = Path(path)
    record.parent.mkdir(parents=True, exist_ok=True)
    temporary = record.with_name(f".{record.name}.tmp")
    temporary.write_text("\n".join(lines) + "\n")
    temporary.replace(record)
    return record


def leave_process_group() -> None:
    """After a run under DDP, waits for every rank and then destroys the process group. Lightning destroys
    only NCCL groups at exit; a gloo group left to the interpreter's teardown now and then aborts a rank that
    had finished ("terminate called without an active exception", status 134), which turned a SLURM job's
    requeue (status 75 from every task) into a failure."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # no rank leaves while a peer still talks to it
        torch.distributed.destroy_process_group()


def main() -> None:
    """Entry point of ``lightning-gan`` and ``python -m lightning_gan``. Exits with
    :attr:`SlurmRequeue.EXIT_STATUS` when that callback stopped the run for a SLURM time limit, so that the
    batch script requeues the job (``configs/slurm/train.sh``); a sweep trial's record
    (:func:`write_trial_record`) is kept only then."""
    record = write_trial_record()
    stopped = False
    try:
        trainer = getattr(run(), "trainer", None)
        stopped = trainer is not None and any(
            isinstance(c, SlurmRequeue) and c.stopped_at is not None for c in trainer.callbacks
        )
    finally:
        if record is not None and not stopped:
            record.unlink(missing_ok=True)
    leave_process_group()
    if stopped:
        sys.exit(SlurmRequeue.EXIT_STATUS)
