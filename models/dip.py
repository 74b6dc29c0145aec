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

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.errors import BenchError
from benchmark.core.options import positive_int
from benchmark.core.registry import register_model

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


@dataclass(frozen=True)
class DIPFit:
    iterations: int
    lr: float = 0.001
    width: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        positive_int("iterations", self.iterations)
        positive_int("width", self.width)
        if not self.lr > 0:
            raise BenchError(f"lr must be positive, not {self.lr!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def network(self, shape: tuple[int, int, int]) -> tuple[DIPNet, torch.Tensor]:
        """The seeded initial network and its fixed input code (1, CODE_CHANNELS, H, W)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = DIPNet(shape, self.width)
        return net, net.code(torch.Generator().manual_seed(self.seed + 1))[None]


def fit(x: torch.Tensor, cfg: DIPFit, checkpoints: tuple[int, ...] = ()
        ) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
    """Fit one network per image of x (B, C, H, W) in [0, 1], all at once.

    Returns the fitted outputs (B, C, H, W) clamped to [0, 1], the loss of every iteration (iterations, B) and the
    (clamped) outputs after each iteration count in ``checkpoints`` (the tuning reads many counts off one fit).
    """
    net, code = cfg.network(tuple(x.shape[1:]))
    net, code = net.to(x.device), code.to(x.device)
    b = len(x)
    params = {k: v.detach().expand(b, *v.shape).clone().requires_grad_(True) for k, v in net.named_parameters()}

    def forward(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return net.forward_stacked(p, code)

    target = x.detach()
    opt = torch.optim.Adam(params.values(), lr=cfg.lr)
    losses, snapshots = [], {}
    with torch.enable_grad():
        for it in range(1, cfg.iterations + 1):
            per_image = (forward(params) - target).square().flatten(1).mean(1)
            opt.zero_grad(set_to_none=True)
            per_image.sum().backward()  # each network's gradient is that of its own image's loss
            opt.step()
            losses.append(per_image.detach())
            if it in checkpoints:
                with torch.no_grad():
                    snapshots[it] = forward(params).clamp(0, 1)
    with torch.no_grad():
        out = forward(params).clamp(0, 1)
    return out, torch.stack(losses), snapshots


def fit_batched(x: torch.Tensor, cfg: DIPFit, batch_size: int) -> torch.Tensor:
    """The fitted outputs of x, ``batch_size`` networks at a time (memory grows with the networks fit at once)."""
    return torch.cat([fit(x[i : i + batch_size], cfg)[0] for i in range(0, len(x), batch_size)])


def fit_each(x: torch.Tensor, cfg: DIPFit) -> torch.Tensor:
    """One plain network per image, fit one after the other: the baseline of ``bench perf gan``."""
    outs = []
    for image in x:
        net, code = cfg.network(tuple(x.shape[1:]))
        net, code = net.to(x.device), code.to(x.device)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        with torch.enable_grad():
            for _ in range(cfg.iterations):
                loss = (net(code)[0] - image).square().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        with torch.no_grad():
            outs.append(net(code).clamp(0, 1))
    return torch.cat(outs)
