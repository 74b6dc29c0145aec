"""fgsm-sweep: FGSM run to success, the smallest step of its sweep that fools (foolbox 1's GradientSignAttack)."""
from __future__ import annotations

import numpy as np
import torch

from attacks.gradient import FGSMSweep
from benchmark.engine.adversarial import generate, predict

CPU = torch.device("cpu")


def test_each_example_gets_the_first_fooling_step_of_the_sweep(digits, digits_classifier):
    model, _ = digits_classifier
    x, y = digits.test.x[:60], digits.test.y[:60]
    attack = FGSMSweep(sweep=30)
    adv = generate(attack, model, x, y, (1.0,), seed=0, batch_size=60, device=CPU)
    found = adv.unbounded["found"].bool()
    right = predict(model, x) == y
    assert found[right].float().mean() >= 0.9  # unbounded FGSM fools nearly every digit
    budgets = np.geomspace(1 / 1000, 1.0, 30)
    x_ = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(x_), y, reduction="sum").backward()
    sign = x_.grad.sign()
    for i in torch.nonzero(found & right)[:, 0].tolist():
        step = float(adv.unbounded["linf"][i])
        k = int(np.argmin(np.abs(budgets - step)))
        assert abs(budgets[k] - step) < 1e-5 * max(step, 1e-3) + 1e-6  # a step of the sweep (or clipped at [0, 1])
        at = lambda e: (x[i] + e * sign[i]).clamp(0, 1)[None]  # noqa: E731
        with torch.no_grad():
            assert model(at(budgets[k])).argmax(1).item() != y[i]
            if k > 0:  # the step before did not fool
                assert model(at(budgets[k - 1])).argmax(1).item() == y[i]
