"""The registered classifiers build for every input shape the project uses and map [0, 1] images to logits."""
from __future__ import annotations

import pytest
import torch

from benchmark.registry import MODELS
from benchmark.zoo import classifier_names

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("arch", ["resnet", "vgg"])
def test_classifier_shapes(arch, shape):
    model = MODELS.get(arch).factory(shape, 10).eval()
    logits = model(torch.rand(3, *shape))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()


def test_classifier_names_lists_only_classifiers():
    assert {"resnet", "vgg"} <= set(classifier_names())
