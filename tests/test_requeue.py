"""SlurmRequeue and configs/slurm/train.sh against a stand-in ``srun`` and ``scontrol``: fast checks of what
``test_slurm_cluster.py`` proves on a real SLURM cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from tests.conftest import REPO, TINY

TEMPLATE = REPO / "configs" / "slurm" / "1node.sbatch"


def slurm_env(tmp_path: Path, time_limit: str = "04:00:00", **extra: str) -> dict[str, str]:
    """A one-task SLURM job 4242: `srun` runs its command; `scontrol` logs its arguments and answers
    `show job` (the time limit) and `write batch_script` (the template) as SLURM 22.05 does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text('#!/bin/sh\nexec "$@"\n')
    (bin_dir / "scontrol").write_text(
        f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n'
        'case "$1 $2" in\n'
        f'  "show job") echo "   RunTime=00:00:01 TimeLimit={time_limit} TimeMin=N/A" ;;\n'
        f'  "write batch_script") cat {TEMPLATE} ;;\n'
        "esac\n"
    )
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    slurm = {
        "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "gan", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_JOB_NUM_NODES": "1", "SLURM_NNODES": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
    }  # fmt: skip
    return {
        **os.environ, **slurm, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1", "CONFIG": "configs/dcgan.yaml", "ROOT": str(tmp_path / "runs"), **extra,
    }  # fmt: skip


SLURM_ARGS = (
    "--data.batch_size=16", "--model.generator.init_args.base_channels=4",
    "--model.discriminator.init_args.base_channels=4", "--checkpoint.every_n_train_steps=5",
    "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1",
)  # fmt: skip


