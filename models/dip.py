"""The deep image prior network: a small convolutional encoder-decoder fit to one image from a fixed random code.

Ulyanov, Vedaldi and Lempitsky, "Deep Image Prior", CVPR 2018 (https://arxiv.org/abs/1711.10925): an untrained
network reproduces the structure of natural images long before it reproduces noise, so stopping its fit early keeps
the image and leaves the noise out. Two stride-2 convolutions down, nearest-neighbour upsampling and convolutions up
(no skip connections: the bottleneck is the prior), leaky ReLU, and a linear output (clamped to [0, 1] only once the
fit is done). No normalisation layer, so that one image's network never depends on another's. Without the batch norm of
the paper's networks a sigmoid output saturated within 25 Adam steps on MNIST (every output pixel stuck at 0, the
loss flat at the background's), so the output is linear.

Many networks are fit at once by :meth:`DIPNet.forward_stacked`: B networks' weights stacked along a leading axis, their
activations kept side by side as the channels of one (1, B*C, H, W) tensor, and every convolution a grouped one (one
group per network). Elementwise layers and upsampling act per channel and need no change. On a CPU this ran the fit
about 1.8 times faster than :func:`torch.func.vmap` over :func:`torch.func.functional_call`, whose convolution
backward took a slow path.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import BenchError
from benchmark.registry import register_model

CODE_CHANNELS = 8


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1)


@register_model("dip")
class DIPNet(nn.Module):
    kind: ClassVar[str] = "generative"
    summary: ClassVar[str] = "deep image prior: conv encoder-decoder from a fixed random code (untrained)"

    @classmethod
    def describe(cls) -> dict[str, str]:
        return {"kind": cls.kind, "shapes": "CxHxW, H and W multiples of 4", "summary": cls.summary}

    def __init__(self, shape: tuple[int, int, int], width: int = 32) -> None:
        super().__init__()
        c, h, w = shape
        if h % 4 or w % 4:
            raise BenchError(f"the deep image prior network needs sides that are multiples of 4, not {h}x{w}")
        self.shape = tuple(shape)
        def act() -> nn.Module:  # one instance per use: named_children() lists a shared module only once
            return nn.LeakyReLU(0.2)

        self.net = nn.Sequential(
            _conv(CODE_CHANNELS, width, 2), act(), _conv(width, 2 * width, 2), act(),
            nn.Upsample(scale_factor=2), _conv(2 * width, width), act(),
            nn.Upsample(scale_factor=2), _conv(width, width), act(),
            nn.Conv2d(width, c, 1),
        )

    def code(self, gen: torch.Generator) -> torch.Tensor:
        """A fixed random input (CODE_CHANNELS, H, W), uniform in [0, 0.1) as in the paper's code."""
        return torch.rand(CODE_CHANNELS, *self.shape[1:], generator=gen) * 0.1

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        """code (N, CODE_CHANNELS, H, W) -> images (N, C, H, W), unclamped."""
        return self.net(code)

    def forward_stacked(self, params: dict[str, torch.Tensor], code: torch.Tensor) -> torch.Tensor:
        """B networks at once: ``params`` maps each of this network's parameter names to a (B, ...) stack of them;
        code (1, CODE_CHANNELS, H, W) is every network's input. Returns (B, C, H, W)."""
        b = next(iter(params.values())).shape[0]
        h = code.expand(b, *code.shape[1:]).reshape(1, -1, *code.shape[2:])
        for name, layer in self.net.named_children():
            if isinstance(layer, nn.Conv2d):
                weight, bias = params[f"net.{name}.weight"], params[f"net.{name}.bias"]
                h = F.conv2d(h, weight.flatten(0, 1), bias.flatten(), layer.stride, layer.padding, groups=b)
            else:
                h = layer(h)
        return h.view(b, -1, *h.shape[2:])
