"""Randomization (Xie, Wang, Zhang, Ren and Yuille, "Mitigating Adversarial Effects Through Randomization",
ICLR 2018, https://arxiv.org/abs/1711.01991): a random resize, then random zero padding.

Xie et al. resize a 299x299 image to rnd x rnd, rnd drawn uniformly from [299, 331), by nearest neighbour, then pad
it with zeros to 331x331 at a random offset, and classify that. Here the classifier keeps its input size H x W, so
the padded canvas is the input's own size and the content shrinks instead: its side is drawn uniformly from
[floor(H * 299/331), H - 1] (always at least one row of padding, as rnd < 331 ensures), then it is placed at a
uniformly drawn offset. This is Xie et al.'s layer followed by a resize from 331 back to 299, folded into one
nearest-neighbour resize. On 28x28 images the content is 25 to 27 pixels wide; on 8x8 it is 7.

Resizing and padding are one gather per batch: every image has its own size and offset, with no loop over images.
The gather passes gradients (to the pixel each output copies): the defense is differentiable; adaptive attacks add EOT.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from benchmark.core.defense import Defense, draw_generator
from benchmark.core.errors import BenchError
from benchmark.core.options import Option
from benchmark.core.registry import register_defense

MIN_SCALE = 299 / 331  # Xie et al.: the smallest resize of the input relative to the padded canvas


def source_index(size: torch.Tensor, offset: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and output position along one axis: the input position it copies (nearest neighbour, PyTorch's and
    TensorFlow's ``floor(out * in / size)``) and whether it lies inside the resized content (else it is padding).
    ``size`` and ``offset`` are (N,) integers; both outputs are (N, length)."""
    pos = torch.arange(length, device=size.device)[None, :] - offset[:, None]
    inside = (pos >= 0) & (pos < size[:, None])
    src = (pos.clamp(min=0) * length).div(size[:, None], rounding_mode="floor").clamp(max=length - 1)
    return src, inside


def resize_and_pad(x: torch.Tensor, size: torch.Tensor, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Each image n of x (N, C, H, W) resized to size[n] x round(size[n] * W / H) by nearest neighbour and placed at
    (top[n], left[n]) on a zero canvas of x's shape."""
    n, c, h, w = x.shape
    width = (size * w / h).round().long().clamp(1, w)
    rows, row_in = source_index(size, top, h)
    cols, col_in = source_index(width, left, w)
    idx = torch.arange(n, device=x.device)[:, None, None]
    out = x.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return out * (row_in[:, :, None] & col_in[:, None, :])[:, None].to(x.dtype)


@register_defense("randomization")
class Randomization(Defense):
    summary = "random resize (nearest) and random zero padding (Xie et al. 2018)"
    purifies = True
    differentiable = True
    randomised = True
    OPTIONS = (Option("min_scale", float, MIN_SCALE, "smallest side of the resized content relative to the input's "
                      "(Xie et al.: 299/331)", low=0.01, high=0.99),)

    def __init__(self, min_scale: float = MIN_SCALE) -> None:
        if not (isinstance(min_scale, (int, float)) and 0 < min_scale < 1):
            raise BenchError(f"min_scale must be in (0, 1) (Xie et al.: 299/331 = {MIN_SCALE:.4f}), not {min_scale!r}")
        self.min_scale = float(min_scale)

    def size_range(self, h: int) -> tuple[int, int]:
        """The smallest and largest content side for images of height h (inclusive)."""
        return min(max(1, math.floor(h * self.min_scale)), h - 1), h - 1

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if h < 2:
            raise BenchError(f"randomization needs images at least 2 pixels high, not {h}")
        gen = draw_generator(x.device)
        lo, hi = self.size_range(h)
        size = torch.randint(lo, hi + 1, (n,), generator=gen, device=x.device)
        width = (size * w / h).round().long().clamp(1, w)
        # offsets uniform over the free space, per image: floor(u * (free + 1)) for u uniform in [0, 1)
        top = (torch.rand(n, generator=gen, device=x.device) * (h - size + 1)).long()
        left = (torch.rand(n, generator=gen, device=x.device) * (w - width + 1)).long()
        return resize_and_pad(x, size, top, left)

    def options(self) -> dict[str, Any]:
        return {"min_scale": round(self.min_scale, 6), "resize": "nearest", "pad": "zeros"}
