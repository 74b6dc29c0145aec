"""Shared plumbing for attacks implemented by foolbox 3 and torchattacks."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def foolbox_model(model: nn.Module, device: torch.device):
    import foolbox as fb

    return fb.PyTorchModel(model, bounds=(0.0, 1.0), device=device)


def foolbox_minimal(attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Run a foolbox minimisation attack; where it reports failure, return the clean input.

    foolbox's CW, for one, returns an all-zero image where it found nothing: that is a failure, not an adversarial
    example, so we never pass it on. (The harness re-checks every returned input anyway.)
    """
    raw, _, success = attack(foolbox_model(model, x.device), x, y, epsilons=None)
    return torch.where(success.view(-1, 1, 1, 1), raw, x)


def foolbox_sweep(attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: Sequence[float]) -> torch.Tensor:
    """A fixed-eps foolbox attack made minimal: the smallest budget of a sweep that fools the model, per example
    (the search over the step size that foolbox 1's FGM, FGSM and noise attacks ran). Failures return ``x``."""
    _, clipped, success = attack(foolbox_model(model, x.device), x, y, epsilons=list(epsilons))
    result = x.clone()
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for adv, ok in zip(clipped, success):  # budgets in increasing order: keep the first success
        take = ok & ~done
        result[take] = adv[take]
        done |= take
    return result
