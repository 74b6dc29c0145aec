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

from typing import Any

import torch
from torch import nn

from benchmark.core.defense import Defense, DefenseContext, rows_near
from benchmark.core.errors import BenchError
from benchmark.core.options import Option, positive_int
from benchmark.core.registry import register_defense
from benchmark.training.gan import PRESETS as GAN_SIZES
from models.projection import Projection, descend, project


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


@register_defense("invert-and-classify")
class InvertAndClassify(Defense):
    summary = "Defense-GAN: project onto a WGAN-GP generator's range (L=200 steps, R=10 restarts), then classify"
    purifies = True
    differentiable = False  # an optimisation loop in the forward pass: adaptive attacks take BPDA
    optimises = True
    OPTIONS = (
        Option("steps", int, 200, "gradient steps of the projection per start (L; Defense-GAN: 200)", low=1),
        Option("restarts", int, 10, "random starts of the projection, the best kept (R; Defense-GAN: 10)", low=1),
        Option("lr", float, 10.0, "learning rate of the projection's SGD, on the per-pixel mean squared error",
               low=1e-6),
        Option("momentum", float, 0.7, "momentum of the projection's SGD", low=0, high=0.99),
        Option("decay_at", float, 0.8, "share of the steps after which the learning rate falls tenfold",
               low=0.01, high=1),
        Option("seed", int, 0, "seed of the random starts (shared by every image)", low=0),
        Option("gan", str, "small", "the GAN preset whose generator projects (tiny trains in seconds, for tests)",
               choices=tuple(GAN_SIZES)),
        Option("batch_size", int, 64, "images projected at once: changes speed and memory only, not results", low=1,
               changes_results=False),
    )

    def __init__(self, steps: int = 200, restarts: int = 10, lr: float = 10.0, momentum: float = 0.7,
                 decay_at: float = 0.8, seed: int = 0, gan: str = "small", batch_size: int = 64) -> None:
        self.projection = Projection(steps, restarts, lr, momentum, decay_at, seed)
        self.size, self.batch_size = gan, positive_int("batch_size", batch_size)
        self.generator: nn.Module | None = None
        self.gan_key: str | None = None

    def prepare(self, ctx: DefenseContext) -> None:
        from benchmark.training.gan import get_gan

        gan, meta = get_gan(ctx.dataset, ctx.device, ctx.store, seed=0, size=self.size)
        self.use_generator(gan.generator, meta, ctx.dataset)

    def use_generator(self, generator: nn.Module, meta: dict[str, Any], dataset: Any) -> None:
        """Defend with this generator (refused when trained on another data set or image shape)."""
        from benchmark.training.gan import check_gan_fits

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
