"""W&B: the logger config offline (losses, metrics, sample grids as images; one folder per run; resume), a
clear error without a key, and every sweep config's first trial run as its exact command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lightning_gan.cli import run
from tests.conftest import REPO

WANDB = str(REPO / "configs" / "logger" / "wandb.yaml")
SWEEPS = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))
TINY = (
    "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--data.batch_size=16",
    "--trainer.log_every_n_steps=1",
)  # fmt: skip


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    yield tmp_path
    import wandb

    wandb.finish()


def fit(root: Path, *args: str, config: str = "dcgan.yaml"):
    import wandb

    cli = run([
        "fit", "--config", str(REPO / "configs" / config), "--trainer.logger", WANDB,
        f"--trainer.logger.init_args.save_dir={root}", f"--trainer.default_root_dir={root}", *TINY, *args,
    ])  # fmt: skip
    wandb.finish()  # flush the run record, as the end of the process does
    return cli


def offline_run_files(run_dir: Path) -> tuple[list[Path], bytes]:
    """The sample images W&B stored and the bytes of its run record, for the newest offline run."""
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    images = sorted(runs[-1].glob("files/media/images/samples_*.png"))
    return images, next(runs[-1].glob("run-*.wandb")).read_bytes()


def test_offline_runs_log_losses_and_sample_images_each_in_its_own_folder(offline):
    first = fit(offline, "--trainer.max_steps=3")
    second = fit(offline, "--trainer.max_steps=3")
    dirs = [Path(cli.trainer.log_dir) for cli in (first, second)]
    assert dirs[0] != dirs[1] and all(d.parent == offline for d in dirs)  # <save_dir>/<run id>
    for run_dir in dirs:
        assert (run_dir / "config.yaml").is_file() and (run_dir / "samples" / "step_000003.png").is_file()
        images, record = offline_run_files(run_dir)
        assert images and b"loss/d" in record and b"loss/g" in record
    assert first.trainer.logger.version == dirs[0].name


def test_resume_continues_the_same_wandb_run_in_its_folder(offline):
    first = fit(offline, "--trainer.max_steps=2")
    resumed = fit(offline, "--trainer.max_steps=4", "--ckpt_path=last")
    assert resumed.trainer.logger.version == first.trainer.logger.version
    assert Path(resumed.trainer.log_dir) == Path(first.trainer.log_dir)
    assert resumed.trainer.global_step == 4
    assert (Path(first.trainer.log_dir) / "config_resume_1.yaml").is_file()


def test_without_a_key_online_fails_at_once_saying_how_to_go_offline(monkeypatch, tmp_path, capsys):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "netrc"
    empty.write_text("")
    monkeypatch.setenv("NETRC", str(empty))
    with pytest.raises(SystemExit) as exit_info:
        fit(tmp_path, "--trainer.max_steps=1")
    assert exit_info.value.code != 0
    message = capsys.readouterr().err
    assert "cannot log in to W&B" in message and "WANDB_MODE=offline" in message
    assert not list(tmp_path.glob("**/*.ckpt"))


def first_trial(sweep: dict) -> list[str]:
    """What a sweep agent runs for a trial: ``command`` with ${args} = --key=value for each parameter (the
    first of its values, or the lower bound of a distribution)."""
    args = []
    for key, spec in sweep["parameters"].items():
        value = spec["values"][0] if "values" in spec else spec.get("value", spec.get("min"))
        args.append(f"--{key}={value}")
    command = []
    for part in sweep["command"]:
        command += args if part == "${args}" else [part]
    return command


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_sweep_config_runs_its_trial_command_offline(path, offline, monkeypatch):
    sweep = yaml.safe_load(path.read_text())
    assert sweep["method"] in ("grid", "random", "bayes") and sweep["metric"]["name"] == "metrics/fid"
    command = first_trial(sweep)
    assert command[:2] == ["lightning-gan", "fit"] and all(a.startswith("--model.") for a in command[-3:])
    monkeypatch.chdir(REPO)  # the agent runs the command from the repository root (relative config paths)
    cli = run([*command[1:], f"--trainer.default_root_dir={offline}", "--trainer.logger.init_args.save_dir="
               f"{offline}", "--trainer.max_steps=2", *TINY])  # fmt: skip
    for key, spec in sweep["parameters"].items():  # every swept value reached the model
        if "values" in spec:
            assert cli.model.hparams[key.split(".", 1)[1]] == spec["values"][0]
    assert cli.trainer.global_step == 2 and offline_run_files(Path(cli.trainer.log_dir))[0]
