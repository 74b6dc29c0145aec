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

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.modes import eval_mode
from benchmark.registry import register_defense
from defenses.invert_and_classify import InvertAndClassify, positive_int

ETA = {"mnist-like": 1.5, "cifar": 1.0}


def divergence(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Per-row KL(softmax(a) || softmax(b))."""
    return F.kl_div(logits_b.log_softmax(1), logits_a.log_softmax(1), log_target=True, reduction="none").sum(1)


def l2_excess(eta: float):
    """The paper's constraint ||G(z) - G(z')||_2 <= eta as a per-row violation max(0, ||a - b||_2 - eta)."""
    return lambda a, b: ((a - b).flatten(1).norm(dim=1) - eta).clamp(min=0)


def min_max_ascent(classifier: nn.Module, generator: nn.Module, z: torch.Tensor, z2: torch.Tensor,
                   excess: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], steps: int, lr: float = 0.05,
                   penalty: float = 10.0, hold_first: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's min-max attack, Lagrangified: ``steps`` of Adam ascent of
    KL(C(G(z)) || C(G(z'))) - penalty * excess(G(z), G(z')) from the codes (z, z'), over both codes, or over z' alone
    with ``hold_first`` (a test input's own projection, min-max-manifold). Returns both codes."""
    z = z.detach().clone().requires_grad_(not hold_first)
    z2 = z2.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z2] if hold_first else [z, z2], lr=lr)
    with eval_mode(classifier), eval_mode(generator), torch.enable_grad():
        if hold_first:
            with torch.no_grad():
                a = generator(z)
                logits_a = classifier(a)
        for _ in range(steps):
            if not hold_first:
                a = generator(z)
                logits_a = classifier(a)
            b = generator(z2)
            objective = divergence(logits_a, classifier(b)) - penalty * excess(a, b)
            opt.zero_grad(set_to_none=True)
            (-objective.sum()).backward()
            opt.step()
    return z.detach(), z2.detach()


def min_max_pairs(classifier: nn.Module, generator: nn.Module, n: int, eta: float, steps: int, lr: float = 0.05,
                  penalty: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` of the min-max attack from z ~ N(0, I), z' = z + small noise: n pairs of codes (n, latent) each.

    Draws from torch's global generator (seeded by the caller, as training is)."""
    device = next(generator.parameters()).device
    z = torch.randn(n, generator.latent, device=device)
    z2 = z + 0.1 * torch.randn_like(z)
    return min_max_ascent(classifier, generator, z, z2, l2_excess(eta), steps, lr, penalty)


@register_defense("invert-and-classify-robust")
class InvertAndClassifyRobust(InvertAndClassify):
    summary = ("invert-and-classify behind a classifier adversarially trained on the GAN's range with the min-max "
               "attack (Ilyas et al. 2017)")
    trains_classifier = True

    def __init__(self, attack_steps: int = 10, eta: float | None = None, pair_weight: float = 1.0,
                 **projection: Any) -> None:
        super().__init__(**projection)
        self.attack_steps = positive_int("attack_steps", attack_steps)
        self.eta, self.pair_weight = eta, pair_weight
        self._generators: dict[str, nn.Module] = {}

    def training_config(self, dataset: Any) -> dict[str, Any]:
        from benchmark.gan_training import gan_config, gan_spec
        from benchmark.hashing import config_hash

        spec = gan_spec(dataset, gan_config(dataset.name, self.size), seed=0)
        return {"method": "min-max-manifold", "gan": config_hash(spec), "gan_size": self.size,
                "dataset": dataset.name, "eta": self.eta if self.eta is not None else ETA[dataset.family],
                "attack_steps": self.attack_steps, "pair_weight": self.pair_weight}

    def _training_generator(self, config: dict[str, Any], device: torch.device) -> nn.Module:
        """The GAN of the configured data set (from the store; trained there first if missing)."""
        key = config["gan"]
        if key not in self._generators:
            from benchmark.data import load_dataset
            from benchmark.gan_training import get_gan
            from benchmark.store import ModelStore

            gan, meta = get_gan(load_dataset(config["dataset"]), device, ModelStore(), seed=0, size=config["gan_size"])
            assert meta["key"] == key, "the GAN in the store does not match the training config"
            self._generators[key] = gan.generator
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
