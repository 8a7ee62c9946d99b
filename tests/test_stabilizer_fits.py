"""Every stabiliser, and all of them at once, trains the shipped image preset (configs/cdcgan.yaml) and signal
preset (configs/har_cgan.yaml) as a user runs them, with finite losses and its own term logged."""

from __future__ import annotations

import math

import pytest

from tests.conftest import REPO, fit_signal

#: switch: (its flags, the logged term that shows it acted, or None)
SWITCHES = {
    "feature_matching": (["--model.feature_matching=1", "--model.feature_layer=0"], "loss/fm"),
    "feature_matching_only": (
        ["--model.feature_matching=1", "--model.feature_matching_only=true"],
        "loss/fm",
    ),
    "hist_avg": (["--model.hist_avg_g=0.1", "--model.hist_avg_d=0.1"], "loss/hist_avg_g"),
    "one_sided_smoothing": (["--model.one_sided_smoothing=0.1"], None),
    "grad_clip": (["--model.grad_clip_g=1", "--model.grad_clip_d=1", "--model.grad_clip_d_from=1"], None),
    "g_first": (["--model.update_order=g_first", "--model.n_critic=2"], None),
    "mode_seeking": (["--model.mode_seeking=1"], "loss/ms"),
    "r1": (
        ["--model.r1_weight=1", "--model.r1_every=2", "--model.discriminator.init_args.norm=layer"],
        "loss/r1",
    ),
}
ALL = [flag for flags, _ in SWITCHES.values() for flag in flags if "feature_matching_only" not in flag]
CASES = {**SWITCHES, "all": (ALL, "loss/fm")}


def check(cli, term: str | None) -> None:
    logged = cli.trainer.logged_metrics
    assert cli.trainer.global_step == 3
    losses = {k: v.item() for k, v in logged.items() if k.startswith("loss/")}
    assert losses and all(math.isfinite(v) for v in losses.values()), losses
    if term is not None:
        assert term in losses, sorted(losses)


@pytest.mark.parametrize("case", list(CASES))
def test_each_switch_trains_the_image_preset(run_fit, tmp_path, case):
    flags, term = CASES[case]
    cli = run_fit(tmp_path, "--trainer.max_steps=3", *flags, config=str(REPO / "configs" / "cdcgan.yaml"))
    check(cli, term)


@pytest.mark.parametrize("case", list(CASES))
def test_each_switch_trains_the_signal_preset(tmp_path, case):
    flags, term = CASES[case]
    check(fit_signal(tmp_path, "--trainer.log_every_n_steps=1", "--trainer.max_steps=3", *flags), term)
