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


def g_weights(root: Path, steps: int) -> dict[str, torch.Tensor]:
    (last,) = root.glob("**/checkpoints/last.ckpt")
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["global_step"] == steps
    return {k: v for k, v in state["state_dict"].items() if k.startswith("generator.")}


def assert_same_generator(whole: dict[str, torch.Tensor], resumed: dict[str, torch.Tensor]) -> None:
    differ = [k for k in whole if not torch.equal(whole[k], resumed[k])]
    assert whole.keys() == resumed.keys() and not differ, f"{len(differ)} of {len(whole)} tensors differ"


def test_training_longer_from_a_finished_run_ends_with_the_uninterrupted_generator(run_fit, tmp_path):
    """20 generator steps, then `--ckpt_path last` with max_steps 40: the G of an uninterrupted 40-step run,
    bit for bit (the data order continues the epoch; nothing outside the step moved its random stream)."""
    settings = ("--data.batch_size=32", "--model.n_critic=2", "--checkpoint.every_n_train_steps=500")
    run_fit(tmp_path / "whole", "--trainer.max_steps=40", *settings)
    run_fit(tmp_path / "longer", "--trainer.max_steps=20", *settings)
    run_fit(tmp_path / "longer", "--trainer.max_steps=40", *settings, "--ckpt_path=last")
    assert_same_generator(g_weights(tmp_path / "whole", 40), g_weights(tmp_path / "longer", 40))


def test_a_resume_from_an_epoch_s_last_step_with_dropout_in_d_is_exact(tmp_path):
    """The cgan preset (dropout in D) on 100 digits in batches of 16 with n_critic 2: 3 generator steps per
    epoch, so the checkpoint at step 6 falls on an epoch's last step, where validation and the next epoch's
    DataLoader draw from the global RNG before the next step."""
    settings = (
        "--data.train_per_class=10", "--data.batch_size=16", "--model.n_critic=2", "--model.latent_dim=8",
        "--model.generator.init_args.hidden=[32,32]", "--model.discriminator.init_args.hidden=[32,32]",
        "--checkpoint.every_n_train_steps=3",
    )  # fmt: skip
    from lightning_gan.cli import run

    def fit(root: Path, *args: str) -> None:
        quiet = ("--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false")
        cgan = str(REPO / "configs" / "cgan.yaml")
        run(["fit", "--config", cgan, f"--trainer.default_root_dir={root}", *quiet, *settings, *args])

    fit(tmp_path / "whole", "--trainer.max_steps=12")
    fit(tmp_path / "resumed", "--trainer.max_steps=6")
    fit(tmp_path / "resumed", "--trainer.max_steps=12", "--ckpt_path=last")
    assert_same_generator(g_weights(tmp_path / "whole", 12), g_weights(tmp_path / "resumed", 12))


def test_each_rank_restores_the_saved_cuda_stream_into_its_own_device(monkeypatch):
    """Rank 0 saves the state of its own device; rank 1 restores it into cuda:1 (the ranks' streams are
    identical by design), not the state cuda:1 had when rank 0 looked at it (stand-in CUDA calls: no GPU)."""
    from lightning_gan import rng

    streams = {0: torch.tensor([10], dtype=torch.uint8), 1: torch.tensor([11], dtype=torch.uint8)}
    current, restored = [0], []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": streams[current[0]])
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(streams.values()))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append(
        (int(state[0]), current[0])))  # fmt: skip
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append(("all", states)))
    saved = rng.rng_states()  # on rank 0
    current[0] = 1  # rank 1 loads the same checkpoint
    rng.set_rng_states(saved)
    assert restored == [(10, 1)]
