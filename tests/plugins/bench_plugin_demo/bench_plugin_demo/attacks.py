"""A gradient-free baseline attack, registered under its entry point's name (factory form)."""
from __future__ import annotations

import torch

from benchmark import Attack, AttackKind, Norm


class RandomSign(Attack):
    """x + eps * a random sign per sub-pixel, clipped to [0, 1]: the weakest L-infinity attack at a given budget."""

    summary = "random +-eps per pixel (demo plugin)"
    norm, kind, library = Norm.LINF, AttackKind.FIXED, "bench-plugin-demo"
    needs_gradients, randomised = False, True

    def run(self, model, x: torch.Tensor, y: torch.Tensor, eps: float | None) -> torch.Tensor:
        assert eps is not None, "a fixed-budget attack gets its budget"
        sign = torch.randint(0, 2, x.shape, device=x.device, dtype=x.dtype) * 2 - 1
        return (x + eps * sign).clamp(0.0, 1.0)
