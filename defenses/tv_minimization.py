"""Total variation minimisation (Guo, Rana, Cisse and van der Maaten, "Countering Adversarial Images using Input
Transformations", ICLR 2018, https://arxiv.org/abs/1711.00117; TV denoising: Rudin, Osher and Fatemi 1992).

Each sub-pixel is dropped (set to 0) with probability ``drop_rate``; the image is then rebuilt from the kept ones as

    z* = argmin_z  0.5 * || w * (z - x) ||^2  +  weight * TV(z),        w = 1 where kept, 0 where dropped,

with the isotropic total variation TV(z) = sum over pixels and channels of |grad z| (forward differences). Guo et
al.'s released defaults: drop rate 0.5 and weight 0.03 (their split-Bregman solver is called with the fidelity
weight 1 / 0.03, the same objective). We solve it with the Chambolle-Pock primal-dual algorithm (Chambolle and
Pock 2011), which needs only gradients and divergences, so the whole batch is solved at once in torch; a fixed
number of iterations keeps the cost and the output deterministic for a given dropout mask.

The reconstruction is an optimisation inside the forward pass: Athalye et al. (2018) broke it with BPDA using the
identity, so it is declared non-differentiable and computed without a graph.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from benchmark.core.defense import Defense, draw_generator
from benchmark.core.errors import BenchError
from benchmark.core.options import Option
from benchmark.core.registry import register_defense

DROP_RATE = 0.5  # Guo et al.'s released defaults
WEIGHT = 0.03
ITERATIONS = 200  # Chambolle-Pock steps; on MNIST and 8x8 digits the objective is then within 0.3% of its value at 1,000
STEP = 1 / 8**0.5  # primal and dual step sizes: tau * sigma * ||grad||^2 <= 1 with ||grad||^2 <= 8


def gradient(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along W and H, zero at the last column and row (Neumann boundary); each (N, C, H, W)."""
    dx = F.pad(z[..., :, 1:] - z[..., :, :-1], (0, 1))
    dy = F.pad(z[..., 1:, :] - z[..., :-1, :], (0, 0, 0, 1))
    return dx, dy


def divergence(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """The negative adjoint of :func:`gradient` (for fields whose last column / row is zero, as its outputs are)."""
    return px - F.pad(px[..., :, :-1], (1, 0)) + py - F.pad(py[..., :-1, :], (0, 0, 1, 0))


def total_variation(z: torch.Tensor) -> torch.Tensor:
    """Isotropic total variation per image (N,): the sum over pixels and channels of the gradient's length."""
    dx, dy = gradient(z)
    return (dx**2 + dy**2).sqrt().flatten(1).sum(1)


def objective(z: torch.Tensor, x: torch.Tensor, keep: torch.Tensor, weight: float) -> torch.Tensor:
    """The reconstruction's objective per image (N,) (see the module's docstring)."""
    return 0.5 * ((keep * (z - x)) ** 2).flatten(1).sum(1) + weight * total_variation(z)


@torch.no_grad()
def tv_reconstruct(x: torch.Tensor, keep: torch.Tensor, weight: float, iterations: int = ITERATIONS) -> torch.Tensor:
    """argmin_z 0.5 ||keep * (z - x)||^2 + weight * TV(z) for a batch, by Chambolle-Pock; ``keep`` is 0/1 like x."""
    z = x * keep
    z_bar = z.clone()
    px, py = torch.zeros_like(x), torch.zeros_like(x)
    for _ in range(iterations):
        gx, gy = gradient(z_bar)
        px, py = px + STEP * gx, py + STEP * gy
        scale = ((px**2 + py**2).sqrt() / weight).clamp(min=1)  # project onto |p| <= weight
        px, py = px / scale, py / scale
        z_new = (z + STEP * divergence(px, py) + STEP * keep * x) / (1 + STEP * keep)
        z_bar = 2 * z_new - z
        z = z_new
    return z


@register_defense("tv-minimization")
class TVMinimization(Defense):
    summary = "random pixel dropout, then total-variation minimisation rebuilds the image (Guo et al. 2018)"
    purifies = True
    differentiable = False  # an optimisation in the forward pass: BPDA with the identity (Athalye et al. 2018)
    randomised = True
    optimises = True
    OPTIONS = (
        Option("drop_rate", float, DROP_RATE, "probability that a sub-pixel is dropped before the rebuild "
               "(Guo et al.: 0.5)", low=0, high=0.99),
        Option("weight", float, WEIGHT, "weight of the total variation against the kept pixels (Guo et al.: 0.03)",
               low=1e-6),
        Option("iterations", int, ITERATIONS, "Chambolle-Pock iterations of the rebuild", low=1),
    )

    def __init__(self, drop_rate: float = DROP_RATE, weight: float = WEIGHT, iterations: int = ITERATIONS) -> None:
        if not (isinstance(drop_rate, (int, float)) and 0 <= drop_rate < 1):
            raise BenchError(f"drop_rate must be in [0, 1) (Guo et al.: {DROP_RATE}), not {drop_rate!r}")
        if not (isinstance(weight, (int, float)) and weight > 0):
            raise BenchError(f"the TV weight must be a positive number (Guo et al.: {WEIGHT}), not {weight!r}")
        if not (isinstance(iterations, int) and iterations >= 1):
            raise BenchError(f"iterations must be a positive integer, not {iterations!r}")
        self.drop_rate, self.weight, self.iterations = float(drop_rate), float(weight), iterations

    def dropout_mask(self, x: torch.Tensor) -> torch.Tensor:
        """1 where a sub-pixel is kept, 0 where dropped (each independently, as Guo et al.'s salt-and-pepper)."""
        gen = draw_generator(x.device)
        return (torch.rand(x.shape, generator=gen, device=x.device) >= self.drop_rate).to(x.dtype)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return tv_reconstruct(x, self.dropout_mask(x), self.weight, self.iterations).clamp(0, 1)

    def options(self) -> dict[str, Any]:
        return {"drop_rate": self.drop_rate, "weight": self.weight, "iterations": self.iterations,
                "solver": "chambolle-pock", "tv": "isotropic"}
