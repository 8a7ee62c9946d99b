"""D layers that see the rest of the batch (issue 16, item 3): minibatch discrimination and the minibatch
standard deviation, on the DCGAN, signal and MLP discriminators."""

from __future__ import annotations

import pytest
import torch

from lightning_gan.nets import DCGANDiscriminator, MLPDiscriminator, SignalDiscriminator
from lightning_gan.nets.minibatch import MinibatchDiscrimination, MinibatchStdDev
from tests.conftest import REPO, fit_signal, generator_state, whole_and_resumed

NETS = {
    # norm "none" and no dropout: without the layer, nothing else couples the samples of a batch
    "dcgan": (lambda **k: DCGANDiscriminator((1, 28, 28), base_channels=4, norm="none", **k), (1, 28, 28)),
    "signal": (lambda **k: SignalDiscriminator((1, 6, 32), base_channels=4, norm="none", **k), (1, 6, 32)),
    "mlp": (lambda **k: MLPDiscriminator((1, 28, 28), hidden=(16, 8), dropout=0.0, **k), (1, 28, 28)),
}


@pytest.mark.parametrize("kind", ["none", "stddev", "discrimination"])
@pytest.mark.parametrize("net", list(NETS))
def test_a_sample_s_score_depends_on_the_rest_of_its_batch_only_with_a_minibatch_layer(net, kind):
    factory, shape = NETS[net]
    torch.manual_seed(0)
    d = factory(minibatch=kind, minibatch_kernels=4, minibatch_kernel_dim=3)
    sample, others_a, others_b = torch.randn(1, *shape), torch.randn(5, *shape), 3 * torch.randn(5, *shape)
    a = d(torch.cat([sample, others_a])).logits[0]
    b = d(torch.cat([sample, others_b])).logits[0]
    extra = {"none": 0, "stddev": 1, "discrimination": 4}[kind]
    plain = factory()
    assert d.head.in_features == plain.head.in_features + extra
    if kind == "none":
        torch.testing.assert_close(a, b)
    else:
        assert not torch.allclose(a, b)


def test_minibatch_discrimination_and_stddev_equal_their_formulas():
    torch.manual_seed(0)
    f = torch.randn(4, 6)
    layer = MinibatchDiscrimination(6, kernels=3, kernel_dim=2)
    m = (f @ layer.T).view(4, 3, 2)
    expected = torch.stack(
        [
            torch.stack(
                [
                    sum(torch.exp(-(m[i, b] - m[j, b]).abs().sum()) for j in range(4) if j != i)
                    for b in range(3)
                ]
            )
            for i in range(4)
        ]
    )
    out = layer(f)
    torch.testing.assert_close(out[:, :6], f)
    torch.testing.assert_close(out[:, 6:], expected)
    std = MinibatchStdDev()(f)
    torch.testing.assert_close(std[:, 6], f.std(0, unbiased=False).mean().expand(4), atol=1e-6, rtol=1e-5)


def test_bad_minibatch_settings_name_the_key():
    with pytest.raises(ValueError, match=r"minibatch='batchnorm' .*none, stddev, discrimination"):
        DCGANDiscriminator((1, 28, 28), minibatch="batchnorm")
    with pytest.raises(ValueError, match=r"minibatch_kernels=0 .*>= 1"):
        MLPDiscriminator((1, 28, 28), minibatch="discrimination", minibatch_kernels=0)


@pytest.mark.parametrize("kind", ["stddev", "discrimination"])
def test_minibatch_layers_train_the_image_preset_and_resume_bit_exact(run_fit, tmp_path, kind):
    config = str(REPO / "configs" / "cdcgan.yaml")
    flags = [
        f"--model.discriminator.init_args.minibatch={kind}",
        "--model.discriminator.init_args.minibatch_kernels=8",
    ]
    whole, resumed = whole_and_resumed(lambda root, *a: run_fit(root, *a, config=config), tmp_path, *flags)
    a, b = generator_state(whole), generator_state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.isfinite(v) for k, v in whole.trainer.logged_metrics.items() if k.startswith("loss/"))


def test_minibatch_discrimination_trains_the_signal_preset_and_resumes_bit_exact(tmp_path):
    flags = ["--model.discriminator.init_args.minibatch=discrimination"]
    whole, resumed = whole_and_resumed(fit_signal, tmp_path, *flags)
    a, b = generator_state(whole), generator_state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a) and resumed.trainer.global_step == 4
