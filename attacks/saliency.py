"""The Jacobian-based saliency map attack (Papernot et al. 2016, https://arxiv.org/abs/1511.07528), torchattacks'."""
from __future__ import annotations

import torch

from benchmark.attack import Attack
from benchmark.registry import register_attack
from benchmark.vocab import AttackKind, Norm


@register_attack("saliency-map")
class SaliencyMap(Attack):
    summary = "JSMA towards the runner-up class, changing at most gamma of the pixels (Papernot et al. 2016)"
    norm, kind, library = Norm.L0, AttackKind.MINIMAL, "torchattacks"

    def __init__(self, theta: float = 1.0, gamma: float = 0.1) -> None:
        super().__init__(theta=theta, gamma=gamma)

    def run(self, model, x, y, eps):
        import torchattacks

        attack = torchattacks.JSMA(model, theta=self._options["theta"], gamma=self._options["gamma"])

        def runner_up(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            # torchattacks' default target is (label + 1) mod 10; the runner-up class is the easiest one to reach
            with torch.no_grad():
                logits = model(images)
            logits[torch.arange(len(labels)), labels] = -torch.inf
            return logits.argmax(1)

        attack.set_mode_targeted_by_function(runner_up, quiet=True)
        return attack(x, y)
