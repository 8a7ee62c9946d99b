"""W&B: the logger config offline (losses, metrics, sample grids as images; one folder per run; resume), a
clear error without a key; the sweep configs checked by W&B's own sweep engine and their trials started by
W&B's own agent code."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from lightning_gan.cli import run
from tests.conftest import REPO

WANDB_CONFIG = REPO / "configs" / "logger" / "wandb.yaml"
WANDB = str(WANDB_CONFIG)
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


@pytest.fixture
def user_dir(offline, monkeypatch):
    """A folder to run commands in as a user does from a checkout: the shipped configs under ``configs/``,
    every run under the preset's default ``runs/<preset>``."""
    (offline / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(offline)
    return offline


def user_fit(*args: str):
    """``lightning-gan fit`` exactly as typed in a checkout (tiny settings for speed)."""
    import wandb

    cli = run(["fit", "--config", "configs/dcgan.yaml", *TINY, *args])
    wandb.finish()
    return cli


def test_resume_continues_the_same_wandb_run_with_the_shipped_config_after_a_csv_run(user_dir, capsys):
    csv_run = user_fit("--trainer.max_steps=2")
    (csv_last,) = user_dir.glob("runs/dcgan/lightning_logs/version_0/checkpoints/last.ckpt")
    csv_files = {p: p.read_bytes() for p in csv_last.parent.parent.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit):  # no W&B run yet: the CSV run is not taken for one
        user_fit("--trainer.logger", "configs/logger/wandb.yaml", "--ckpt_path", "last")
    assert f"no last checkpoint (checkpoints/last.ckpt) under {user_dir / 'runs/dcgan/wandb'}" in (
        capsys.readouterr().err
    )
    first = user_fit("--trainer.logger", "configs/logger/wandb.yaml", "--trainer.max_steps=2")
    run_id = first.trainer.logger.version
    assert Path(first.trainer.log_dir).resolve() == user_dir / "runs/dcgan/wandb" / run_id  # as README says
    resumed = user_fit(
        "--trainer.logger", "configs/logger/wandb.yaml", "--trainer.max_steps=4", "--ckpt_path", "last"
    )
    assert resumed.trainer.logger.version == run_id and resumed.trainer.global_step == 4
    assert Path(resumed.trainer.log_dir) == Path(first.trainer.log_dir)
    assert (Path(first.trainer.log_dir) / "config_resume_1.yaml").is_file()
    assert resumed.trainer.logger.experiment.resumed is False  # offline: W&B resumes it at `wandb sync`
    assert resumed.trainer.logger.experiment.id == run_id
    # the CSV run is untouched, file for file
    assert {p: p.read_bytes() for p in csv_last.parent.parent.rglob("*") if p.is_file()} == csv_files
    assert csv_run.trainer.global_step == 2


def test_the_wandb_config_holds_every_setting_under_its_cli_flag(user_dir):
    wandb_logger = ("--trainer.logger", "configs/logger/wandb.yaml")
    cli = run(["fit", "--config", "configs/dcgan.yaml", *TINY, *wandb_logger, "--trainer.max_steps=1",
               "--model.lr_d=0.0003", "--data.batch_size=8"])  # fmt: skip
    config = dict(cli.trainer.logger.experiment.config)
    import wandb

    wandb.finish()
    assert config["model.lr_d"] == 0.0003 and config["data.batch_size"] == 8
    assert config["model.class_path"] == "lightning_gan.models.DCGAN"
    assert config["model.generator.init_args.base_channels"] == 64
    assert config["trainer.max_steps"] == 1 and config["trainer.precision"] is None
    assert config["seed_everything"] == 0 and config["checkpoint.every_n_train_steps"] == 500
    callbacks = {c["class_path"].rsplit(".", 1)[-1]: c["init_args"] for c in config["trainer.callbacks"]}
    assert callbacks["GANMetrics"]["every_n_steps"] == 500 and callbacks["SampleGrid"]["num_samples"] == 64
    assert "lr_d" not in config  # one key per setting: the flag's


def test_the_run_summary_of_a_metric_is_its_best_value(user_dir):
    (user_dir / "metrics.yaml").write_text(
        "trainer:\n  callbacks:\n    - class_path: lightning_gan.callbacks.GANMetrics\n"
        "      init_args: {every_n_steps: 1, num_samples: 40, kid_subset_size: 10, batch_size: 40}\n"
    )
    cli = run(["fit", "--config", "configs/dcgan.yaml", "--config", "metrics.yaml", *TINY,
               "--trainer.logger", "configs/logger/wandb.yaml", "--trainer.max_steps=4"])  # fmt: skip
    from lightning_gan.callbacks import GANMetrics

    (metrics,) = [c for c in cli.trainer.callbacks if isinstance(c, GANMetrics)]
    summary = cli.trainer.logger.experiment.summary
    fid = [row["fid"] for row in metrics.history]
    assert len(fid) == 4
    assert dict(summary["metrics/fid"]) == {"min": min(fid)}
    assert dict(summary["metrics/is"]) == {"max": max(row["is"] for row in metrics.history)}
    import wandb

    wandb.finish()


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


def sweep_trials(path: Path) -> list[dict[str, object]]:
    """The parameters of every trial W&B's sweep engine proposes for a grid (the first one for a search)."""
    import sweeps

    config = yaml.safe_load(path.read_text())
    assert sweeps.schema_violations_from_proposed_config(config) == []
    config = sweeps.config.fill_validate_schema(config)
    trials: list[sweeps.SweepRun] = []
    while (trial := sweeps.next_run(config, trials, validate=True)) is not None:
        trials.append(trial.copy(update={"state": sweeps.RunState.finished}))
        if config["method"] != "grid":
            break
    # the server hands the agent each trial as JSON (numpy numbers become plain ones)
    proposed = [{k: v["value"] for k, v in trial.config.items()} for trial in trials]
    return json.loads(json.dumps(proposed, default=float))


def agent_command(path: Path, params: dict[str, object], monkeypatch) -> tuple[list[str], dict[str, str]]:
    """The command line and environment W&B's agent starts a trial with (its own ``_command_run``, with a
    process that only records)."""
    from wandb import wandb_agent

    started = {}

    class Recorded:
        def __init__(self, command=None, env=None, **_):
            started.update(command=command, env=env)

    monkeypatch.setattr(wandb_agent, "AgentProcess", Recorded)
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep42")
    for name in ("WANDB_DIR", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"):  # the agent sets them in os.environ
        monkeypatch.delenv(name, raising=False)
    agent = wandb_agent.Agent(api=None, queue=None, sweep_id="sweep42")
    agent._sweep_command = yaml.safe_load(path.read_text())["command"]
    run_id = f"trial{len(params)}{abs(hash(str(params))) % 10**6}"
    agent._command_run({"type": "run", "run_id": run_id, "program": "lightning-gan",
                        "args": {k: {"value": v} for k, v in params.items()}})  # fmt: skip
    return started["command"], started["env"]


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_sweep_is_valid_for_w_and_b_s_engine_and_its_trials_run_as_the_agent_starts_them(
    path, user_dir, monkeypatch
):
    sweep = yaml.safe_load(path.read_text())
    assert sweep["project"] == yaml.safe_load(WANDB_CONFIG.read_text())["init_args"]["project"]
    assert sweep["metric"] == {"name": "metrics/fid", "goal": "minimize"}
    trials = sweep_trials(path)
    if sweep["method"] == "grid":
        sizes = [len(spec["values"]) for spec in sweep["parameters"].values()]
        assert len(trials) == math.prod(sizes) and len({str(t) for t in trials}) == len(trials)
    for params in trials:
        command, env = agent_command(path, params, monkeypatch)
        assert command[:2] == ["lightning-gan", "fit"]
        assert command[-len(params) :] == [f"--{k}={v}" for k, v in params.items()]
    # The first trial, run offline for two steps with the agent's environment: the swept values reach the
    # model and the W&B config, and the run is the agent's.
    command, env = agent_command(path, trials[0], monkeypatch)
    for name in ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_DIR", "WANDB_SWEEP_PARAM_PATH"):
        monkeypatch.setenv(name, env[name])
    import wandb

    wandb.teardown()  # a trial is a new process: nothing of an earlier run's W&B settings is left
    cli = run([*command[1:], "--trainer.max_steps=2", *TINY])
    config = dict(cli.trainer.logger.experiment.config)
    wandb.finish()
    for key, value in trials[0].items():
        assert cli.model.hparams[key.split(".", 1)[1]] == value and config[key] == value
    assert cli.trainer.logger.version == env["WANDB_RUN_ID"] and cli.trainer.global_step == 2
    preset = yaml.safe_load((REPO / command[3]).read_text())["model"]["class_path"].rsplit(".", 1)[-1]
    run_dir = user_dir / "runs" / preset.lower() / "wandb" / env["WANDB_RUN_ID"]
    assert Path(cli.trainer.log_dir).resolve() == run_dir


def test_a_requeued_sweep_trial_continues_its_wandb_run_and_checkpoint(user_dir, monkeypatch):
    """SLURM's time-limit signal stops a trial that W&B's agent started; the requeued job runs the same
    command with the same environment again, and it continues the same W&B run from its checkpoint."""
    path = REPO / "configs" / "sweeps" / "ttur_ncritic.yaml"
    command, env = agent_command(path, sweep_trials(path)[0], monkeypatch)
    budget = user_dir / "budget.yaml"
    budget.write_text("trainer:\n  max_steps: 100000\n")
    small = ["--model.generator.init_args.base_channels=4", "--model.discriminator.init_args.base_channels=4"]
    command = [*command, f"--config={budget}", "--checkpoint.every_n_train_steps=5", *small, *TINY]
    env = {**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}", "OMP_NUM_THREADS": "1"}
    env.pop("WANDB_SERVICE", None)  # this test process's W&B service, not one a trial would share
    record = user_dir / "job" / "interrupted-trial.sh"
    env["LIGHTNING_GAN_TRIAL_RECORD"] = str(record)
    run_dir = user_dir / "runs" / "wgangp" / "wandb" / env["WANDB_RUN_ID"]

    trial = subprocess.Popen(
        command, cwd=user_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while not list(run_dir.glob("**/checkpoints/step=000005.ckpt")):
        assert trial.poll() is None and time.monotonic() < deadline, trial.stderr.read().decode()[-3000:]
        time.sleep(0.05)
    trial.send_signal(signal.SIGUSR1)  # what SLURM sends before the time limit
    assert trial.wait(timeout=300) == 75, trial.stderr.read().decode()[-3000:]
    (last,) = run_dir.glob("**/checkpoints/last.ckpt")
    stopped_at = torch.load(last, map_location="cpu", weights_only=True)["global_step"]

    # the trial left a record of how it was started (configs/slurm/sweep.sh runs it in the requeued job, whose
    # environment has none of the agent's WANDB_* variables)
    assert record.is_file() and f"export WANDB_RUN_ID={env['WANDB_RUN_ID']}" in record.read_text()
    budget.write_text(f"trainer:\n  max_steps: {stopped_at + 3}\n")
    requeued_env = {k: v for k, v in env.items() if not k.startswith("WANDB_") or k == "WANDB_MODE"}
    again = subprocess.run(
        ["bash", str(record)], cwd=REPO, env=requeued_env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr[-6000:]
    assert f"W&B run {env['WANDB_RUN_ID']} has a checkpoint" in again.stderr
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == stopped_at + 3
    assert [p.name for p in (user_dir / "runs" / "wgangp" / "wandb").iterdir()] == [env["WANDB_RUN_ID"]]
    assert len(list(run_dir.glob("config_resume_*.yaml"))) == 1
    assert not record.exists()  # finished: nothing to run again
    offline_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2 and all(r.name.endswith(env["WANDB_RUN_ID"]) for r in offline_runs)
