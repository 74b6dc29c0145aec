"""The robust manifold defense's training step (Ilyas et al., "The Robust Manifold Defense", 2017,
https://arxiv.org/abs/1712.09196, Section 3.2): the min-max attack on pairs of latent codes, and the GAN it runs on.

Kept in the training layer because both the defense (its training loss) and the ``min-max-manifold`` attack use it.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.modes import eval_mode

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


def training_generator(dataset: Any, config: dict[str, Any], device: torch.device) -> nn.Module:
    """The generator of the GAN a robust-manifold training config names, for ``dataset`` (the loaded data set the
    config was made for: it knows where its files are); from the store, trained there first if missing."""
    from benchmark.store.model_store import ModelStore
    from benchmark.training.gan import get_gan

    gan, meta = get_gan(dataset, device, ModelStore(), seed=0, size=config["gan_size"])
    assert meta["key"] == config["gan"], "the GAN in the store does not match the training config"
    return gan.generator
