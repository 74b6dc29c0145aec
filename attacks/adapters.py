"""Shared plumbing for attacks implemented by foolbox 3 and torchattacks."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn


def foolbox_model(model: nn.Module, device: torch.device):
    import foolbox as fb

    return fb.PyTorchModel(model, bounds=(0.0, 1.0), device=device)


def foolbox_minimal(attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Run a foolbox minimisation attack; where it reports failure, return the clean input.

    foolbox's CW, for one, returns an all-zero image where it found nothing: that is a failure, not an adversarial
    example, so we never pass it on. (The harness re-checks every returned input anyway.) Caveat: foolbox's success
    flag is its re-check of what it returns, so a blank image that the model happens to misclassify counts as a
    success (seen with foolbox's CW on the 8x8 digits; our CW, attacks/cw.py, returns ``x`` there).
    """
    raw, _, success = attack(foolbox_model(model, x.device), x, y, epsilons=None)
    return torch.where(success.view(-1, 1, 1, 1), raw, x)


def foolbox_sweep(make_attack: Callable[[torch.Tensor], Any], model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  epsilons: Sequence[float], draws_whole_batch: bool = False) -> torch.Tensor:
    """A fixed-eps foolbox attack made minimal: the smallest budget of a sweep that fools the model, per example
    (the search over the step size that foolbox 1's FGM, FGSM and noise attacks ran). Failures return ``x``.

    Each budget is what foolbox's ``__call__`` does for it (the attack's ``run``, the clip into the budget, the check),
    but only for the examples not fooled at a smaller budget: foolbox's call with a list of budgets runs every budget
    on the whole batch, and on MNIST some digits survive every budget. The attack runs on the remaining examples only
    (each example's result is its own, so it is unchanged), except with ``draws_whole_batch``: a randomised attack
    whose ``run`` is cheap (noise, no model call) draws for the whole batch at every budget, so that each example gets
    the noise foolbox's call would have drawn for it, and only the model's check shrinks. ``make_attack(rows)`` gives
    the foolbox attack for the examples ``rows`` (indices into the batch) it will run on.
    """
    import foolbox as fb

    fmodel = foolbox_model(model, x.device)
    result = x.clone()
    todo = torch.arange(len(x), device=x.device)
    for eps in epsilons:  # increasing: an example keeps its first success
        if len(todo) == 0:
            break
        rows = torch.arange(len(x), device=x.device) if draws_whole_batch else todo
        attack = make_attack(rows)
        adv = attack.run(fmodel, x[rows], fb.criteria.Misclassification(y[rows]), epsilon=eps)
        if draws_whole_batch:
            adv = adv[todo]
        adv = attack.distance.clip_perturbation(x[todo], adv, eps)
        with torch.no_grad():
            fooled = model(adv).argmax(1) != y[todo]
        result[todo[fooled]] = adv[fooled]
        todo = todo[~fooled]
    return result
