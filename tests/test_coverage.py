"""Class coverage and class-histogram KL: the measures of mode dropping and mode collapse."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gan.metrics.coverage import ClassCoverage


def one_hot_logits(classes: list[int], num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(classes), num_classes).float()


def test_matching_histogram_covers_every_class_with_zero_kl():
    metric = ClassCoverage(torch.full((4,), 25.0))
    metric.update(one_hot_logits([0, 1, 2, 3] * 5, 4))
    result = metric.compute()
    assert result["coverage"].item() == 1.0 and result["classes_covered"].item() == 4
    assert result["class_kl"].item() == pytest.approx(0.0, abs=1e-5)


def test_a_collapsed_generator_covers_one_class_and_has_a_large_kl():
    metric = ClassCoverage(torch.full((10,), 0.1))
    metric.update(one_hot_logits([7] * 100, 10))
    result = metric.compute()
    assert result["classes_covered"].item() == 1 and result["coverage"].item() == pytest.approx(0.1)
    # 9 dropped classes: KL(real || gen) = 0.9 * log(0.1 / eps) + 0.1 * log(0.1 / (1 + eps))
    expected = 0.9 * math.log(0.1 / 1e-6) + 0.1 * math.log(0.1 / (1 + 1e-6))
    assert result["class_kl"].item() == pytest.approx(expected, rel=1e-6)


def test_min_share_is_relative_to_the_real_share():
    real = torch.tensor([0.8, 0.2])
    metric = ClassCoverage(real, min_share=0.5)
    metric.update(one_hot_logits([0] * 95 + [1] * 5, 2))  # class 1 gets 5%, less than half of its 20%
    assert metric.compute()["classes_covered"].item() == 1
    metric.reset()
    metric.update(one_hot_logits([0] * 88 + [1] * 12, 2))  # 12% >= 10%
    assert metric.compute()["classes_covered"].item() == 2


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="real_distribution"):
        ClassCoverage(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="min_share=0"):
        ClassCoverage(torch.tensor([1.0, 1.0]), min_share=0)
