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


def test_interrupted_classifier_training_resumes_to_the_same_weights(digits, resumes_after_a_kill):
    import torch.nn.functional as F

    from benchmark.training import TrainConfig, train_classifier
    from benchmark.zoo import build_classifier

    cfg = TrainConfig(epochs=3, batch_size=256)

    def fresh():
        torch.manual_seed(0)
        return build_classifier(digits, "resnet")

    def loss(model, x, y):  # draws random numbers, as adversarial training does: their state must resume too
        return F.cross_entropy(model((x + 0.01 * torch.randn_like(x)).clamp(0, 1)), y)

    resumes_after_a_kill(
        fresh, lambda model, folder: train_classifier(model, digits, cfg, loss, torch.device("cpu"), 0, folder=folder))
