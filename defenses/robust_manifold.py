"""Enhanced invert-and-classify (Ilyas et al., "The Robust Manifold Defense", 2017, https://arxiv.org/abs/1712.09196,
Section 3.2): the classifier behind the GAN projection is adversarially trained on the generator's range.

The paper's min-max attack looks for pairs z, z' whose images are close, ||G(z) - G(z')||_2 <= eta, but whose
classifications differ as much as possible. Lagrangified, as in the paper: ascend
KL(C(G(z)) || C(G(z'))) - penalty * max(0, ||G(z) - G(z')||_2 - eta) over both codes. Training adds that divergence,
on the pairs a few steps of the attack found for the current classifier, to the cross-entropy on the data set's images:
the classifier learns to soften the boundaries the generator's range can reach. At test time the input is projected
exactly as by ``invert-and-classify``.

eta, the attack's steps and its step size are ours (the paper's values do not survive in the text we have): eta is
an L2 distance in [0, 1] pixel space, by default 1.5 for MNIST-like data (the L2 budget of ``pgd-l2``) and 1.0 for
CIFAR-10.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.options import Option, positive_int
from benchmark.core.registry import register_defense
from benchmark.training.gan import gan_key
from benchmark.training.robust_manifold import (
    ETA,
    divergence,
    min_max_pairs,
    training_generator,
)
from defenses.invert_and_classify import InvertAndClassify


@register_defense("invert-and-classify-robust")
class InvertAndClassifyRobust(InvertAndClassify):
    summary = ("invert-and-classify behind a classifier adversarially trained on the GAN's range with the min-max "
               "attack (Ilyas et al. 2017)")
    trains_classifier = True
    OPTIONS = (
        *InvertAndClassify.OPTIONS,
        Option("attack_steps", int, 10, "ascent steps of the min-max attack that finds each training pair", low=1),
        Option("eta", float, None, "L2 distance within which a pair's images must stay; none: 1.5 for MNIST-like "
               "data, 1.0 for CIFAR-10", low=0, none_ok=True),
        Option("pair_weight", float, 1.0, "weight of the pairs' divergence against the cross-entropy in training",
               low=0),
    )

    def __init__(self, attack_steps: int = 10, eta: float | None = None, pair_weight: float = 1.0,
                 **projection: Any) -> None:
        super().__init__(**projection)
        self.attack_steps = positive_int("attack_steps", attack_steps)
        self.eta, self.pair_weight = eta, pair_weight
        self._generators: dict[str, nn.Module] = {}
        self._datasets: dict[str, Any] = {}  # by name: training_loss gets the config, not the data set

    def training_config(self, dataset: Any) -> dict[str, Any]:
        self._datasets[dataset.name] = dataset
        return {"method": "min-max-manifold", "gan": gan_key(dataset, self.size), "gan_size": self.size,
                "dataset": dataset.name, "eta": self.eta if self.eta is not None else ETA[dataset.family],
                "attack_steps": self.attack_steps, "pair_weight": self.pair_weight}

    def _training_generator(self, config: dict[str, Any], device: torch.device) -> nn.Module:
        key = config["gan"]
        if key not in self._generators:
            self._generators[key] = training_generator(self._datasets[config["dataset"]], config, device)
        return self._generators[key]

    def training_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: dict[str, Any] | None
                      ) -> torch.Tensor:
        assert config is not None
        generator = self._training_generator(config, x.device)
        z, z2 = min_max_pairs(model, generator, len(x), config["eta"], config["attack_steps"])
        with torch.no_grad():
            a, b = generator(z), generator(z2)
        pairs = divergence(model(a), model(b)).mean()
        return F.cross_entropy(model(x), y) + config["pair_weight"] * pairs

    def options(self) -> dict[str, Any]:
        return {**super().options(), "attack_steps": self.attack_steps, "eta": self.eta,
                "pair_weight": self.pair_weight}
