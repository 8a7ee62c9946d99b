"""A run killed with SIGKILL and resumed with ``--ckpt_path last`` ends with the same generator, bit for bit,
as an uninterrupted run of the same length (RNG states, data order and the generator-step count restored)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

STEPS, EVERY = 60, 4


def command(root: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "lightning_gan", "fit", "--config", str(REPO / "configs" / "dcgan.yaml"),
        f"--trainer.default_root_dir={root}", f"--trainer.max_steps={STEPS}",
        f"--checkpoint.every_n_train_steps={EVERY}", "--model.n_critic=2",
        # 100 training digits in batches of 16: 3 generator steps per epoch, so the run crosses many epochs
        "--data.train_per_class=10", "--data.batch_size=16",
        "--model.generator.init_args.base_channels=4", "--model.discriminator.init_args.base_channels=4",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", *extra,
    ]  # fmt: skip


def generator_weights(root: Path) -> dict[str, torch.Tensor]:
    (last,) = root.glob("**/checkpoints/last.ckpt")
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["global_step"] == STEPS
    return {k: v for k, v in state["state_dict"].items() if k.startswith("generator.")}


def test_sigkill_then_resume_ends_with_the_uninterrupted_generator_bit_for_bit(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command(tmp_path / "whole"), env=env, check=True, capture_output=True, timeout=600)

    killed_root = tmp_path / "killed"
    process = subprocess.Popen(
        command(killed_root), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while not list(killed_root.glob(f"**/checkpoints/step={2 * EVERY:06d}.ckpt")):
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    (last,) = killed_root.glob("**/checkpoints/last.ckpt")
    killed_at = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert EVERY <= killed_at < STEPS and killed_at % EVERY == 0

    subprocess.run(
        command(killed_root, "--ckpt_path=last"), env=env, check=True, capture_output=True, timeout=600
    )
    whole, resumed = generator_weights(tmp_path / "whole"), generator_weights(killed_root)
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole), f"killed at step {killed_at}"


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    from lightning_gan.callbacks import checkpoint as module

    io, path = module.AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "weights": torch.ones(1000)}, path)

    def killed_midway(obj, file):  # writes part of the new file, then the process "dies"
        file.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(module.torch, "save", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "weights": torch.zeros(1000)}, path)
    monkeypatch.undo()
    previous = torch.load(path, weights_only=True)
    assert previous["step"] == 1 and torch.equal(previous["weights"], torch.ones(1000))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no partial file left behind
    io.save_checkpoint({"step": 3}, path)
    assert torch.load(path, weights_only=True) == {"step": 3}


def test_runs_write_their_checkpoints_atomically(run_fit, tmp_path):
    from lightning_gan.callbacks.checkpoint import AtomicCheckpointIO

    cli = run_fit(tmp_path, "--trainer.max_steps=1")
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


# --------------------------------------------------------------------------------------------------- SLURM
def slurm_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A fake one-task SLURM job: `srun` runs its command, `scontrol` writes its arguments to a file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text('#!/bin/sh\nexec "$@"\n')
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    venv_bin = str(Path(sys.executable).parent)
    slurm = {
        "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "gan", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_JOB_NUM_NODES": "1", "SLURM_NNODES": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
    }  # fmt: skip
    return {
        **os.environ, **slurm, "PATH": f"{bin_dir}:{venv_bin}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
        "CONFIG": "configs/dcgan.yaml", "ROOT": str(tmp_path / "run"), **extra,
    }  # fmt: skip


SLURM_ARGS = (
    "--data.batch_size=16", "--model.generator.init_args.base_channels=4",
    "--model.discriminator.init_args.base_channels=4", "--checkpoint.every_n_train_steps=5",
    "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1",
)  # fmt: skip


@pytest.mark.parametrize("template", ["1node.sbatch", "2nodes.sbatch"])
def test_the_sbatch_templates_checkpoint_and_requeue_on_the_time_limit_signal_then_resume(tmp_path, template):
    template = str(REPO / "configs" / "slurm" / template)  # run as one task: the #SBATCH lines are comments
    process = subprocess.Popen(
        ["bash", template, "--trainer.max_steps=100000", *SLURM_ARGS], cwd=REPO, env=slurm_env(tmp_path),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not list((tmp_path / "run").glob("**/checkpoints/step=000005.ckpt")):
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    children = subprocess.run(
        ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
    ).stdout.split()
    (trainer_pid,) = children  # srun exec'd the trainer: bash -> lightning-gan
    os.kill(int(trainer_pid), signal.SIGUSR1)  # what SLURM sends two minutes before the time limit
    assert process.wait(timeout=300) == 0, process.stderr.read().decode()[-3000:]
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    (last,) = (tmp_path / "run").glob("**/checkpoints/last.ckpt")
    stopped_at = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 5 <= stopped_at < 100000

    # the requeued job: same script, SLURM_RESTART_COUNT=1
    env = slurm_env(tmp_path, SLURM_RESTART_COUNT="1")
    resumed = subprocess.run(
        ["bash", template, f"--trainer.max_steps={stopped_at + 3}", *SLURM_ARGS], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == stopped_at + 3
    steps = [
        int(row.split(",")[-1]) for row in (last.parent.parent / "metrics.csv").read_text().splitlines()[1:]
    ]
    assert steps == list(range(1, stopped_at + 4))  # one run folder, one CSV, every step once
