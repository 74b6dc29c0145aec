"""A DCGAN-style generator and WGAN-GP critic for 8x8x1, 28x28x1 and 32x32x3 images (any CxHxW whose side halves
down to at least 4).

DCGAN (Radford et al. 2016, https://arxiv.org/abs/1511.06434): a dense layer to a small feature map, then
transposed 4x4 convolutions of stride 2 that double the side and halve the width, batch norm and ReLU between them.
The critic mirrors it with strided convolutions and leaky ReLU and has no batch norm: the gradient penalty of WGAN-GP
(Gulrajani et al. 2017, https://arxiv.org/abs/1704.00028) is defined per example, which batch statistics would break.

The generator maps z ~ N(0, I) of ``latent`` dimensions to images in [0, 1] (a sigmoid output: the project's data
contract, so a projection never needs rescaling). It is used in eval mode, where batch norm is per example: a batch of
projections then gives each image exactly what it would get alone.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from benchmark.core.errors import BenchError
from benchmark.core.registry import register_model

LATENT = 128  # Defense-GAN's latent size


def upsamplings(side: int) -> int:
    """How many stride-2 layers take the first feature map to ``side``: halve while the result stays >= 4 and even
    sides remain (28 -> 14 -> 7: 2; 32 -> 16 -> 8 -> 4: 3; 8 -> 4: 1)."""
    k = 0
    while side % 2 == 0 and side // 2 >= 4:
        side //= 2
        k += 1
    if k == 0:
        raise BenchError(f"the GAN needs images whose side halves at least once to 4 or more (8, 28, 32...), "
                         f"not {side}")
    return k


class Generator(nn.Module):
    def __init__(self, shape: tuple[int, int, int], latent: int = LATENT, width: int = 64) -> None:
        super().__init__()
        c, h, w = shape
        if h != w:
            raise BenchError(f"the GAN generates square images, not {h}x{w}")
        self.shape, self.latent = tuple(shape), latent
        k = upsamplings(h)
        self.start = h // 2**k
        channels = [width * 2 ** (k - 1 - i) for i in range(k)]  # e.g. 28x28: 128 @7x7 -> 64 @14x14 -> 1 @28x28
        self.stem = nn.Sequential(
            nn.Linear(latent, channels[0] * self.start**2), nn.BatchNorm1d(channels[0] * self.start**2), nn.ReLU())
        layers: list[nn.Module] = []
        for cin, cout in zip(channels, channels[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        layers += [nn.ConvTranspose2d(channels[-1], c, 4, 2, 1), nn.Sigmoid()]
        self.body = nn.Sequential(*layers)
        self.channels0 = channels[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, latent) -> images (N, C, H, W) in [0, 1]."""
        h = self.stem(z).view(len(z), self.channels0, self.start, self.start)
        return self.body(h)


class Critic(nn.Module):
    def __init__(self, shape: tuple[int, int, int], width: int = 64) -> None:
        super().__init__()
        c, h, _ = shape
        k = upsamplings(h)
        channels = [width * 2**i for i in range(k)]
        layers: list[nn.Module] = []
        cin = c
        for cout in channels:
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2)]
            cin = cout
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * (h // 2**k) ** 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W) in [0, 1] -> scores (N,): higher for images the critic takes as real."""
        return self.body(x * 2 - 1).squeeze(1)


@register_model("gan")
class GAN(nn.Module):
    """The generator and its critic in one module, so that one checkpoint (and one resumable state) holds both."""

    kind: ClassVar[str] = "generative"
    summary: ClassVar[str] = "WGAN-GP: DCGAN-style generator (latent 128) and critic"

    @classmethod
    def describe(cls) -> dict[str, str]:
        return {"kind": cls.kind, "shapes": "8x8x1, 28x28x1, 32x32x3", "summary": cls.summary}

    def __init__(self, shape: tuple[int, int, int], latent: int = LATENT, width: int = 64) -> None:
        super().__init__()
        self.generator = Generator(shape, latent, width)
        self.critic = Critic(shape, width)
