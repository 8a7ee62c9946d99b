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


def test_a_resumed_run_logs_each_step_once_though_it_was_killed_after_its_last_checkpoint(run_fit, tmp_path):
    import shutil

    run_fit(tmp_path, "--trainer.max_steps=6", "--checkpoint.every_n_train_steps=3")
    checkpoints = next(tmp_path.glob("lightning_logs/version_0/checkpoints"))
    # as if killed after step 5: metrics.csv has rows up to there, last.ckpt holds step 3
    shutil.copy(checkpoints / "step=000003.ckpt", checkpoints / "last.ckpt")
    metrics = checkpoints.parent / "metrics.csv"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(line for line in lines if not line.endswith(",6")) + "\n")
    run_fit(tmp_path, "--trainer.max_steps=6", "--checkpoint.every_n_train_steps=3", "--ckpt_path=last")
    steps = [int(line.rsplit(",", 1)[-1]) for line in metrics.read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4, 5, 6]  # steps 4 and 5 were trained twice but are logged once
