"""Speed switches on CPU: torch.compile (G only under a gradient penalty), mixed precision with manual
optimization, channels-last. On CPU they must run and train; their speed is measured where a GPU is lent."""

from __future__ import annotations

import math

import pytest
import torch


def generator_weights(cli) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in cli.model.generator.state_dict().items()}


def test_compiled_nets_train_like_eager_ones_and_keep_their_checkpoint_names(run_fit, tmp_path):
    eager = run_fit(tmp_path / "eager", "--trainer.max_steps=2")
    compiled = run_fit(tmp_path / "compiled", "--trainer.max_steps=2", "--model.compile=true")
    assert compiled.model.generator._compiled_call_impl is not None
    assert compiled.model.discriminator._compiled_call_impl is not None
    a, b = generator_weights(eager), generator_weights(compiled)
    assert a.keys() == b.keys()  # no _orig_mod. prefixes: checkpoints load into eager models
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a)


@pytest.mark.parametrize("key", ["gp_weight", "r1_weight"])
def test_compile_with_an_input_gradient_penalty_compiles_g_only_and_says_so(run_fit, tmp_path, key):
    with pytest.warns(UserWarning, match=rf"model\.{key}>0: D stays uncompiled, because an input-gradient"):
        cli = run_fit(
            tmp_path, "--trainer.max_steps=2", "--model.compile=true", f"--model.{key}=10",
            "--model.discriminator.init_args.norm=layer",
        )  # fmt: skip
    assert cli.model.generator._compiled_call_impl is not None
    assert cli.model.discriminator._compiled_call_impl is None
    term = {"gp_weight": "loss/gp", "r1_weight": "loss/r1"}[key]
    assert cli.trainer.global_step == 2 and math.isfinite(float(cli.trainer.logged_metrics[term]))


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_with_manual_optimization(run_fit, tmp_path, precision):
    cli = run_fit(tmp_path, "--trainer.max_steps=3", f"--trainer.precision={precision}", "--model.n_critic=2")
    assert cli.trainer.global_step == 3
    assert all(math.isfinite(float(cli.trainer.logged_metrics[k])) for k in ("loss/d", "loss/g"))
    assert all(p.dtype == torch.float32 for p in cli.model.parameters())  # master weights stay fp32


def test_channels_last_keeps_conv_weights_in_that_layout(run_fit, tmp_path):
    cli = run_fit(tmp_path, "--trainer.max_steps=2", "--model.channels_last=true")
    convs = [m for m in cli.model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert math.isfinite(float(cli.trainer.logged_metrics["loss/g"]))
