"""Projection onto a generator's range: z* = argmin_z ||G(z) - x||^2 by gradient descent (Defense-GAN's inversion,
Samangouei et al. 2018, https://arxiv.org/abs/1805.06605), L steps of SGD with momentum from R random starts.

All images and restarts of a batch are one (B*R, latent) tensor: one generator pass per step for the whole batch. The
R starts are drawn once from the seed and shared by every image, so an image's projection does not depend on which
other images share its batch, and batched and one-image-at-a-time projections agree (``bench perf gan`` checks it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from benchmark.core.errors import BenchError
from benchmark.core.modes import eval_mode
from benchmark.core.options import positive_int


@dataclass(frozen=True)
class Projection:
    """The optimisation that finds z*. The learning rate applies to the per-pixel mean squared error."""

    steps: int = 200  # L
    restarts: int = 10  # R
    lr: float = 10.0
    momentum: float = 0.7
    decay_at: float = 0.8  # the learning rate falls tenfold after this share of the steps
    seed: int = 0

    def __post_init__(self) -> None:
        positive_int("steps (L)", self.steps)
        positive_int("restarts (R)", self.restarts)
        if not self.lr > 0:
            raise BenchError(f"lr must be positive, not {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise BenchError(f"momentum must be in [0, 1), not {self.momentum!r}")
        if not 0 < self.decay_at <= 1:
            raise BenchError(f"decay_at (the share of the steps before the learning rate falls) must be in (0, 1], "
                             f"not {self.decay_at!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def starts(self, latent: int) -> torch.Tensor:
        """The R starting points (R, latent), z ~ N(0, I), the same for every image."""
        gen = torch.Generator().manual_seed(self.seed)
        return torch.randn(self.restarts, latent, generator=gen)


def reconstruction_errors(generator: nn.Module, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-row mean squared error ||G(z) - target||^2 / D (N,)."""
    return (generator(z) - target).square().flatten(1).mean(1)


def project(generator: nn.Module, x: torch.Tensor, cfg: Projection) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project x (B, C, H, W) in [0, 1] onto the generator's range.

    Returns G(z*) (B, C, H, W), z* (B, latent) and the reconstruction error of every start (B, R); each image's best
    start is the arg min of its row. Gradients flow to z only (the generator's weights are left alone).
    """
    check_fits(generator, x)
    b, r = len(x), cfg.restarts
    target = x.detach().repeat_interleave(r, 0)  # image-major: rows i*R .. i*R+R-1 are image i's starts
    z = cfg.starts(generator.latent).to(x.device, x.dtype).repeat(b, 1)
    z, images = descend(generator, z, target, cfg.steps, cfg.lr, cfg.momentum, int(cfg.decay_at * cfg.steps))
    errors = (images - target).square().flatten(1).mean(1).view(b, r)
    best = errors.argmin(1)
    rows = torch.arange(b, device=x.device) * r + best
    return images[rows], z[rows], errors


def descend(generator: nn.Module, z: torch.Tensor, target: torch.Tensor, steps: int, lr: float, momentum: float,
            decay_step: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` of SGD with momentum on each row's ||G(z) - target||^2 from ``z`` (rows independent); the learning
    rate falls tenfold at ``decay_step``. Returns the final z and G(z), detached."""
    z = z.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([z], lr=lr, momentum=momentum)
    with eval_mode(generator), torch.enable_grad():
        for step in range(steps):
            if step == decay_step:
                opt.param_groups[0]["lr"] = lr / 10
            # summed over rows: each z's gradient is that of its own error, as if optimised alone
            loss = reconstruction_errors(generator, z, target).sum()
            (z.grad,) = torch.autograd.grad(loss, z)
            opt.step()
        with torch.no_grad():
            return z.detach(), generator(z)


def descend_unrolled(generator: nn.Module, z: torch.Tensor, target: torch.Tensor, steps: int, lr: float,
                     momentum: float, decay_step: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`descend`'s computation kept in autograd's graph, so that its result is differentiable in ``target``
    (and ``z``): the projection's exact gradient, through every one of its steps (second derivatives of the
    generator included). The updates are written as torch's SGD makes them (buffer = momentum * buffer + grad, then
    z - lr * buffer), so the result equals :func:`descend`'s. Memory grows with ``steps``: every step's activations
    are kept for the backward pass."""
    z = z if z.requires_grad else z.detach().clone().requires_grad_(True)
    buffer = None
    with eval_mode(generator), torch.enable_grad():
        for step in range(steps):
            if step == decay_step:
                lr = lr / 10
            loss = reconstruction_errors(generator, z, target).sum()
            (grad,) = torch.autograd.grad(loss, z, create_graph=True)
            buffer = grad if buffer is None else buffer * momentum + grad
            z = z.add(buffer, alpha=-lr)
        return z, generator(z)


def project_unrolled(generator: nn.Module, x: torch.Tensor, cfg: Projection) -> tuple[torch.Tensor, torch.Tensor]:
    """Every start's end image (B, R, C, H, W) and error (B, R) of :func:`project`, differentiable in ``x``."""
    check_fits(generator, x)
    b, r = len(x), cfg.restarts
    target = x.repeat_interleave(r, 0)
    z = cfg.starts(generator.latent).to(x.device, x.dtype).repeat(b, 1).requires_grad_(True)
    _, images = descend_unrolled(generator, z, target, cfg.steps, cfg.lr, cfg.momentum, int(cfg.decay_at * cfg.steps))
    errors = (images - target).square().flatten(1).mean(1).view(b, r)
    return images.view(b, r, *x.shape[1:]), errors


def project_each(generator: nn.Module, x: torch.Tensor, cfg: Projection) -> torch.Tensor:
    """The same projection one image at a time (its R restarts still batched): the speed benchmark's baseline."""
    return torch.cat([project(generator, x[i : i + 1], cfg)[0] for i in range(len(x))])


def check_fits(generator: nn.Module, x: torch.Tensor) -> None:
    shape = tuple(getattr(generator, "shape", ()))
    if tuple(x.shape[1:]) != shape:
        raise BenchError(f"the generator makes images of shape {shape}, but the inputs have shape "
                         f"{tuple(x.shape[1:])}; use a GAN trained on this data set")
