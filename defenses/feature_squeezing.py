"""Feature squeezing (Xu, Evans and Qi, NDSS 2018, https://arxiv.org/abs/1704.01155).

The classifier sees the squeezed input: bit-depth reduction followed by a 2x2 median filter, with the PixelDefend
paper's depths (3 bits for MNIST-like data, 5 for CIFAR-10). Xu et al.'s joint detector is offered too: the score is the
largest L1 distance between the softmax on the input and the softmax on each squeezed version; its threshold is set at
5% false positives on clean validation images.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.defense import Defense, DefenseContext
from benchmark.core.modes import eval_mode
from benchmark.core.options import Option
from benchmark.core.registry import register_defense

BITS = {"mnist-like": 3, "cifar": 5}
FALSE_POSITIVE_RATE = 0.05


def reduce_bit_depth(x: torch.Tensor, bits: int) -> torch.Tensor:
    levels = 2**bits - 1
    return torch.round(x * levels) / levels


def median_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """scipy.ndimage.median_filter(size=size) per channel of a batch (N, C, H, W): the median of each size x size window
    (the upper one for even sizes), placed as scipy places it (centred; one pixel up and left of centre for even
    sizes), edges extended as scipy's default "reflect" does for windows up to 3 wide. A selection by sort: the
    gradient goes to the chosen pixel."""
    before, after = size // 2, (size - 1) // 2
    padded = F.pad(x, (before, after, before, after), mode="replicate")
    n, c, h, w = x.shape
    windows = padded.unfold(2, size, 1).unfold(3, size, 1).reshape(n, c, h, w, size * size)
    return windows.sort(dim=-1).values[..., (size * size) // 2]


def median_filter_2x2(x: torch.Tensor) -> torch.Tensor:
    """scipy.ndimage.median_filter(size=2) per channel: the upper median of each pixel and its up/left neighbours."""
    return median_filter(x, 2)


@register_defense("feature-squeezing")
class FeatureSqueezing(Defense):
    summary = "bit-depth reduction + 2x2 median filter; joint L1 detector (Xu et al. 2018)"
    purifies = True
    differentiable = False  # rounding has zero gradient almost everywhere: adaptive attacks use BPDA (see below)
    detects = True
    OPTIONS = (Option("bits", int, None, "bit depth the input is reduced to; none: the paper's 3 for MNIST-like data, "
                      "5 for CIFAR-10", low=1, high=8, none_ok=True),)

    def __init__(self, bits: int | None = None) -> None:
        self.bits = bits
        self.threshold: float | None = None

    def prepare(self, ctx: DefenseContext) -> None:
        if self.bits is None:
            self.bits = BITS[ctx.dataset.family]
        val = ctx.dataset.val.x.to(ctx.device)
        scores = torch.cat([self.detection_scores(val[i : i + 500], ctx.classifier) for i in range(0, len(val), 500)])
        self.threshold = float(torch.quantile(scores.float().cpu(), 1 - FALSE_POSITIVE_RATE))

    def squeezers(self, x: torch.Tensor) -> list[torch.Tensor]:
        assert self.bits is not None, "prepare() sets the bit depth from the data set"
        return [reduce_bit_depth(x, self.bits), median_filter_2x2(x)]

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        assert self.bits is not None, "prepare() sets the bit depth from the data set"
        return median_filter_2x2(reduce_bit_depth(x, self.bits))

    def bpda_surrogate(self, x: torch.Tensor) -> torch.Tensor:
        """What adaptive attacks differentiate instead of :meth:`purify` (BPDA): rounding to the bit depth has zero
        gradient almost everywhere, so it is taken as the identity; the median filter, a selection by sort, passes its
        gradient to the chosen pixel as it is."""
        return median_filter_2x2(x)

    @torch.no_grad()
    def detection_scores(self, x: torch.Tensor, classifier: nn.Module) -> torch.Tensor:
        with eval_mode(classifier):
            p = F.softmax(classifier(x), dim=1)
            return torch.stack([(p - F.softmax(classifier(s), dim=1)).abs().sum(1) for s in self.squeezers(x)]).amax(0)

    def detect(self, x: torch.Tensor, classifier: nn.Module) -> torch.Tensor:
        assert self.threshold is not None, "prepare() calibrates the detector"
        return self.detection_scores(x, classifier) > self.threshold

    def options(self) -> dict[str, Any]:
        return {"bits": self.bits, "median": "2x2", "detector_fpr": FALSE_POSITIVE_RATE,
                "detector_threshold": None if self.threshold is None else round(self.threshold, 6)}
