"""The harness's own checks on every adversarial input and every defended output; attacks are never trusted.

Following foolbox 3 ("we don't really know what the attack returns"), whatever an attack returns is checked for
shape, finiteness, the [0, 1] box and its budget before it counts; predictions are always recomputed by the harness.
"""
from __future__ import annotations

import torch

from benchmark.core.budgets import format_eps
from benchmark.core.errors import CellFailed
from benchmark.core.vocab import Norm

# float32 rounding of x + eps may exceed eps by a few ulps; anything beyond this is a real violation
BUDGET_TOLERANCE = 1e-5


def norms(delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example L0 (changed sub-pixels), L2 and L-infinity sizes of a perturbation batch."""
    flat = delta.flatten(1)
    return {
        "l0": (flat.abs() > 1e-8).sum(1).float(),
        "l2": flat.norm(p=2, dim=1),
        "linf": flat.abs().amax(1),
    }


def check_adversarial(x: torch.Tensor, x_adv: torch.Tensor, norm: Norm | None, eps: float | None, who: str) -> None:
    """Raise CellFailed unless ``x_adv`` has x's shape, is finite, lies in [0, 1] and (when eps is given) within
    ``eps`` of ``x`` in ``norm``."""
    if x_adv.shape != x.shape:
        raise CellFailed(f"{who} returned shape {tuple(x_adv.shape)}, expected {tuple(x.shape)}")
    if not torch.isfinite(x_adv).all():
        bad = int((~torch.isfinite(x_adv)).flatten(1).any(1).sum())
        raise CellFailed(f"{who} returned non-finite values for {bad} input(s)")
    low, high = float(x_adv.min()), float(x_adv.max())
    if low < 0 or high > 1:
        raise CellFailed(f"{who} left the [0, 1] box (values from {low:.4g} to {high:.4g})")
    if eps is not None and norm is not None:
        size = norms(x_adv - x)[norm.value]
        worst = float(size.max()) if len(size) else 0.0
        if worst > eps * (1 + BUDGET_TOLERANCE) + BUDGET_TOLERANCE:
            over = int((size > eps * (1 + BUDGET_TOLERANCE) + BUDGET_TOLERANCE).sum())
            raise CellFailed(
                f"{who} exceeded its {norm.value} budget {format_eps(eps)} on {over} input(s) (largest {worst:.5g})"
            )


def check_defended(x: torch.Tensor, out: torch.Tensor, who: str) -> None:
    """A defense's output must keep the input's shape and stay finite (and in [0, 1])."""
    if out.shape != x.shape:
        raise CellFailed(f"defense {who} changed the input shape from {tuple(x.shape)} to {tuple(out.shape)}")
    if not torch.isfinite(out).all():
        bad = int((~torch.isfinite(out)).flatten(1).any(1).sum())
        raise CellFailed(f"defense {who} returned NaN or infinite values for {bad} input(s)")
    if float(out.min()) < -BUDGET_TOLERANCE or float(out.max()) > 1 + BUDGET_TOLERANCE:
        raise CellFailed(f"defense {who} returned values outside [0, 1]")


def project_linf(x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> torch.Tensor:
    """The paper's protocol for minimal attacks: clip the perturbation to the L-infinity ball, then to [0, 1]."""
    return (x + (x_adv - x).clamp(-eps, eps)).clamp(0.0, 1.0)