def test_the_template_stops_at_the_signal_then_requeues_and_the_requeued_job_resumes_its_own_run(tmp_path):
    process = subprocess.Popen(
        ["bash", str(TEMPLATE), "--trainer.max_steps=100000", *SLURM_ARGS], cwd=REPO, env=slurm_env(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run_dir = tmp_path / "runs" / "gan-4242"  # <ROOT>/<job name>-<job id>: the job's own folder
    deadline = time.monotonic() + 300
    while not list(run_dir.glob("**/checkpoints/step=000005.ckpt")):
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (trainer_pid,) = subprocess.run(
        ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
    ).stdout.split()  # srun exec'd the trainer: bash -> lightning-gan
    os.kill(int(trainer_pid), signal.SIGUSR1)  # what SLURM sends before the time limit
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    assert "requeueing job 4242" in out
    # train.sh read the time limit and the template, and requeued once, after every task had exited
    assert (tmp_path / "scontrol.log").read_text().splitlines() == [
        "write batch_script 4242 -",
        "show job 4242",
        "requeue 4242",
    ]
    (last,) = run_dir.glob("**/checkpoints/last.ckpt")
    stopped_at = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert f"SIGUSR1 at generator step {stopped_at}" in err
    assert not list(run_dir.glob("**/on_exception.ckpt")) and not list(tmp_path.glob("**/hpc_ckpt*"))

    # The requeued job: same script and job id, SLURM_RESTART_COUNT=1. A later run of another job of the same
    # name (its last.ckpt newer) is not resumed.
    other = tmp_path / "runs" / "gan-4243" / "lightning_logs" / "version_0" / "checkpoints"
    other.mkdir(parents=True)
    (other / "last.ckpt").write_bytes(b"another job's checkpoint")
    resumed = subprocess.run(
        ["bash", str(TEMPLATE), f"--trainer.max_steps={stopped_at + 3}", *SLURM_ARGS], cwd=REPO,
        env=slurm_env(tmp_path, SLURM_RESTART_COUNT="1"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == stopped_at + 3
    steps = [
        int(row.split(",")[-1]) for row in (last.parent.parent / "metrics.csv").read_text().splitlines()[1:]
    ]
    assert steps == list(range(1, stopped_at + 4))  # one run folder, one CSV, every step once


@pytest.mark.parametrize(
    ("time_limit", "extra_env", "args", "message"),
    [
        ("00:03:00", {}, (), "--time=00:03:00 is too short for --signal=SIGUSR1@120"),
        ("1-00:00:00", {"SBATCH_SIGNAL": "SIGUSR1@90000"}, (), "give --time of at least 1502 minutes"),
        ("04:00:00", {"SBATCH_SIGNAL": "B:USR1@120"}, (), "sends the signal to this batch script only"),
        ("04:00:00", {"SBATCH_SIGNAL": "USR2@120"}, (), "SlurmRequeue waits for SIGUSR1"),
        ("04:00:00", {}, ("--trainer.devices", "4"), "--trainer.devices=4 disagrees with the job's --ntasks"),
        ("04:00:00", {}, ("--trainer.num_nodes=2",), "--trainer.num_nodes=2 disagrees with the job's"),
        ("04:00:00", {"CONFIG": "configs/nope.yaml"}, (), "CONFIG=configs/nope.yaml is not a file"),
    ],
)  # fmt: skip
def test_train_sh_refuses_settings_that_cannot_work_before_starting_a_task(
    tmp_path, time_limit, extra_env, args, message
):
    env = slurm_env(tmp_path, time_limit, **extra_env)
    result = subprocess.run(
        ["bash", str(TEMPLATE), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()  # no task started


class SignalAtStep(Callback):
    """Sends this process SLURM's time-limit signal after generator step ``step``; counts validations."""

    def __init__(self, step: int = 3) -> None:
        self.step, self.validations = step, 0

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)

    def on_validation_start(self, trainer, pl_module) -> None:
        self.validations += not trainer.sanity_checking


def test_the_signal_saves_the_run_s_own_last_ckpt_and_exits_75_without_validating(tmp_path, monkeypatch):
    from lightning_gan.callbacks import GANCheckpoint, SlurmRequeue
    from lightning_gan.cli import main

    monkeypatch.setattr(sys, "argv", [
        "lightning-gan", "fit", "--config", str(REPO / "configs" / "dcgan.yaml"), *TINY,
        f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=50",
        "--trainer.callbacks+=tests.test_requeue.SignalAtStep",
        "--trainer.callbacks+=lightning_gan.callbacks.SlurmRequeue",
    ])  # fmt: skip
    captured = {}
    keep_trainer = lambda self, trainer, *a, **k: captured.update(trainer=trainer)  # noqa: E731
    monkeypatch.setattr(SlurmRequeue, "teardown", keep_trainer)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == SlurmRequeue.EXIT_STATUS == 75
    trainer = captured["trainer"]
    assert trainer.global_step == 3
    # The preset's first GANCheckpoint keeps the best by FID without a last.ckpt: the right one was used.
    best = next(c for c in trainer.callbacks if isinstance(c, GANCheckpoint))
    assert not best.save_last
    (last,) = tmp_path.glob("**/checkpoints/last.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 3
    assert not list(tmp_path.glob("**/on_exception.ckpt"))
    assert next(c for c in trainer.callbacks if type(c).__name__ == "SignalAtStep").validations == 0


def test_slurm_requeue_refuses_a_run_that_keeps_no_last_ckpt(run_fit, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_fit(tmp_path, "--trainer.max_steps=1", "--checkpoint.save_last=false",
                "--trainer.callbacks+=lightning_gan.callbacks.SlurmRequeue")  # fmt: skip
    assert exit_info.value.code == 2
    assert "no GANCheckpoint saves last.ckpt" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "extra_env", "message"),
    [
        ((), {}, "no sweep: sbatch configs/slurm/sweep.sbatch <entity>/<project>/<sweep id>"),
        (("me/proj/abc", "x"), {}, "trials=x is not allowed"),
        (("me/proj/abc",), {"SLURM_NTASKS": "2"}, "--ntasks=2 is not allowed: one agent per job"),
        (("me/proj/abc",), {"SBATCH_SIGNAL": "B:USR1@120"}, "sends the signal to this batch script only"),
    ],
)
def test_sweep_sh_refuses_settings_that_cannot_work_before_any_agent(tmp_path, args, extra_env, message):
    env = slurm_env(tmp_path, **extra_env)
    result = subprocess.run(
        ["bash", str(REPO / "configs" / "slurm" / "sweep.sbatch"), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_main_leaves_no_process_group_behind_after_a_ddp_run(tmp_path, monkeypatch):
    # Lightning destroys only NCCL groups; a gloo group left to the interpreter's teardown now and then
    # aborted a finished rank (status 134), failing a SLURM requeue that needs status 75 from every task.
    from lightning_gan.cli import main

    monkeypatch.setattr(sys, "argv", [
        "lightning-gan", "fit", "--config", str(REPO / "configs" / "dcgan.yaml"), *TINY,
        f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=1",
        "--trainer.strategy=ddp", "--trainer.devices=1",
    ])  # fmt: skip
    try:
        main()
        assert not torch.distributed.is_initialized()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
