"""A PixelCNN++-style autoregressive density model (Salimans et al. 2017, https://arxiv.org/abs/1701.05517).

Two streams of gated residual blocks over shifted convolutions, without PixelCNN++'s down- and up-sampling (so that
every activation belongs to one position, which :mod:`models.pixelcnn_fast` exploits):

- the *up* stream ``u`` sees the rows above a position (down-shifted 2x3 convolutions);
- the *up-left* stream ``ul`` sees those and the pixels to the left in the same row (down-right-shifted 2x2
  convolutions), and reads ``u`` through a 1x1 convolution.

A discretised mixture of logistics (:mod:`models.mixture`) reads ``ul``. Inputs are (N, C, H, W) images in [0, 1]; the
network sees them on the 8-bit grid in [-1, 1] plus a channel of ones that marks the zero padding, as PixelCNN++ does.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.registry import register_model

from . import mixture


class ShiftedConv(nn.Module):
    """A convolution whose output at (r, c) sees only rows r-kh+1..r and, when ``right``, only columns c-kw+1..c
    (otherwise columns centred on c): a causal convolution for raster order."""

    def __init__(self, cin: int, cout: int, size: tuple[int, int], right: bool) -> None:
        super().__init__()
        kh, kw = size
        self.conv = nn.Conv2d(cin, cout, size)
        left = kw - 1 if right else (kw - 1) // 2
        self.pad = (left, kw - 1 - left, kh - 1, 0)  # left, right, top, bottom

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


def elu(x: torch.Tensor) -> torch.Tensor:
    """ELU written with exp: torch's elu (and expm1) are not vectorised on CPU and cost ten times more here. The
    incremental evaluator computes it in the same order, so both paths round alike."""
    return torch.exp(x.clamp(max=0)) - 1 + x.clamp(min=0)


def down_shift(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


class GatedResidual(nn.Module):
    """x + a * sigmoid(b), with (a, b) from two shifted convolutions of elu(x) (and a 1x1 view of the other stream)."""

    def __init__(self, filters: int, size: tuple[int, int], right: bool, aux: bool, dropout: float) -> None:
        super().__init__()
        self.conv_in = ShiftedConv(filters, filters, size, right)
        self.aux = nn.Conv2d(filters, filters, 1) if aux else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = ShiftedConv(filters, 2 * filters, size, right)

    def forward(self, x: torch.Tensor, a: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv_in(elu(x))
        if self.aux is not None:
            h = h + self.aux(elu(a))
        gate_a, gate_b = self.conv_out(self.dropout(elu(h))).chunk(2, 1)
        return x + gate_a * torch.sigmoid(gate_b)


@register_model("pixelcnn")
class PixelCNN(nn.Module):
    kind: ClassVar[str] = "generative"
    summary: ClassVar[str] = "PixelCNN++-style: gated residual shifted convolutions, discretised logistic mixture"

    def __init__(self, shape: tuple[int, int, int], filters: int = 32, blocks: int = 5, mixtures: int = 5,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.filters, self.blocks_count, self.mixtures = filters, blocks, mixtures
        cin = shape[0] + 1  # the image and a channel of ones
        self.u_init = ShiftedConv(cin, filters, (2, 3), right=False)
        self.ul_init_up = ShiftedConv(cin, filters, (1, 3), right=False)
        self.ul_init_left = ShiftedConv(cin, filters, (2, 1), right=True)
        self.u_blocks = nn.ModuleList(GatedResidual(filters, (2, 3), False, False, dropout) for _ in range(blocks))
        self.ul_blocks = nn.ModuleList(GatedResidual(filters, (2, 2), True, True, dropout) for _ in range(blocks))
        self.head = nn.Conv2d(filters, mixture.num_params(shape[0], mixtures), 1)

    @classmethod
    def describe(cls) -> dict[str, str]:
        return {"kind": cls.kind, "shapes": "any CxHxW, C in {1, 3}", "summary": cls.summary}

    @staticmethod
    def network_input(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([mixture.to_grid(x), torch.ones_like(x[:, :1])], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mixture parameters (N, P, H, W); those at (r, c) depend only on pixels before (r, c) in raster order."""
        return self.forward_network(self.network_input(x))

    def forward_network(self, h: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` from the network's input (the image in [-1, 1] and a channel of ones), unquantised: so
        that gradients can flow to the image (the quantisation in :meth:`network_input` has none)."""
        u = down_shift(self.u_init(h))
        ul = down_shift(self.ul_init_up(h)) + right_shift(self.ul_init_left(h))
        for u_block, ul_block in zip(self.u_blocks, self.ul_blocks):
            u = u_block(u)
            ul = ul_block(ul, u)
        return self.head(elu(ul))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image log-likelihood in nats of 8-bit images x in [0, 1]."""
        return mixture.log_prob(self(x), x, self.mixtures).flatten(1).sum(1)

    def bits_per_dim(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image negative log-likelihood in bits per sub-pixel (the paper's BPD)."""
        return -self.log_prob(x) / (math.log(2) * x[0].numel())


def sharpen_(model: PixelCNN, log_scale: float = -4.0, gain: float = 4.0) -> PixelCNN:
    """Give an untrained PixelCNN the peaked distributions of a trained one (scales of ~2 levels), in place.

    For tests and speed benchmarks only: a freshly initialised network is nearly flat, and in a flat distribution every
    choice is a near tie, so comparisons of two purification paths would say nothing."""
    m, c = model.mixtures, model.shape[0]
    with torch.no_grad():
        model.head.weight.mul_(gain)
        model.head.bias[m + c * m : m + 2 * c * m] = log_scale  # the log-scales
    return model
