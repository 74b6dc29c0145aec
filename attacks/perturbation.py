"""Gradient-free corruptions run until they fool the model: uniform noise (the paper's RAND), salt and pepper,
Gaussian blur and contrast reduction (foolbox 3)."""
from __future__ import annotations

import numpy as np
import torch

from benchmark.core.attack import PAPER, Attack
from benchmark.core.options import Option
from benchmark.core.registry import register_attack
from benchmark.core.vocab import AttackKind, Norm

from .active import gaussian_blur
from .adapters import foolbox_minimal, foolbox_sweep


@register_attack("uniform-noise")
class UniformNoise(Attack):
    summary = "additive uniform noise, the smallest L-infinity amplitude of a sweep that fools (the paper's RAND)"
    groups = PAPER
    norm, kind, library = Norm.LINF, AttackKind.MINIMAL, "foolbox"
    needs_gradients, randomised = False, True
    OPTIONS = (Option("sweep", int, 128, "noise amplitudes tried, evenly spaced from 1/sweep to 1", low=1),)

    def __init__(self, sweep: int = 128) -> None:
        super().__init__(sweep=sweep)

    def sweep_budgets(self, x: torch.Tensor) -> list[float]:
        """L-infinity amplitudes from 1/sweep to 1, evenly spaced."""
        return np.linspace(1.0 / self._options["sweep"], 1.0, self._options["sweep"]).tolist()

    def run(self, model, x, y, eps):
        import foolbox as fb

        attack = fb.attacks.LinfAdditiveUniformNoiseAttack()
        return foolbox_sweep(lambda rows: attack, model, x, y, self.sweep_budgets(x), draws_whole_batch=True)


@register_attack("salt-and-pepper")
class SaltAndPepper(Attack):
    summary = "salt-and-pepper noise of growing density until the model is fooled"
    groups = PAPER
    norm, kind, library = Norm.L2, AttackKind.MINIMAL, "foolbox"
    needs_gradients, randomised = False, True
    OPTIONS = (Option("steps", int, 300, "steps of foolbox's search over the noise density (foolbox: 1,000)",
                      low=1),)

    # foolbox refines the noise density adaptively; 300 steps of its search instead of 1,000 cost a third
    def __init__(self, steps: int = 300) -> None:
        super().__init__(steps=steps)

    def run(self, model, x, y, eps):
        import foolbox as fb

        return foolbox_minimal(fb.attacks.SaltAndPepperNoiseAttack(steps=self._options["steps"]), model, x, y)


@register_attack("gaussian-blur")
class GaussianBlur(Attack):
    summary = "Gaussian blur of growing width until the model is fooled"
    groups = PAPER
    norm, kind, library = Norm.L2, AttackKind.MINIMAL, "foolbox"
    needs_gradients = False
    OPTIONS = (Option("steps", int, 200, "blur widths tried, growing", low=1),)

    def __init__(self, steps: int = 200) -> None:
        super().__init__(steps=steps)

    def run(self, model, x, y, eps):
        import foolbox as fb

        # foolbox's attack, each width tried only on the images not fooled yet (active.py): the same outputs
        attack = gaussian_blur()(distance=fb.distances.l2, steps=self._options["steps"])
        return foolbox_minimal(attack, model, x, y)


@register_attack("contrast-reduction")
class ContrastReduction(Attack):
    summary = "contrast reduction towards mid-grey, binary search for the least that fools"
    groups = PAPER
    norm, kind, library = Norm.L2, AttackKind.MINIMAL, "foolbox"
    needs_gradients = False
    OPTIONS = (Option("binary_search_steps", int, 15, "steps of the binary search for the least contrast reduction",
                      low=1),)

    def __init__(self, binary_search_steps: int = 15) -> None:
        super().__init__(binary_search_steps=binary_search_steps)

    def run(self, model, x, y, eps):
        import foolbox as fb

        attack = fb.attacks.BinarySearchContrastReductionAttack(
            distance=fb.distances.l2, binary_search_steps=self._options["binary_search_steps"])
        return foolbox_minimal(attack, model, x, y)
