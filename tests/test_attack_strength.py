"""Weak attacks flatter every defense: the attacks must be strong against the undefended mnist5k ResNet-style model.

bim and pgd at eps 0.3 fool at least 99% of the points; cw, deepfool and lbfgs, unbounded, find an adversarial example
for at least 95% of the correctly classified points. Success is the harness's own re-check (benchmark.engine.adversarial),
never the attack's flag. Trains the mnist5k ResNet once per session (about a minute on two cores).
"""
from __future__ import annotations

import pytest
import torch

from benchmark.core.defense import build_defense
from benchmark.core.registry import ATTACKS
from benchmark.data.dataset import load_dataset
from benchmark.engine.adversarial import generate, predict
from benchmark.store.model_store import ModelStore
from benchmark.training.zoo import get_classifier

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def mnist5k_resnet():
    saved = torch.get_num_threads()
    torch.set_num_threads(max(saved, 2))  # a real model: use both cores
    data = load_dataset("mnist5k")
    model, meta = get_classifier(data, "resnet", build_defense("none"), 0, CPU, ModelStore())
    yield data, model, meta
    torch.set_num_threads(saved)


def test_resnet_reaches_97_percent_on_mnist5k(mnist5k_resnet):
    _, _, meta = mnist5k_resnet
    assert meta["metrics"]["test_accuracy"] >= 0.97


@pytest.mark.parametrize("name", ["bim", "pgd"])
def test_fixed_attacks_fool_99_percent_at_eps_03(name, mnist5k_resnet):
    data, model, _ = mnist5k_resnet
    x, y = data.test.x[:100], data.test.y[:100]  # 99% of 100: at most one point may survive
    adv = generate(ATTACKS.get(name).factory(), model, x, y, (0.3,), seed=0, batch_size=100, device=CPU)
    fooled = (predict(model, adv.per_eps[0]) != y).float().mean().item()
    assert fooled >= 0.99, f"{name} at eps 0.3 fooled only {fooled:.1%}"


@pytest.mark.parametrize("name,n", [("deepfool", 100), ("cw", 100), ("lbfgs", 100)])
def test_minimal_attacks_find_95_percent(name, n, mnist5k_resnet):
    data, model, _ = mnist5k_resnet
    x, y = data.test.x[:n], data.test.y[:n]
    correct = predict(model, x) == y
    adv = generate(ATTACKS.get(name).factory(), model, x, y, (1.0,), seed=0, batch_size=100, device=CPU)
    found = adv.unbounded["found"].bool()  # re-checked by the harness on the unclipped output
    rate = found[correct].float().mean().item()
    assert rate >= 0.95, f"{name} found adversarial examples for only {rate:.1%} of correctly classified points"
