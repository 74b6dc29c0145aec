"""The box-constrained L-BFGS attack (attacks/lbfgs.py) on a small MLP trained on scikit-learn's 8x8 digits."""
from __future__ import annotations

from typing import Iterator

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from attacks.lbfgs import LBFGS
from benchmark.core.registry import ATTACKS
from benchmark.core.vocab import AttackKind, Norm


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    """A trained MLP (eval mode, frozen) and 60 held-out test images (N, 1, 8, 8) in [0, 1] with labels."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only add contention (minutes instead of seconds)
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):  # full batch on the first 1500 images: a couple of seconds at most
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:1500]), y[:1500]).backward()
        opt.step()
    model.eval().requires_grad_(False)
    yield model, x[1500:1560], y[1500:1560]
    torch.set_num_threads(threads)


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).norm(dim=1)


def test_registered() -> None:
    entry = ATTACKS.get("lbfgs")
    assert entry.factory is LBFGS
    assert LBFGS.kind is AttackKind.MINIMAL and LBFGS.norm is Norm.L2
    assert LBFGS().options() == {"initial_const": 1.0, "search_steps": 8, "maxiter": 30, "warm_start": True}


def test_strong_and_well_formed(setup) -> None:
    model, x, y = setup
    correct = predict(model, x) == y
    assert correct.float().mean() > 0.85  # the model must be good enough for the success rate to mean something
    adv = LBFGS().run(model, x, y, None)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert torch.isfinite(adv).all() and adv.min() >= 0 and adv.max() <= 1
    fooled = predict(model, adv) != y
    assert fooled[correct].float().mean() >= 0.9
    # everything not fooled is x itself, bit for bit (this covers the misclassified points, returned unchanged)
    assert torch.equal(adv[~fooled], x[~fooled])
    assert torch.equal(adv[~correct], x[~correct])


def test_failure_returns_x(setup) -> None:
    model, x, y = setup
    # a huge weight on the norm and no search: the optimum stays at x, so nothing is found
    adv = LBFGS(initial_const=1e6, search_steps=1).run(model, x, y, None)
    assert torch.equal(adv, x)


def test_search_shrinks_perturbation(setup) -> None:
    model, x, y = setup
    # one round at a small c fools nearly everything, with a needlessly large perturbation; the search must find
    # larger c (a smaller perturbation) for the same points
    single = LBFGS(initial_const=1e-3, search_steps=1).run(model, x, y, None)
    searched = LBFGS(initial_const=1e-3).run(model, x, y, None)
    both = (predict(model, single) != y) & (predict(model, searched) != y) & (predict(model, x) == y)
    assert both.sum() >= 0.8 * len(x)
    assert l2(searched, x)[both].median() < 0.7 * l2(single, x)[both].median()
    assert (l2(searched, x)[both] <= l2(single, x)[both] + 1e-4).float().mean() >= 0.9


def test_deterministic_and_works_under_no_grad(setup) -> None:
    model, x, y = setup
    attack = LBFGS(search_steps=3)
    first = attack.run(model, x[:20], y[:20], None)
    with torch.no_grad():  # the harness may call attacks without autograd
        second = attack.run(model, x[:20], y[:20], None)
    assert torch.equal(first, second)
    assert not torch.equal(first, x[:20])
