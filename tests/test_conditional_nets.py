"""Conditional nets: labels reach G's latent or norms, D's input or head; unconditional nets are unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lightning_gan.nets import (
    ConditionalBatchNorm2d,
    DCGANDiscriminator,
    DCGANGenerator,
    LabelMaps,
    LatentConditioning,
    MLPDiscriminator,
    MLPGenerator,
    ProjectionHead,
    has_batchnorm,
)

LATENT = 16
K = 10
N = 4
SHAPES = [(1, 28, 28), (3, 32, 32)]
MODES = ["concat", "multiply", "cbn"]
# Two label batches that differ in every sample; mixed within a batch, since a label shared by the whole batch
# would be a constant shift that G's first BatchNorm subtracts again.
LABELS_A = torch.tensor([0, 1, 2, 3])
LABELS_B = torch.tensor([4, 5, 6, 7])


def _randomise_cbn(net: nn.Module) -> None:
    """Move every ConditionalBatchNorm2d off its class-blind init (gamma 1, beta 0), as training would."""
    for m in net.modules():
        if isinstance(m, ConditionalBatchNorm2d):
            nn.init.normal_(m.gamma.weight, 1.0, 0.5)
            nn.init.normal_(m.beta.weight, 0.0, 0.5)


def _generators(img_shape: tuple[int, int, int]) -> dict[str, nn.Module]:
    nets = {mode: DCGANGenerator(LATENT, img_shape, K, base_channels=8, conditioning=mode) for mode in MODES}
    nets["mlp"] = MLPGenerator(LATENT, img_shape, K, hidden=(32, 64))
    return nets


def _discriminators(img_shape: tuple[int, int, int], class_head: int = 0) -> dict[str, nn.Module]:
    kw = {"class_head": class_head, "base_channels": 8}
    return {
        "concat": DCGANDiscriminator(img_shape, K, label_input="concat", **kw),
        "projection": DCGANDiscriminator(img_shape, K, label_input="projection", **kw),
        "mlp": MLPDiscriminator(img_shape, K, class_head=class_head, hidden=(64, 32)),
    }


# --- generators ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("img_shape", SHAPES)
def test_generator_output_depends_on_the_label(img_shape):
    torch.manual_seed(0)
    z = torch.randn(N, LATENT)
    for name, g in _generators(img_shape).items():
        _randomise_cbn(g)
        a, b = g(z, LABELS_A), g(z, LABELS_B)
        assert a.shape == b.shape == (N, *img_shape), name
        assert a.min() >= -1 and a.max() <= 1, name
        diff = (a - b).flatten(1).abs().amax(dim=1)
        assert torch.all(diff > 1e-2), f"{name}: a sample's image does not change with its label: {diff}"
        torch.testing.assert_close(g(z, LABELS_A), a, msg=name)  # and only with the label


@pytest.mark.parametrize("img_shape", SHAPES)
def test_conditional_generator_needs_labels(img_shape):
    for g in _generators(img_shape).values():
        with pytest.raises(ValueError, match=rf"labels=None is not allowed: a net with num_classes={K}"):
            g(torch.randn(N, LATENT))


@pytest.mark.parametrize("mode", MODES)
def test_gradients_reach_every_conditional_generator_parameter(mode):
    g = DCGANGenerator(LATENT, (1, 28, 28), K, base_channels=8, conditioning=mode)
    d = DCGANDiscriminator((1, 28, 28), K, base_channels=8)
    d(g(torch.randn(N, LATENT), LABELS_A), LABELS_A).logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())
    embeddings = [m for m in g.modules() if isinstance(m, nn.Embedding)]
    assert embeddings and all(m.weight.grad[LABELS_A].abs().sum(dim=1).min() > 0 for m in embeddings)


def test_latent_conditioning_modes_by_hand():
    z, y = torch.randn(N, LATENT), LABELS_A
    cat = LatentConditioning(LATENT, K, "concat", embed_dim=5)
    assert cat.out_dim == LATENT + 5
    torch.testing.assert_close(cat(z, y), torch.cat([z, cat.embed.weight[y]], dim=1))
    mul = LatentConditioning(LATENT, K, "multiply", embed_dim=5)
    assert mul.out_dim == LATENT and mul.embed.weight.shape == (K, LATENT)  # embed_dim is for concat only
    torch.testing.assert_close(mul(z, y), z * mul.embed.weight[y])
    g = DCGANGenerator(LATENT, (1, 28, 28), K, base_channels=8, conditioning="concat", embed_dim=5)
    assert g.project.in_features == LATENT + 5
    with pytest.raises(ValueError, match="mode='add' is not allowed: choose one of concat, multiply"):
        LatentConditioning(LATENT, K, "add")


def test_conditional_batchnorm_by_hand():
    torch.manual_seed(0)
    cbn = ConditionalBatchNorm2d(3, K)
    x = torch.randn(N, 3, 5, 5)
    # At init gamma = 1 and beta = 0 for every class: a plain, non-affine BatchNorm.
    torch.testing.assert_close(cbn(x, LABELS_A), F.batch_norm(x, None, None, training=True))
    _randomise_cbn(cbn)
    normalised = F.batch_norm(x, None, None, training=True)
    gamma, beta = cbn.gamma.weight[LABELS_A], cbn.beta.weight[LABELS_A]
    torch.testing.assert_close(cbn(x, LABELS_A), gamma[..., None, None] * normalised + beta[..., None, None])
    assert not torch.allclose(cbn(x, LABELS_A), cbn(x, LABELS_B))


@pytest.mark.parametrize("img_shape", SHAPES)
def test_cbn_replaces_every_generator_batchnorm(img_shape):
    g = DCGANGenerator(LATENT, img_shape, K, base_channels=8, conditioning="cbn")
    plain = DCGANGenerator(LATENT, img_shape, base_channels=8)
    cbns = [m for m in g.modules() if isinstance(m, ConditionalBatchNorm2d)]
    assert len(cbns) == sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules()) == len(g.stages)
    assert all(not m.affine for m in g.modules() if isinstance(m, nn.BatchNorm2d))  # only the CBNs' inner BNs
    assert g.condition is None and g.project.in_features == LATENT  # the label enters through the norms only

    _randomise_cbn(g)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda _m, args, out: seen.append((args[1], out))) for m in cbns]
    z = torch.randn(N, LATENT)
    g(z, LABELS_A)
    g(z, LABELS_B)
    for h in hooks:
        h.remove()
    assert len(seen) == 2 * len(cbns)
    for (labels_a, out_a), (labels_b, out_b) in zip(seen[: len(cbns)], seen[len(cbns) :], strict=True):
        assert labels_a is LABELS_A and labels_b is LABELS_B
        assert not torch.allclose(out_a, out_b)


def test_cbn_needs_batch_norm():
    with pytest.raises(ValueError, match="norm='none' is not allowed: conditioning='cbn' needs norm='batch'"):
        DCGANGenerator(LATENT, (1, 28, 28), K, conditioning="cbn", norm="none")
    DCGANGenerator(LATENT, (1, 28, 28), conditioning="cbn", norm="none")  # unconditional: the mode is unused


def test_bad_conditioning_choices_raise():
    with pytest.raises(
        ValueError, match="conditioning='film' is not allowed: choose one of concat, multiply, cbn"
    ):
        DCGANGenerator(LATENT, (1, 28, 28), K, conditioning="film")
    with pytest.raises(
        ValueError, match="label_input='add' is not allowed: choose one of concat, projection"
    ):
        DCGANDiscriminator((1, 28, 28), K, label_input="add")
    with pytest.raises(ValueError, match="class_head=-1 is not allowed: must be an integer >= 0"):
        DCGANDiscriminator((1, 28, 28), class_head=-1)
    with pytest.raises(ValueError, match=r"hidden=\(\) is not allowed: must be one or more integers >= 1"):
        MLPGenerator(LATENT, (1, 28, 28), hidden=())
    with pytest.raises(ValueError, match=r"dropout=1\.0 is not allowed: must be in \[0, 1\)"):
        MLPDiscriminator((1, 28, 28), dropout=1.0)


# --- discriminators -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("img_shape", SHAPES)
def test_discriminator_logits_depend_on_the_label(img_shape):
    torch.manual_seed(0)
    x = torch.randn(N, *img_shape)
    for name, d in _discriminators(img_shape).items():
        d.eval()  # no dropout noise, no batch coupling: only the label differs
        a, b = d(x, LABELS_A), d(x, LABELS_B)
        assert a.logits.shape == (N,) and a.class_logits is None and a.features.shape == (N, d.num_features)
        diff = (a.logits - b.logits).abs()
        assert torch.all(diff > 1e-5 * a.logits.abs().max()), f"{name}: logits do not change with the label"
        torch.testing.assert_close(d(x, LABELS_A).logits, a.logits, msg=name)
        with pytest.raises(ValueError, match=rf"labels=None is not allowed: a net with num_classes={K}"):
            d(x)


def test_label_maps_by_hand():
    x = torch.randn(N, 3, 6, 8)
    out = LabelMaps(K)(x, LABELS_A)
    assert out.shape == (N, 3 + K, 6, 8)
    torch.testing.assert_close(out[:, :3], x)
    expected = F.one_hot(LABELS_A, K).float()[..., None, None].expand(N, K, 6, 8)
    torch.testing.assert_close(out[:, 3:], expected)
    d = DCGANDiscriminator((3, 32, 32), K, base_channels=8, label_input="concat")
    assert d.stages[0][0].in_channels == 3 + K


def test_projection_head_by_hand():
    torch.manual_seed(0)
    head = ProjectionHead(6, K)
    f = torch.randn(N, 6)
    torch.testing.assert_close(head(f, LABELS_A), (head.embed.weight[LABELS_A] * f).sum(dim=1))
    d = DCGANDiscriminator((1, 28, 28), K, base_channels=8, label_input="projection").eval()
    assert d.stages[0][0].in_channels == 1  # the label does not enter the image
    out = d(torch.randn(N, 1, 28, 28), LABELS_A)
    unconditional = d.head(out.features).squeeze(1)
    torch.testing.assert_close(out.logits - unconditional, d.projection(out.features, LABELS_A))


@pytest.mark.parametrize("num_classes", [0, K])
@pytest.mark.parametrize("net", ["dcgan", "mlp"])
def test_class_head_gives_trainable_class_logits(net, num_classes):
    shape = (1, 28, 28)
    if net == "dcgan":
        d = DCGANDiscriminator(shape, num_classes, class_head=7, base_channels=8)
        without = DCGANDiscriminator(shape, num_classes, base_channels=8)
    else:
        d = MLPDiscriminator(shape, num_classes, class_head=7, hidden=(64, 32))
        without = MLPDiscriminator(shape, num_classes, hidden=(64, 32))
    x, y = torch.randn(N, *shape), LABELS_A
    labels = y if num_classes else None
    out = d(x, labels)
    assert out.class_logits.shape == (N, 7)
    F.cross_entropy(out.class_logits, y).backward()
    assert d.classifier.weight.grad.abs().sum() > 0
    first = next(m for m in d.modules() if isinstance(m, nn.Conv2d | nn.Linear))
    assert first.weight.grad.abs().sum() > 0  # the class loss trains the shared features too
    assert without(x, labels).class_logits is None
    assert sum(p.numel() for p in d.parameters()) - sum(p.numel() for p in without.parameters()) == (
        d.num_features * 7 + 7
    )


# --- unconditional nets are what they were ------------------------------------------------------------------


def test_unconditional_dcgan_generator_is_unchanged():
    # Recorded from DCGANGenerator before conditioning was added (same seed, same calls).
    torch.manual_seed(0)
    g = DCGANGenerator(LATENT, (1, 28, 28), base_channels=8)
    x = g(torch.randn(4, LATENT))
    assert list(g.state_dict()) == [
        *("project.weight", "project.bias"),
        *(
            f"project_norm.0.{k}"
            for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        ),
        "stages.0.0.weight",
        *(
            f"stages.0.1.{k}"
            for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        ),
        *("stages.1.0.weight", "stages.1.0.bias"),
    ]
    # Linear 16 -> 16*7*7, BN(16), ConvT(16, 8) no bias, BN(8), ConvT(8, 1) with bias.
    assert (
        sum(p.numel() for p in g.parameters()) == 16 * 784 + 784 + 2 * 16 + 16 * 8 * 16 + 2 * 8 + 8 * 16 + 1
    )
    expected = [-0.12215451151132584, -0.08882509171962738, -0.06675424426794052, -0.16634957492351532]
    assert x[:, 0, 14, 14].tolist() == pytest.approx(expected, rel=1e-4)
    assert x.abs().mean().item() == pytest.approx(0.05409060791134834, rel=1e-4)


def test_unconditional_dcgan_discriminator_is_unchanged():
    torch.manual_seed(0)
    d = DCGANDiscriminator((1, 28, 28), base_channels=8)
    out = d(torch.randn(4, 1, 28, 28))
    bn = [f"stages.1.1.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    assert list(d.state_dict()) == [
        *("stages.0.0.weight", "stages.0.0.bias", "stages.1.0.weight"),
        *bn,
        *("head.weight", "head.bias"),
    ]
    # Conv(1, 8) with bias, Conv(8, 16) no bias, BN(16), Linear(16*7*7, 1).
    assert sum(p.numel() for p in d.parameters()) == 8 * 16 + 8 + 16 * 8 * 16 + 2 * 16 + 784 + 1
    expected = [0.014482587575912476, -0.2345878928899765, -0.8469122648239136, -0.6392562389373779]
    assert out.logits.tolist() == pytest.approx(expected, rel=1e-4)
    assert out.features.abs().mean().item() == pytest.approx(0.4515605568885803, rel=1e-4)


# --- MLP nets -----------------------------------------------------------------------------------------------


def test_mlp_parameter_counts_match_the_notes():
    # Notes: G = [100-d z, 10-d label embedding] -> 256 -> 512 -> 1024 -> 784; D mirrors it down to 1.
    g = MLPGenerator(100, (1, 28, 28), 10, norm=False)
    g_linears = (110 * 256 + 256) + (256 * 512 + 512) + (512 * 1024 + 1024) + (1024 * 784 + 784)
    assert sum(p.numel() for p in g.parameters()) == 10 * 10 + g_linears
    # With BatchNorm1d the Linear biases go (the norm's shift replaces them) and each norm adds scale + shift.
    g_norm = MLPGenerator(100, (1, 28, 28), 10)
    hidden = 256 + 512 + 1024
    assert sum(p.numel() for p in g_norm.parameters()) == 10 * 10 + g_linears - hidden + 2 * hidden
    d = MLPDiscriminator((1, 28, 28), 10)
    d_linears = (794 * 1024 + 1024) + (1024 * 512 + 512) + (512 * 256 + 256) + (256 + 1)
    assert sum(p.numel() for p in d.parameters()) == 10 * 10 + d_linears
    assert d.num_features == 256
    assert not has_batchnorm(d)  # so a gradient penalty or spectral norm is allowed
    assert sum(isinstance(m, nn.BatchNorm1d) for m in g_norm.modules()) == 3


def test_mlp_generator_shape_and_unconditional_mode():
    g = MLPGenerator(LATENT, (3, 8, 6), hidden=(32,))
    x = g(torch.randn(N, LATENT))
    assert x.shape == (N, 3, 8, 6) and x.min() >= -1 and x.max() <= 1
    assert g.embed is None
    d = MLPDiscriminator((3, 8, 6), hidden=(32,), dropout=0.0).eval()
    assert not any(isinstance(m, nn.Dropout) for m in d.modules())
    torch.testing.assert_close(d(x, LABELS_A).logits, d(x).logits)  # unconditional D ignores labels
