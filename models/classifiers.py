"""Small ResNet-style and VGG-style classifiers for 8x8x1, 28x28x1 and 32x32x3 inputs.

Both take float32 NCHW images in [0, 1]; centring is their first layer, so attacks and defenses never see it.
Widths are chosen so that the networks train in minutes on two CPU cores yet reach the accuracy the paper's
networks reach on MNIST-like data (ResNet: He et al. 2016, https://arxiv.org/abs/1512.03385; VGG: Simonyan and
Zisserman 2015, https://arxiv.org/abs/1409.1556).
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from benchmark.core.registry import register_model


class Centre(nn.Module):
    """Maps [0, 1] to [-1, 1]; part of the model so that the input space stays [0, 1] everywhere else."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 - 1.0


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Classifier(nn.Module):
    """Base class: registered classifiers are built from the input shape (C, H, W) and the number of classes."""

    kind: ClassVar[str] = "classifier"
    summary: ClassVar[str] = ""

    @classmethod
    def describe(cls) -> dict[str, str]:
        return {"kind": cls.kind, "shapes": "any CxHxW (tested: 8x8x1, 28x28x1, 32x32x3)", "summary": cls.summary}


def _widths(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    return (32, 64, 128) if shape[0] == 3 else (16, 32, 64)


@register_model("resnet")
class ResNet(Classifier):
    summary = "ResNet-style: 3 stages of 2 basic blocks, global average pooling"

    def __init__(self, shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c, w = shape[0], _widths(shape)
        blocks: list[nn.Module] = []
        cin = w[0]
        for i, cout in enumerate(w):
            blocks += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
            cin = cout
        self.net = nn.Sequential(
            Centre(),
            nn.Conv2d(c, w[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(w[0]),
            nn.ReLU(),
            *blocks,
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(w[-1], num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_model("vgg")
class VGG(Classifier):
    summary = "VGG-style: 3 blocks of two 3x3 convolutions and max pooling, two dense layers"

    def __init__(self, shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c, h, _ = shape
        w = _widths(shape)
        layers: list[nn.Module] = [Centre()]
        cin, size = c, h
        for cout in w:
            layers += [
                nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(),
            ]
            if size >= 4:  # 8x8 inputs keep their last pooling out
                layers.append(nn.MaxPool2d(2))
                size //= 2
            cin = cout
        layers += [nn.Flatten(), nn.Linear(cin * size * size, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
