"""Deep image prior defense (Ilyas et al., "The Robust Manifold Defense", 2017, https://arxiv.org/abs/1712.09196,
Section 3.3): replace each input by the output of an untrained encoder-decoder fit to it for a fixed number of
iterations, then classify. Stopping early is the defense: fit for too long and the network reproduces the adversarial
noise too. The iteration count is tuned per data set on validation data (:mod:`benchmark.training.dip`).

Every image gets its own network, all initialised from the same seeded draw and fed the same seeded code, so an image's
output does not depend on the other images of its batch. The B networks are fit at once: their weights are stacked
along a leading axis and :meth:`models.dip.DIPNet.forward_stacked` runs them as grouped convolutions; Adam is
elementwise, so one Adam over the stacked weights is B independent Adams. :func:`fit_each` fits one plain network per
image, the speed benchmark's baseline, with the same outputs.
"""
from __future__ import annotations

from typing import Any

import torch

from benchmark.core.defense import Defense, DefenseContext, rows_near
from benchmark.core.errors import BenchError
from benchmark.core.options import Option, positive_int
from benchmark.core.registry import register_defense
from benchmark.training.dip import TUNED_ITERATIONS
from models.dip import DIPFit, fit_batched


class RefreshedFit:
    """The adaptive attacker's forward pass through the deep image prior (BPDA): one fit per image every ``refresh``
    gradient steps instead of one per step.

    A fit removes a part r = DIP(x) - x of its input. An iterative attack moves each input a little per step, so between
    fits this stand-in keeps each row's last r and returns x + r: the attack sees its own progress, and the part the
    prior removed is the one of a nearby input. A row gets a new fit at the first call, after ``refresh`` calls since
    its last fit, and whenever its input is farther than ``reach`` (L-infinity) from the one last fit (a new image).
    Only the attacker's gradients come from here: every prediction that counts (the attack's success checks without
    gradients, the harness's evaluation) runs the real fit, so a poor stand-in can only make the attack weaker, never
    count an input that the defense classifies correctly as broken. ``bench run --threat adaptive --real-forward``
    runs the real fit in every step instead, to check.
    """

    def __init__(self, cfg: DIPFit, batch_size: int, refresh: int = 10, reach: float = 0.5) -> None:
        self.cfg, self.batch_size = cfg, batch_size
        self.refresh, self.reach = positive_int("refresh", refresh), reach
        self._x: torch.Tensor | None = None  # per row: the input last fit
        self._removed: torch.Tensor | None = None  # per row: what that fit removed, DIP(x) - x
        self._age: torch.Tensor | None = None  # per row: calls since its last fit

    def describe(self) -> str:
        return (f"refreshed fit: a full fit every {self.refresh} steps (or for an input farther than {self.reach} "
                f"L-inf from the last one fit), in between the input plus what that fit removed")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        if self._x is None or self._x.shape != x.shape:  # a new batch: ages at `refresh` make every row stale
            self._x, self._removed = x.clone(), torch.zeros_like(x)
            self._age = torch.full((len(x),), self.refresh, dtype=torch.long, device=x.device)
        stale = ~rows_near(x, self._x, self.reach) | (self._age >= self.refresh)
        out = (x + self._removed).clamp(0, 1)
        if stale.any():
            rows = x[stale]
            fitted = fit_batched(rows, self.cfg, self.batch_size)
            self._x[stale], self._removed[stale], self._age[stale] = rows, fitted - rows, 0
            out[stale] = fitted  # exactly the fit (x + (fit - x) may round differently)
        self._age += 1
        return out


# Counts measured by `bench train dip --dataset NAME` (TUNED_ITERATIONS in benchmark/training/dip.py: the undefended
# ResNet, 250 validation images, FGSM at the largest default budget); a data set missing there is tuned on first use
# and cached.
# digits (100 validation images): clean 95%, FGSM 25/255 68% at 100 iterations (undefended: 98%, 61%).
# mnist5k, shipped ResNet (250 validation images): clean 98%, FGSM 25/255 72% at 150 (undefended: 98%, 52%).
# fashion-mnist, shipped ResNet (250 validation images): clean 85%, FGSM 25/255 17% at 400 iterations (undefended:
# 88%, 6%); 300 iterations score 83% and 18% there, a mean 0.5 points lower (a flat top; the rule takes 400).
# cifar10, shipped ResNet (250 validation images, every class): clean 33%, FGSM 16/255 26% at 400 iterations
# (undefended: 94%, 6%), still rising at the last count tried (28% and 25% at 300; 17% and 17% at 100): the
# small network fits a colour image slowly, so the prior costs most of the clean accuracy within this range.


@register_defense("deep-image-prior")
class DeepImagePrior(Defense):
    summary = "deep image prior: an untrained encoder-decoder fit to each input, stopped early (Ilyas et al. 2017)"
    purifies = True
    differentiable = False  # an optimisation loop in the forward pass: adaptive attacks take BPDA
    optimises = True
    OPTIONS = (
        Option("iterations", int, None, "fitting iterations per image; none: the count tuned per data set on "
               "validation data (stored, or tuned on first use)", low=1, none_ok=True),
        Option("lr", float, 0.001, "Adam learning rate of the fit", low=1e-6),
        Option("width", int, 32, "channels of the encoder-decoder", low=1),
        Option("seed", int, 0, "seed of the networks' shared initial weights and input code", low=0),
        Option("batch_size", int, 64, "images fit at once: changes speed and memory only, not results", low=1,
               changes_results=False),
    )

    def __init__(self, iterations: int | None = None, lr: float = 0.001, width: int = 32, seed: int = 0,
                 batch_size: int = 64) -> None:
        if iterations is not None:
            positive_int("iterations", iterations)
        DIPFit(iterations or 1, lr, width, seed)  # checks the options now, not at the first batch
        self.iterations, self.lr, self.width, self.seed = iterations, lr, width, seed
        self.batch_size = positive_int("batch_size", batch_size)
        self.tuning: dict[str, Any] | None = None

    def prepare(self, ctx: DefenseContext) -> None:
        if self.iterations is not None:
            return
        if ctx.dataset.name in TUNED_ITERATIONS and (self.lr, self.width, self.seed) == (0.001, 32, 0):
            self.iterations = TUNED_ITERATIONS[ctx.dataset.name]
            self.tuning = {"source": "TUNED_ITERATIONS (bench train dip)", "dataset": ctx.dataset.name}
            return
        from benchmark.training.dip import tuned_iterations

        self.tuning = tuned_iterations(ctx.dataset, ctx.classifier, ctx.device, lr=self.lr, width=self.width,
                                       seed=self.seed)
        self.iterations = self.tuning["iterations"]

    def config(self) -> DIPFit:
        if self.iterations is None:
            raise BenchError("deep-image-prior has no iteration count yet: pass iterations= or prepare() tunes one")
        return DIPFit(self.iterations, self.lr, self.width, self.seed)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return fit_batched(x, self.config(), self.batch_size)

    def bpda_forward(self) -> RefreshedFit:
        """A fresh stand-in for :meth:`purify` in adaptive attacks' gradient steps (see :class:`RefreshedFit`)."""
        return RefreshedFit(self.config(), self.batch_size)

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"iterations": self.iterations, "lr": self.lr, "width": self.width, "seed": self.seed}
        if self.tuning is not None:
            opts["tuned_on"] = {k: v for k, v in self.tuning.items() if k != "iterations"}
        return opts
