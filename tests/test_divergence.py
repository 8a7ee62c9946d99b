"""DivergenceWatch: the D-wins/G-loses trend, NaN, gradient norms, coverage, warn/stop/rollback, resume."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_gan.callbacks import DivergenceWatch, GANCheckpoint
from lightning_gan.data import DigitsDataModule
from tests.test_training_step import tiny_gan, tiny_trainer


class ScriptedLosses(LightningModule):
    """Logs ``loss/d`` = d[k-1] and ``loss/g`` = g[k-1] at generator step k: the rule, without a GAN."""

    def __init__(self, d: Sequence[float], g: Sequence[float], loss: str = "bce"):
        super().__init__()
        self.save_hyperparameters("loss")
        self.d, self.g = list(d), list(g)
        self.w = nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        step = self.global_step
        self.log_dict({"loss/d": self.d[step], "loss/g": self.g[step]}, batch_size=1)
        return self.w.square().sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(1000, 1)), batch_size=1)


def scripted_fit(tmp_path, watch: DivergenceWatch, d, g, loss: str = "bce", callbacks=()) -> Trainer:
    trainer = tiny_trainer(tmp_path, max_steps=len(d), callbacks=[*callbacks, watch])
    trainer.fit(ScriptedLosses(d, g, loss))
    return trainer


# D fair for 10 steps, then beaten; G's loss 1.0 while D is fair.
FAIR, BEATEN = [1.0] * 10, [0.01] * 30


@pytest.mark.parametrize(
    ("case", "d", "g", "min_steps", "loss", "stop_step"),
    [
        # The window (10) holds only beaten-D steps from step 20 on; G's median is then 3x its fair level.
        ("fires", FAIR + BEATEN, FAIR + [3.0] * 30, 0, "bce", 20),
        ("waits for min_steps", FAIR + BEATEN, FAIR + [3.0] * 30, 30, "bce", 30),
        ("G keeps its level", FAIR + BEATEN, FAIR + [1.5] * 30, 0, "bce", None),
        ("D above the floor", FAIR + [0.2] * 30, FAIR + [3.0] * 30, 0, "bce", None),
        ("critic loss has no floor", FAIR + [-5.0] * 30, FAIR + [3.0] * 30, 0, "wasserstein", None),
    ],
)
def test_loss_trend_rule(tmp_path, case, d, g, min_steps, loss, stop_step):
    watch = DivergenceWatch(window=10, min_steps=min_steps, d_loss_floor=0.05, g_loss_growth=2.0)
    trainer = scripted_fit(tmp_path, watch, d, g, loss)
    if stop_step is None:
        assert trainer.global_step == len(d) and watch.reason is None and watch.events == []
    else:
        assert trainer.global_step == stop_step
        assert [(e["step"], e["signal"], e["action"]) for e in watch.events] == [
            (stop_step, "loss_trend", "stop")
        ]
        assert f"Training diverged at generator step {stop_step}: D loss fell to 0.01" in watch.reason
        assert "G loss grew 3.0x" in watch.reason


@pytest.mark.parametrize(("loss", "off"), [("minimax", True), ("wasserstein", True), ("bce", False)])
def test_a_run_is_warned_at_its_start_when_its_loss_turns_the_loss_trend_signal_off(tmp_path, loss, off):
    watch = DivergenceWatch(window=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scripted_fit(tmp_path, watch, [1.0] * 3, [1.0] * 3, loss)
    said = [str(w.message) for w in caught if "loss_trend signal is off" in str(w.message)]
    assert len(said) == (1 if off else 0)
    start = f"DivergenceWatch: the loss_trend signal is off for loss={loss!r} ("
    assert all(message.startswith(start) for message in said)


def test_warn_fires_once_per_episode_and_training_goes_on(tmp_path):
    # Beaten D from step 11 to 25 (fires at 20), fair again from 26 to 40, beaten again from 41 (fires at 50).
    d = FAIR + [0.01] * 15 + [1.0] * 15 + [0.01] * 20
    g = FAIR + [3.0] * 15 + [1.0] * 15 + [3.0] * 20
    watch = DivergenceWatch(action="warn", window=10, min_steps=0)
    with pytest.warns(UserWarning, match="Training diverged") as record:
        trainer = scripted_fit(tmp_path, watch, d, g)
    assert trainer.global_step == len(d) == 60 and watch.reason is None
    assert len([w for w in record if "Training diverged" in str(w.message)]) == 2
    assert [(e["step"], e["action"]) for e in watch.events] == [(20, "warn"), (50, "warn")]


def test_a_run_where_d_wins_is_stopped_within_its_window(tmp_path):
    # G frozen, D 25x faster: D's loss falls from 1.35 to 0.05 within 6 steps and under 0.002 by step 20,
    # while G's goes from 0.7 to above 7.
    seed_everything(0)
    watch = DivergenceWatch(window=20, min_steps=20)
    trainer = tiny_trainer(tmp_path, max_steps=100, callbacks=[watch])
    trainer.fit(tiny_gan(lr_g=0.0, lr_d=5e-3), DigitsDataModule(batch_size=16, seed=0))
    step = trainer.global_step
    assert 20 <= step <= 40  # the first full window is at step 20; D's early fair steps leave it by step 26
    assert [(e["step"], e["signal"]) for e in watch.events] == [(step, "loss_trend")]
    assert f"Training diverged at generator step {step}: D loss fell to" in watch.reason
    assert "while G loss grew" in watch.reason


def test_a_loss_trend_stop_does_not_write_the_collapsed_weights_to_last_ckpt(tmp_path):
    seed_everything(0)
    checkpoint = GANCheckpoint(dirpath=tmp_path, every_n_train_steps=10, save_top_k=0, save_last=True)
    watch = DivergenceWatch(window=20, min_steps=20)
    trainer = tiny_trainer(tmp_path, max_steps=100, callbacks=[watch, checkpoint], enable_checkpointing=True)
    trainer.fit(tiny_gan(lr_g=0.0, lr_d=5e-3), DigitsDataModule(batch_size=16, seed=0))
    stopped = trainer.global_step
    assert watch.reason and stopped % 10 != 0
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] == stopped // 10 * 10


def test_a_stop_on_a_checkpoint_step_leaves_last_ckpt_at_the_previous_good_step(tmp_path):
    # The loss-trend rule fires at step 20, a checkpoint step: neither step 20's periodic save nor last.ckpt
    # may hold the diverged state (checkpoint callbacks run after the watch within a step).
    checkpoint = GANCheckpoint(
        dirpath=tmp_path, filename="{step}", every_n_train_steps=10, save_top_k=-1, save_last=True
    )
    watch = DivergenceWatch(window=10, min_steps=0, d_loss_floor=0.05, g_loss_growth=2.0)
    d, g = FAIR + BEATEN, FAIR + [3.0] * 30
    trainer = tiny_trainer(
        tmp_path, max_steps=len(d), callbacks=[watch, checkpoint], enable_checkpointing=True
    )
    trainer.fit(ScriptedLosses(d, g))
    assert trainer.global_step == 20 and watch.reason
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["last.ckpt", "step=10.ckpt"]
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] == 10


def test_a_healthy_run_of_the_same_length_does_not_fire(tmp_path):
    seed_everything(0)
    # No metrics/coverage is logged in this run: an absent reading must be ignored, not read as 0.
    watch = DivergenceWatch(window=20, min_steps=20, min_coverage=0.5)
    trainer = tiny_trainer(tmp_path, max_steps=100, callbacks=[watch])
    trainer.fit(tiny_gan(), DigitsDataModule(batch_size=16, seed=0))
    assert trainer.global_step == 100 and watch.reason is None and watch.events == []
    assert len(watch.d_losses) == 20 and min(watch.d_losses) > 0.1  # it did watch, and D stayed fair


class PoisonAt(Callback):
    """Makes generator step ``step`` produce NaN: in D's weights (so every loss) or in G's gradient only."""

    def __init__(self, steps: Sequence[int], where: str = "d_weight"):
        self.steps, self.where = set(steps), where

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step + 1 not in self.steps:
            return
        if self.where == "d_weight":
            with torch.no_grad():
                next(pl_module.discriminator.parameters()).fill_(float("nan"))
        else:  # only G's update sees it: this step's logged losses stay finite
            param = next(pl_module.generator.parameters())
            handle = param.register_hook(lambda grad: (handle.remove(), grad * float("nan"))[1])


@pytest.mark.parametrize(("where", "named"), [("d_weight", "loss/d=nan"), ("g_grad", "G gradient norm=nan")])
def test_nan_fires_at_its_step_even_before_min_steps(tmp_path, where, named):
    watch = DivergenceWatch(min_steps=500)
    trainer = tiny_trainer(tmp_path, max_steps=20, callbacks=[PoisonAt([7], where), watch])
    trainer.fit(tiny_gan(), DigitsDataModule(batch_size=16))
    assert trainer.global_step == 7
    assert [(e["step"], e["signal"]) for e in watch.events] == [(7, "nan")]
    assert (
        "Training diverged at generator step 7: non-finite (NaN/Inf)" in watch.reason
        and named in watch.reason
    )


def test_a_nan_stop_leaves_last_ckpt_at_the_last_good_step(tmp_path):
    # The watch stops at step 10 before GANCheckpoint's hooks run; GANCheckpoint then refuses NaN weights both
    # for step 10's periodic save and for last.ckpt at the end of training.
    checkpoint = GANCheckpoint(
        dirpath=tmp_path, filename="{step}", every_n_train_steps=5, save_top_k=-1, save_last=True
    )
    watch = DivergenceWatch()
    callbacks = [PoisonAt([10]), watch, checkpoint]
    trainer = tiny_trainer(tmp_path, max_steps=30, callbacks=callbacks, enable_checkpointing=True)
    trainer.fit(tiny_gan(), DigitsDataModule(batch_size=16))
    assert trainer.global_step == 10 and watch.events[0]["signal"] == "nan"
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["last.ckpt", "step=5.ckpt"]
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] == 5


def test_an_exploding_gradient_norm_fires(tmp_path):
    watch = DivergenceWatch(grad_norm_max=1e-3)
    trainer = tiny_trainer(tmp_path, max_steps=20, callbacks=[watch])
    trainer.fit(tiny_gan(), DigitsDataModule(batch_size=16))
    assert trainer.global_step == 1 and [e["signal"] for e in watch.events] == ["grad_norm"]
    assert "G gradient norm reached" in watch.reason and "D gradient norm reached" in watch.reason
    assert "(> grad_norm_max=0.001)" in watch.reason


class LogCoverage(Callback):
    def __init__(self, readings: dict[int, float]):
        self.readings = readings

    def on_train_batch_end(self, trainer, pl_module, *args):
        if trainer.global_step in self.readings:
            pl_module.log("metrics/coverage", self.readings[trainer.global_step])


def test_a_collapsing_class_coverage_fires(tmp_path):
    watch = DivergenceWatch(min_steps=0, min_coverage=0.5)
    trainer = scripted_fit(
        tmp_path, watch, [1.0] * 20, [1.0] * 20, callbacks=[LogCoverage({5: 0.9, 10: 0.3})]
    )
    assert trainer.global_step == 10 and [e["signal"] for e in watch.events] == ["coverage"]
    assert "class coverage fell to 0.3 (< min_coverage=0.5)" in watch.reason


def test_after_a_rollback_the_stale_coverage_reading_is_ignored_until_a_new_one(tmp_path):
    # Coverage is logged every K steps: the low reading that caused the rollback stays in callback_metrics
    # until the next evaluation and must not trigger a rollback at every step in between.
    checkpoint = GANCheckpoint(dirpath=tmp_path, every_n_train_steps=5, save_last=True)
    watch = DivergenceWatch(action="rollback", min_steps=0, min_coverage=0.5)
    coverage = LogCoverage({10: 0.3, 20: 0.9})
    trainer = tiny_trainer(
        tmp_path, max_steps=25, callbacks=[coverage, watch, checkpoint], enable_checkpointing=True
    )
    trainer.fit(ScriptedLosses([1.0] * 25, [1.0] * 25))
    assert trainer.global_step == 25 and watch.reason is None
    assert [(e["step"], e["signal"], e["action"]) for e in watch.events] == [(10, "coverage", "rollback")]


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=False)["state_dict"]


def test_rollback_restores_the_last_checkpoint_cuts_lrs_and_is_bounded(tmp_path):
    seed_everything(0)
    model = tiny_gan(scheduler_g=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0))
    checkpoint = GANCheckpoint(
        dirpath=tmp_path, filename="{step}", every_n_train_steps=5, save_top_k=-1, save_last=True
    )
    watch = DivergenceWatch(action="rollback", max_rollbacks=2, lr_factor=0.5)
    callbacks = [PoisonAt([10, 13, 16]), watch, checkpoint]
    trainer = tiny_trainer(tmp_path, max_steps=30, callbacks=callbacks, enable_checkpointing=True)
    trainer.fit(model, DigitsDataModule(batch_size=16))

    assert [(e["step"], e["action"]) for e in watch.events] == [
        (10, "rollback"),
        (13, "rollback"),
        (16, "stop"),
    ]
    assert watch.rollbacks == 2 and trainer.global_step == 16
    assert (
        "cannot roll back, its budget of DivergenceWatch.max_rollbacks=2 rollbacks is used up" in watch.reason
    )
    # The rollback at step 10 runs before GANCheckpoint's save of that step (Lightning calls checkpoint
    # callbacks last), so step 10's file holds the restored weights of step 5, not NaN.
    at_5, at_10 = _weights(tmp_path / "step=5.ckpt"), _weights(tmp_path / "step=10.ckpt")
    assert at_5.keys() == at_10.keys() and all(torch.equal(at_5[k], at_10[k]) for k in at_5)
    states_5 = torch.load(tmp_path / "step=5.ckpt", weights_only=False)["optimizer_states"]
    states_10 = torch.load(tmp_path / "step=10.ckpt", weights_only=False)["optimizer_states"]
    for before, after in zip(states_5, states_10, strict=True):
        assert after["param_groups"][0]["lr"] == pytest.approx(before["param_groups"][0]["lr"] * 0.5)
        assert all(
            torch.equal(before["state"][0][k], after["state"][0][k]) for k in ("exp_avg", "exp_avg_sq")
        )
    # Two rollbacks: every LR is a quarter, G's too although its LambdaLR re-sets lr = base_lr * 1 each step.
    assert [opt.param_groups[0]["lr"] for opt in trainer.optimizers] == pytest.approx([5e-5, 5e-5])


def test_rollback_without_a_checkpoint_stops_and_says_why(tmp_path):
    watch = DivergenceWatch(action="rollback")
    trainer = tiny_trainer(tmp_path, max_steps=20, callbacks=[PoisonAt([3]), watch])
    trainer.fit(tiny_gan(), DigitsDataModule(batch_size=16))
    assert trainer.global_step == 3 and watch.rollbacks == 0
    assert "cannot roll back, there is no last checkpoint yet" in watch.reason


def test_state_survives_a_checkpoint_and_resume(tmp_path):
    d, g = FAIR + [0.01] * 15, FAIR + [3.0] * 15
    watch = DivergenceWatch(action="warn", window=10, min_steps=0)
    with pytest.warns(UserWarning, match="Training diverged"):
        trainer = scripted_fit(tmp_path, watch, d, g)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    state = watch.state_dict()
    assert len(state["d_losses"]) == 10 and state["g_fair"] == [1.0] * 10 and len(state["events"]) == 1

    resumed = DivergenceWatch(action="warn", window=10, min_steps=0)
    resumed_trainer = tiny_trainer(tmp_path, max_steps=len(d), callbacks=[resumed])
    resumed_trainer.fit(ScriptedLosses(d, g), ckpt_path=tmp_path / "run.ckpt")
    assert resumed.state_dict() == state


@pytest.mark.parametrize(
    ("key", "value"),
    [("action", "restart"), ("window", 1), ("g_loss_growth", 0.5), ("min_coverage", 1.5), ("lr_factor", 0.0)],
)
def test_bad_settings_name_the_key_and_value(key, value):
    with pytest.raises(ValueError, match=rf"DivergenceWatch\.{key}={value!r} is not allowed"):
        DivergenceWatch(**{key: value})
