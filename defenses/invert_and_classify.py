"""Invert-and-classify (Defense-GAN): project the input onto the range of a GAN generator, then classify the projection.

Samangouei, Kabkab and Chellappa, "Defense-GAN", ICLR 2018 (https://arxiv.org/abs/1805.06605); the same step is the
"invert-and-classify" of Ilyas et al., "The Robust Manifold Defense", 2017 (https://arxiv.org/abs/1712.09196).

z* = argmin_z ||G(z) - x||^2 by gradient descent: L steps of SGD with momentum from R random starts, and each image
keeps the start whose final reconstruction error is smallest. The defended classifier sees G(z*).

All images and restarts of a batch are one (B*R, latent) tensor: one generator pass per step for the whole batch. The
R starts are drawn once from the seed and shared by every image, so an image's projection does not depend on which
other images share its batch (the runner's batch size must not change a result), and batched and one-image-at-a-time
projections agree (``bench perf gan`` checks it). The defense is therefore deterministic for its seed, not randomised.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from benchmark.defense import Defense, DefenseContext, rows_near
from benchmark.errors import BenchError
from benchmark.modes import eval_mode
from benchmark.registry import register_defense


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is a positive integer (not a bool or a float), else one clear error."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BenchError(f"{name} must be a positive integer, not {value!r}")
    return value


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


def project_each(generator: nn.Module, x: torch.Tensor, cfg: Projection) -> torch.Tensor:
    """The same projection one image at a time (its R restarts still batched): the speed benchmark's baseline."""
    return torch.cat([project(generator, x[i : i + 1], cfg)[0] for i in range(len(x))])


class WarmStartProjection:
    """The adaptive attacker's forward pass through the projection (BPDA): per step, 20 generator passes per image
    where the full projection makes 200 for each of 10 starts.

    An iterative attack moves each input a little per step, so its projection moves a little too: a row whose input is
    within ``reach`` (L-infinity) of that row's input at the previous call starts from the previous z* and takes
    ``steps`` of SGD at the projection's final learning rate; any other row (the first call, a new image) gets the full
    projection. Only the attacker's gradients come from here: every prediction that counts (the attack's success
    checks without gradients, the harness's evaluation) runs the real projection, so a poor stand-in can only make the
    attack weaker, never count an input that the defense classifies correctly as broken.
    """

    def __init__(self, generator: nn.Module, cfg: Projection, steps: int = 20, reach: float = 0.5) -> None:
        self.generator, self.cfg = generator, cfg
        self.steps, self.reach = positive_int("warm steps", steps), reach
        self._x: torch.Tensor | None = None
        self._z: torch.Tensor | None = None

    def describe(self) -> str:
        return (f"warm-started projection: {self.steps} steps from the previous z* of an input within {self.reach} "
                f"(L-inf), else the full projection")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        warm = rows_near(x, self._x, self.reach)
        images = torch.empty_like(x)
        z = torch.empty(len(x), self.generator.latent, device=x.device, dtype=x.dtype)
        if warm.any():
            z[warm], images[warm] = descend(self.generator, self._z[warm], x[warm], self.steps, self.cfg.lr / 10,
                                            self.cfg.momentum)
        if not warm.all():
            images[~warm], z[~warm], _ = project(self.generator, x[~warm], self.cfg)
        self._x, self._z = x, z
        return images


def check_fits(generator: nn.Module, x: torch.Tensor) -> None:
    shape = tuple(getattr(generator, "shape", ()))
    if tuple(x.shape[1:]) != shape:
        raise BenchError(f"the generator makes images of shape {shape}, but the inputs have shape "
                         f"{tuple(x.shape[1:])}; use a GAN trained on this data set")


@register_defense("invert-and-classify")
class InvertAndClassify(Defense):
    summary = "Defense-GAN: project onto a WGAN-GP generator's range (L=200 steps, R=10 restarts), then classify"
    purifies = True
    differentiable = False  # an optimisation loop in the forward pass: adaptive attacks take BPDA
    optimises = True

    def __init__(self, steps: int = 200, restarts: int = 10, lr: float = 10.0, momentum: float = 0.7,
                 decay_at: float = 0.8, seed: int = 0, gan: str = "small", batch_size: int = 64) -> None:
        self.projection = Projection(steps, restarts, lr, momentum, decay_at, seed)
        self.size, self.batch_size = gan, positive_int("batch_size", batch_size)
        self.generator: nn.Module | None = None
        self.gan_key: str | None = None

    def prepare(self, ctx: DefenseContext) -> None:
        from benchmark.gan_training import get_gan

        gan, meta = get_gan(ctx.dataset, ctx.device, ctx.store, seed=0, size=self.size)
        self.use_generator(gan.generator, meta, ctx.dataset)

    def use_generator(self, generator: nn.Module, meta: dict[str, Any], dataset: Any) -> None:
        """Defend with this generator (refused when trained on another data set or image shape)."""
        from benchmark.gan_training import check_gan_fits

        check_gan_fits(meta, dataset)
        self.generator, self.gan_key = generator, meta["key"]

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        if self.generator is None:
            raise BenchError("invert-and-classify has no generator yet: prepare() (or use_generator()) loads one")
        out = [project(self.generator, x[i : i + self.batch_size], self.projection)[0]
               for i in range(0, len(x), self.batch_size)]
        return torch.cat(out)

    def bpda_forward(self) -> WarmStartProjection:
        """A fresh stand-in for :meth:`purify` in adaptive attacks' gradient steps (:class:`WarmStartProjection`)."""
        if self.generator is None:
            raise BenchError("invert-and-classify has no generator yet: prepare() (or use_generator()) loads one")
        return WarmStartProjection(self.generator, self.projection)

    def options(self) -> dict[str, Any]:
        return {**self.projection.as_dict(), "gan": self.size, "gan_key": self.gan_key}
