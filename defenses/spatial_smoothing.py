"""Spatial smoothing: a median filter before the classifier (Xu, Evans and Qi, "Feature Squeezing", NDSS 2018,
https://arxiv.org/abs/1704.01155), the squeezer of feature squeezing on its own, without bit-depth reduction.

Xu et al. use a 2x2 window on MNIST and CIFAR-10 and 3x3 on ImageNet; the filter is the one feature squeezing uses
(:func:`defenses.feature_squeezing.median_filter`, equal to scipy.ndimage.median_filter).
"""
from __future__ import annotations

from typing import Any

import torch

from benchmark.core.defense import Defense
from benchmark.core.errors import BenchError
from benchmark.core.options import Option
from benchmark.core.registry import register_defense
from defenses.feature_squeezing import median_filter

SIZE = 2  # Xu et al.'s window for MNIST and CIFAR-10
SIZES = (2, 3)  # the windows whose edge handling matches scipy's (and the paper's ImageNet 3x3)


@register_defense("spatial-smoothing")
class SpatialSmoothing(Defense):
    summary = "median filter, 2x2 window (Xu et al. 2018)"
    purifies = True
    differentiable = True  # a selection by sort: each output's gradient goes to the pixel it selected
    OPTIONS = (Option("size", int, SIZE, "side of the median filter's square window (Xu et al.: 2 on MNIST and "
                      "CIFAR-10)", choices=SIZES),)

    def __init__(self, size: int = SIZE) -> None:
        if size not in SIZES:
            raise BenchError(f"median window size must be one of {', '.join(map(str, SIZES))}, not {size!r}")
        self.size = size

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return median_filter(x, self.size)

    def options(self) -> dict[str, Any]:
        return {"median": f"{self.size}x{self.size}"}
