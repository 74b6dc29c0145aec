"""The registered classifiers build for every input shape the project uses and map [0, 1] images to logits."""
from __future__ import annotations

import pytest
import torch

from benchmark.core.registry import MODELS
from benchmark.training.zoo import classifier_names

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

    from benchmark.training.classifier import TrainConfig, train_classifier
    from benchmark.training.zoo import build_classifier

    cfg = TrainConfig(epochs=3, batch_size=256)

    def fresh():
        torch.manual_seed(0)
        return build_classifier(digits, "resnet")

    def loss(model, x, y):  # draws random numbers, as adversarial training does: their state must resume too
        return F.cross_entropy(model((x + 0.01 * torch.randn_like(x)).clamp(0, 1)), y)

    metrics = resumes_after_a_kill(
        fresh, lambda model, folder: train_classifier(model, digits, cfg, loss, torch.device("cpu"), 0, folder=folder))
    # the wall time spans the resume: both runs' parts, kept in the training state
    assert metrics["train_seconds"] > 0
    assert metrics["seconds_per_epoch"] == pytest.approx(metrics["train_seconds"] / cfg.epochs, abs=0.1)


def test_classifier_training_killed_inside_an_epoch_resumes_to_the_same_weights(digits, resumes_after_a_kill):
    import torch.nn.functional as F

    from benchmark.training.classifier import TrainConfig, train_classifier
    from benchmark.training.zoo import build_classifier

    cfg = TrainConfig(epochs=2, batch_size=256)
    assert len(digits.train) > 2 * cfg.batch_size, "the first save must fall inside the first epoch"

    def fresh():
        torch.manual_seed(0)
        return build_classifier(digits, "resnet")

    def loss(model, x, y):
        return F.cross_entropy(model((x + 0.01 * torch.randn_like(x)).clamp(0, 1)), y)

    def train(model, folder):  # saves after every batch: the kill comes after the first epoch's first batch
        return train_classifier(model, digits, cfg, loss, torch.device("cpu"), 0, folder=folder, save_every=0.0)

    resumes_after_a_kill(fresh, train)


def _with_batch_norm_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Random running statistics and affine parameters, so that folding them has something to get wrong."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval().requires_grad_(False)


@pytest.mark.parametrize("arch", ["resnet", "vgg"])
def test_folding_batch_norms_keeps_the_function_and_its_input_gradient(arch):
    from benchmark.training.zoo import fold_batch_norm

    model = _with_batch_norm_statistics(MODELS.get(arch).factory((1, 28, 28), 10))
    folded = fold_batch_norm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is left as it was
    assert not folded.training and not any(p.requires_grad for p in folded.parameters())
    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    grads = []
    for m in (model, folded):
        out = m(x)
        grads.append(torch.autograd.grad(out[:, 3].sum(), x)[0])
        assert torch.allclose(out, model(x), atol=1e-4, rtol=1e-4)
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-3)


def test_a_classifier_torch_fx_cannot_trace_is_used_unfolded():
    from benchmark.training.zoo import fold_batch_norm

    class Branching(torch.nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)

        def forward(self, x):
            out = self.bn(self.conv(x))
            return out if out.sum() > 0 else -out

    model = Branching().eval()
    assert fold_batch_norm(model) is model
