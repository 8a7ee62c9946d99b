"""The offline FID InceptionV3: its shapes, loading a local state_dict, errors, and use in torchmetrics."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from lightning_gan.metrics import FIDInceptionV3, load_fid_inception


@pytest.fixture(scope="module")
def net() -> FIDInceptionV3:
    """A randomly initialised network whose activations neither vanish nor explode through its 48 layers, so
    that the comparisons below compare real numbers (PyTorch's default init shrinks them to ~1e-8)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = FIDInceptionV3()
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return model


@pytest.fixture(scope="module")
def weights(net, tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "fid_inception.pth"
    torch.save(net.state_dict(), path)
    return path


def images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_names_match_torchvision_inception3_so_pytorch_fid_weights_load(net):
    keys = net.state_dict()
    assert keys["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert keys["Mixed_5b.branch_pool.conv.weight"].shape == (32, 192, 1, 1)
    assert keys["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert keys["Mixed_7c.branch3x3dbl_3b.bn.running_var"].shape == (384,)
    assert keys["fc.weight"].shape == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in keys)
    assert net.Mixed_7b.pool == "avg" and net.Mixed_7c.pool == "max"  # the TF graph's last block max-pools


def test_loaded_network_gives_2048_features_like_the_original(net, weights):
    loaded = load_fid_inception(weights)
    assert loaded.num_features == 2048 and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    rgb, grey = images(2, 3, 64, 64), images(2, 1, 28, 28, seed=1)
    out_rgb, out_grey = loaded(rgb), loaded(grey)
    assert out_rgb.shape == out_grey.shape == (2, 2048) and out_rgb.dtype == torch.float32
    assert out_rgb.std() > 1e-3  # not a degenerate constant
    torch.testing.assert_close(out_rgb, net(rgb))
    # the same weights, and a grey image is the same grey in all three channels
    torch.testing.assert_close(out_grey, net(grey.expand(-1, 3, -1, -1)))


def test_uint8_input_is_scaled_to_minus_one_one(net):
    pixels = torch.randint(
        0, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)
    )
    torch.testing.assert_close(net(pixels), net(pixels.float() / 127.5 - 1))


def test_logits_output_is_the_fc_head_on_pool3(net, weights):
    logits = load_fid_inception(weights, output="logits")
    x = images(1, 3, 32, 32)
    assert logits.num_features == 1008
    torch.testing.assert_close(logits(x), net.fc(net(x)))


def test_stays_in_eval_mode(net):
    net.train()
    assert not net.training and not any(m.training for m in net.modules())


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "pt_inception.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_fid_inception(path)


def test_mismatched_file_names_the_path_and_keys(net, tmp_path):
    state = dict(net.state_dict())
    del state["fc.bias"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=re.escape(str(path))) as err:
        load_fid_inception(path)
    assert "fc.bias" in str(err.value) and "extra.weight" in str(err.value)

    state = dict(net.state_dict())
    state["fc.weight"] = torch.zeros(1000, 2048)  # torchvision's ImageNet head: right names, wrong shape
    torch.save(state, path)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_fid_inception(path)

    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_fid_inception(path)


def test_plugs_into_torchmetrics_fid(weights):
    fid = FrechetInceptionDistance(feature=load_fid_inception(weights))
    fid.update(images(2, 3, 32, 32), real=True)  # FID needs two images per set, no more
    fid.update(images(2, 3, 32, 32, seed=3), real=False)
    value = fid.compute().item()
    assert math.isfinite(value) and value > 0


def test_unbiased_logits_leave_out_the_fc_bias_and_the_inception_score_on_them_equals_numpy(net):
    import numpy as np
    from torchmetrics.image.inception import InceptionScore

    x = images(8, 3, 32, 32, seed=4)
    unbiased = net.with_output("logits_unbiased")
    assert unbiased.num_features == 1008 and net.output == "pool3"  # a view: the network is unchanged
    logits = unbiased(x)
    torch.testing.assert_close(logits, net(x) @ net.fc.weight.T)
    torch.testing.assert_close(net.with_output("logits")(x) - logits, net.fc.bias.expand(8, -1))
    score = InceptionScore(feature=unbiased, splits=1)
    score.update(x)
    mean, _ = score.compute()
    p = np.exp(logits.double().numpy() - logits.double().numpy().max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    expected = np.exp(np.mean(np.sum(p * (np.log(p) - np.log(p.mean(axis=0, keepdims=True))), axis=1)))
    assert mean.item() == pytest.approx(expected, rel=1e-4)


def test_gan_metrics_with_inception_weights_scores_is_on_inception_s_unbiased_logits(weights):
    from lightning_gan.callbacks import GANMetrics

    is_net, fid_net = GANMetrics(inception_weights=str(weights))._score_nets(judge=nn.Identity())
    assert isinstance(is_net, FIDInceptionV3) and is_net.output == "logits_unbiased"
    assert isinstance(fid_net, FIDInceptionV3) and fid_net.output == "pool3"
    assert is_net.fc.weight is fid_net.fc.weight  # one network, loaded once
