"""Adversarial training (FGSM and BIM) and label smoothing: defenses with a training-time part only.

Adversarial training follows Kurakin, Goodfellow and Bengio, "Adversarial Machine Learning at Scale" (ICLR 2017,
https://arxiv.org/abs/1611.01236), as the PixelDefend paper does: each batch mixes clean and adversarial examples with
equal weight, and each example's budget is drawn from a normal distribution N(0, sigma) truncated to [0, 2 sigma].
Kurakin et al. use sigma = 8/255 on ImageNet, and so does the PixelDefend paper's code on every data set: that is the
default. ``sigma=16/255`` is the other recipe measured on MNIST-like data (its budgets cover the attack budgets up to
25/255 and eps_defend 32/255); records name it, ``adv-fgsm(sigma=16/255)``.
Every training-time defense here takes ``epochs``: the data set's schedule by default
(``benchmark.training.classifier.DEFAULT_TRAIN``), another length on request (``adv-fgsm(epochs=10)``), so the effect
of training longer can be measured; the count enters the classifier's store key.
Label smoothing: Szegedy et al. 2016 (https://arxiv.org/abs/1512.00567), as in the PixelDefend tables.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.defense import Defense
from benchmark.core.errors import BenchError
from benchmark.core.modes import eval_mode
from benchmark.core.options import Option, positive_int
from benchmark.core.registry import register_defense

SIGMA = 8 / 255  # the PixelDefend paper's code, after Kurakin et al. 2017
EPOCHS = Option("epochs", int, None, "training epochs; none: the data set's standard schedule (3 on MNIST and "
                "Fashion-MNIST, 30 on CIFAR-10)", low=1, none_ok=True)


class _TrainingLength:
    """The ``epochs`` option of a training-time defense: set, it overrides the data set's schedule and is part of the
    training config (so of the classifier's store key) and of the recorded options; unset, neither mentions it, and
    classifiers trained before the option existed keep their keys."""

    epochs: int | None = None

    def _set_epochs(self, epochs: int | None) -> None:
        self.epochs = None if epochs is None else positive_int("epochs", epochs)

    def _length(self) -> dict[str, Any]:
        return {} if self.epochs is None else {"epochs": self.epochs}


def truncated_normal_eps(n: int, sigma: float, device: torch.device) -> torch.Tensor:
    """Per-example budgets |N(0, sigma)| truncated to [0, 2 sigma] (resampling beyond), shape (n, 1, 1, 1)."""
    eps = torch.randn(n, device=device).abs() * sigma
    while bool((bad := eps > 2 * sigma).any()):
        eps[bad] = torch.randn(int(bad.sum()), device=device).abs() * sigma
    return eps.view(n, 1, 1, 1)


class _AdversarialTraining(_TrainingLength, Defense):
    trains_classifier = True
    method = ""
    OPTIONS = (Option("sigma", float, SIGMA, "scale of the per-example budgets |N(0, sigma)|, truncated to "
                      "[0, 2 sigma] (the paper's code: 8/255)", low=1e-6, high=0.5), EPOCHS)

    def __init__(self, sigma: float = SIGMA, epochs: int | None = None) -> None:
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 < sigma <= 0.5:
            raise BenchError(f"adversarial training's sigma must be a number in (0, 0.5], e.g. 8/255, not {sigma!r}")
        self.sigma = float(sigma)
        self._set_epochs(epochs)

    def training_config(self, dataset: Any) -> dict[str, Any]:
        return {"method": self.method, "sigma": self.sigma, "adv_weight": 0.5, **self._extra(), **self._length()}

    def options(self) -> dict[str, Any]:
        return {"sigma": self.sigma, **self._length()}

    def _extra(self) -> dict[str, Any]:
        return {}

    def _attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor,
                config: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def training_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: dict[str, Any] | None
                      ) -> torch.Tensor:
        assert config is not None
        eps = truncated_normal_eps(len(x), config["sigma"], x.device)
        with eval_mode(model):  # craft against inference-mode batch norm, then restore training mode
            x_adv = self._attack(model, x, y, eps, config).detach()
        w = config["adv_weight"]
        return (1 - w) * F.cross_entropy(model(x), y) + w * F.cross_entropy(model(x_adv), y)


@register_defense("adv-fgsm")
class AdversarialFGSM(_AdversarialTraining):
    summary = "adversarial training with FGSM, per-example budgets (Kurakin et al. 2017)"
    method = "fgsm"

    def _attack(self, model, x, y, eps, config):
        import torchattacks

        return torchattacks.FGSM(model, eps=eps)(x, y)


@register_defense("adv-bim")
class AdversarialBIM(_AdversarialTraining):
    summary = "adversarial training with BIM, per-example budgets (Kurakin et al. 2017)"
    method = "bim"

    def _extra(self) -> dict[str, Any]:
        # The paper's BIM takes up to 1.25 * eps steps of 1/255; for training we bound the cost with a fixed
        # number of steps of 0.3 eps (reaching the boundary of the ball after four, then moving along it).
        return {"steps": 5, "rel_step": 0.3}

    def _attack(self, model, x, y, eps, config):
        import torchattacks

        return torchattacks.BIM(model, eps=eps, alpha=eps * config["rel_step"], steps=config["steps"])(x, y)


@register_defense("label-smoothing")
class LabelSmoothing(_TrainingLength, Defense):
    summary = "training with smoothed labels (Szegedy et al. 2016)"
    trains_classifier = True
    OPTIONS = (EPOCHS,)

    def __init__(self, epochs: int | None = None) -> None:
        self._set_epochs(epochs)

    def training_config(self, dataset: Any) -> dict[str, Any]:
        return {"method": "label-smoothing", "smoothing": 0.1, **self._length()}

    def options(self) -> dict[str, Any]:
        return self._length()

    def training_loss(self, model, x, y, config):
        return F.cross_entropy(model(x), y, label_smoothing=config["smoothing"])
