"""Two input purifiers. ``DemoBlur`` registers itself with the decorator (module-form entry point); ``Quantize`` is
not decorated and is registered under its entry point's name (factory-form entry point)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from benchmark import Defense, register_defense


@register_defense("demo-blur")
class DemoBlur(Defense):
    """3x3 mean filter per channel with replicated borders: (N, C, H, W) in [0, 1] to the same shape and range."""

    summary = "3x3 average blur (demo plugin)"
    purifies = True
    differentiable = True

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel_size=3, stride=1)

    def options(self) -> dict[str, Any]:
        return {"kernel": 3}


class Quantize(Defense):
    """Rounds every value to one of ``levels`` evenly spaced grey levels in [0, 1]."""

    summary = "uniform quantisation to a few grey levels (demo plugin)"
    purifies = True
    differentiable = False  # rounding has zero gradient almost everywhere

    def __init__(self, levels: int = 8) -> None:
        self.levels = levels

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        top = self.levels - 1
        return torch.round(x * top) / top

    def options(self) -> dict[str, Any]:
        return {"levels": self.levels}
