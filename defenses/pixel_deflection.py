"""Pixel deflection (Prakash, Moran, Garber, DiLillo and Storer, "Deflecting Adversarial Attacks with Pixel
Deflection", CVPR 2018, https://arxiv.org/abs/1801.08926): random local pixel redirection, then wavelet denoising.

1. Deflection: in each channel, ``deflections`` randomly chosen sub-pixels are each replaced by the value of a random
   pixel within ``window`` rows and columns of it (a one-way copy; the source is drawn uniformly among the positions
   of the window that lie inside the image, as the authors' rejection loop does).
2. Denoising: the authors' ``denoise_wavelet(sigma=0.04, mode="soft", method="BayesShrink")`` of scikit-image with
   their db1 wavelet: per image, channel and detail sub-band, soft thresholding at sigma^2 / sqrt(max(var - sigma^2,
   eps)) (BayesShrink), over max(L - 3, 1) levels, L the largest level the image allows; the output clipped to [0, 1].
   The transforms are PyWavelets', over the whole batch at once.

Deviations, for images 50 to 800 times smaller than the paper's 224x224 ImageNet inputs:

- The paper deflects 200 pixels within a 10-pixel window, 0.4% of a 224x224 image: 3 pixels of a 28x28 digit, noise the
  denoiser alone would remove. We deflect 5% of the pixels (39 on 28x28, 3 on 8x8) within
  max(2, round(10 * side / 224)) pixels (the paper's window scaled to the image, but at least 2).
- The paper spreads deflections away from the salient object with a robust class activation map (R-CAM); the
  authors' code also offers deflection without a map, which we follow: the map needs a CAM-capable classifier.
- Colour images are denoised per RGB channel; the authors convert to YCbCr first.
- Targets in one channel are distinct and every source is read from the input (the authors' loop deflects one pixel
  after another, so a pixel may be deflected twice or copied after its own deflection); this keeps the batch one
  gather and one scatter, and makes "at most ``deflections`` sub-pixels change per channel" exact.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from benchmark.core.defense import Defense, DefenseContext, draw_generator
from benchmark.core.errors import BenchError
from benchmark.core.options import Option
from benchmark.core.registry import register_defense

DEFLECTION_RATE = 0.05  # share of the pixels deflected per channel (the paper: 200 of 224x224, see above)
PAPER_WINDOW, PAPER_SIDE = 10, 224
SIGMA = 0.04  # the authors' noise level for BayesShrink, for images in [0, 1]
WAVELET = "db1"


def default_deflections(h: int, w: int) -> int:
    return max(1, round(DEFLECTION_RATE * h * w))


def default_window(h: int, w: int) -> int:
    return max(2, round(PAPER_WINDOW * min(h, w) / PAPER_SIDE))


def deflect(x: torch.Tensor, deflections: int, window: int, gen: torch.Generator) -> torch.Tensor:
    """Per image and channel, ``deflections`` distinct sub-pixels of x (N, C, H, W) take the value of a random pixel
    of the same channel within ``window`` rows and columns (see the module's docstring)."""
    n, c, h, w = x.shape
    dev = x.device
    targets = torch.rand(n, c, h * w, generator=gen, device=dev).argsort(-1)[..., :deflections]  # distinct per channel
    rows, cols = targets.div(w, rounding_mode="floor"), targets % w

    def source(pos: torch.Tensor, length: int) -> torch.Tensor:
        lo, hi = (pos - window).clamp(min=0), (pos + window).clamp(max=length - 1)
        u = torch.rand(pos.shape, generator=gen, device=dev)
        return lo + (u * (hi - lo + 1)).long().clamp(max=hi - lo)

    sources = source(rows, h) * w + source(cols, w)
    flat = x.flatten(2)
    return flat.scatter(2, targets, flat.gather(2, sources)).view_as(x)


def wavelet_levels(h: int, w: int, wavelet: str = WAVELET) -> int:
    """scikit-image's default for denoise_wavelet: three levels fewer than the most the image allows, at least one."""
    import pywt

    return max(pywt.dwtn_max_level((h, w), wavelet) - 3, 1)


def bayes_shrink(x: torch.Tensor, sigma: float, wavelet: str = WAVELET) -> torch.Tensor:
    """Wavelet soft thresholding with BayesShrink thresholds per image, channel and detail sub-band, on a batch
    (N, C, H, W); scikit-image's ``denoise_wavelet(..., method="BayesShrink", mode="soft")`` per channel, clipped."""
    import pywt

    n, c, h, w = x.shape
    data = x.detach().cpu().double().numpy()
    coeffs = pywt.wavedec2(data, wavelet, level=wavelet_levels(h, w, wavelet), axes=(-2, -1))
    var, eps = sigma**2, np.finfo(np.float64).eps

    def shrink(d: np.ndarray) -> np.ndarray:
        spread = (d * d).mean(axis=(-2, -1), keepdims=True)
        threshold = var / np.sqrt(np.maximum(spread - var, eps))
        return np.sign(d) * np.maximum(np.abs(d) - threshold, 0)

    denoised = [coeffs[0]] + [tuple(shrink(d) for d in level) for level in coeffs[1:]]
    out = pywt.waverec2(denoised, wavelet, axes=(-2, -1))[..., :h, :w]
    return torch.from_numpy(np.clip(out, 0, 1)).to(device=x.device, dtype=x.dtype)


@register_defense("pixel-deflection")
class PixelDeflection(Defense):
    summary = "random local pixel redirection, then BayesShrink wavelet denoising (Prakash et al. 2018)"
    purifies = True
    differentiable = False  # wavelet thresholding in numpy: adaptive attacks use BPDA (identity)
    randomised = True
    OPTIONS = (
        Option("deflections", int, None, "sub-pixels deflected per channel; none: 5% of the pixels (the paper: 200 "
               "of 224x224)", low=1, none_ok=True),
        Option("window", int, None, "rows and columns a deflection may reach; none: the paper's 10 of 224 scaled "
               "to the image side, at least 2", low=1, none_ok=True),
        Option("sigma", float, SIGMA, "noise level of the BayesShrink wavelet denoising (Prakash et al.: 0.04)",
               low=1e-6),
    )

    def __init__(self, deflections: int | None = None, window: int | None = None, sigma: float = SIGMA) -> None:
        for name, value in (("deflections", deflections), ("window", window)):
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise BenchError(f"{name} must be a positive integer (or None for the image-size default), not {value!r}")
        if not (isinstance(sigma, (int, float)) and sigma > 0):
            raise BenchError(f"sigma must be a positive number (Prakash et al.: {SIGMA}), not {sigma!r}")
        self.deflections, self.window, self.sigma = deflections, window, float(sigma)

    def prepare(self, ctx: DefenseContext) -> None:
        _, h, w = ctx.dataset.shape
        if self.deflections is None:
            self.deflections = default_deflections(h, w)
        if self.window is None:
            self.window = default_window(h, w)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        assert self.deflections is not None and self.window is not None, "prepare() sizes them to the images"
        if self.deflections > x.shape[2] * x.shape[3]:
            raise BenchError(f"{self.deflections} deflections per channel exceed the {x.shape[2] * x.shape[3]} pixels")
        return bayes_shrink(deflect(x, self.deflections, self.window, draw_generator(x.device)), self.sigma)

    def options(self) -> dict[str, Any]:
        return {"deflections": self.deflections, "window": self.window, "sigma": self.sigma, "wavelet": WAVELET,
                "threshold": "BayesShrink, soft", "map": None}
