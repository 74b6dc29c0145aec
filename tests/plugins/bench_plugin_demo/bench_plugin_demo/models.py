"""A classifier small enough to train on the 8x8 digits in a second or two (factory-form entry point)."""
from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten, one hidden layer of 64 ReLUs, logits. Input (N, C, H, W) in [0, 1]; output (N, num_classes)."""

    kind = "classifier"
    summary = "one-hidden-layer perceptron (demo plugin)"

    @classmethod
    def describe(cls) -> dict[str, str]:
        return {"kind": cls.kind, "shapes": "any CxHxW (tested: 8x8x1)", "summary": cls.summary}

    def __init__(self, shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c, h, w = shape
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0 - 1.0)
