"""JPEG compression of the input before the classifier (Dziugaite, Ghahramani and Roy 2016,
https://arxiv.org/abs/1608.00853; Das et al. 2017, https://arxiv.org/abs/1705.02900; Guo et al., "Countering
Adversarial Images using Input Transformations", ICLR 2018, https://arxiv.org/abs/1711.00117).

Quality 75 is the one Guo et al. evaluate (and libjpeg's default). The codec is libjpeg through torchvision's
batched ``encode_jpeg``/``decode_jpeg``: the input is rounded to 8 bits, compressed and decompressed.
Quantising DCT coefficients has zero gradient almost everywhere: adaptive attacks use BPDA. Athalye et al. (2018)
broke JPEG with the identity as its BPDA approximation, the standard choice, so no ``bpda_surrogate`` is declared (a
differentiable JPEG, e.g. Shin and Song's, is no standard component to reuse).
"""
from __future__ import annotations

from typing import Any

import torch

from benchmark.core.defense import Defense
from benchmark.core.errors import BenchError
from benchmark.core.options import Option
from benchmark.core.registry import register_defense

QUALITY = 75  # Guo et al. 2018


def to_bytes(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats to 8-bit levels (rounded), the images a JPEG codec takes."""
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def jpeg_round_trip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Compress and decompress a batch (N, C, H, W) in [0, 1] (C = 1 or 3) at ``quality``; same shape, device, dtype."""
    from torchvision.io import (  # here: importing torchvision costs every run 2 s
        ImageReadMode,
        decode_jpeg,
        encode_jpeg,
    )

    images = list(to_bytes(x).cpu())  # torchvision's codec takes a list of (C, H, W) uint8 images
    decoded = decode_jpeg(encode_jpeg(images, quality=quality), mode=ImageReadMode.UNCHANGED)
    return torch.stack(decoded).to(device=x.device, dtype=x.dtype) / 255


@register_defense("jpeg")
class JPEG(Defense):
    summary = "JPEG compression at quality 75 (Dziugaite et al. 2016; Guo et al. 2018)"
    purifies = True
    differentiable = False  # quantised DCT coefficients: adaptive attacks take the identity's gradient (BPDA)
    OPTIONS = (Option("quality", int, QUALITY, "JPEG quality (Guo et al. use 75)", low=1, high=100),)

    def __init__(self, quality: int = QUALITY) -> None:
        if isinstance(quality, bool) or not (isinstance(quality, int) and 1 <= quality <= 100):
            raise BenchError(f"JPEG quality must be an integer from 1 to 100 (Guo et al. use 75), not {quality!r}")
        self.quality = quality

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return jpeg_round_trip(x, self.quality)

    def options(self) -> dict[str, Any]:
        return {"quality": self.quality, "codec": "libjpeg (torchvision)"}
