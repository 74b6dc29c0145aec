"""Box-constrained L-BFGS, the first adversarial attack (Szegedy et al. 2014, https://arxiv.org/abs/1312.6199).

For each image ``x`` with label ``y`` the attack solves

    minimise  c * ||delta||_2^2 + CE(model(x + delta), t)   subject to  0 <= x + delta <= 1

with L-BFGS-B, where ``t`` is the runner-up class (the most likely class other than ``y``, the default of foolbox 1's
LBFGSAttack when no target is given). The constant ``c`` trades the size of the perturbation against reaching ``t``:
the larger ``c``, the smaller the perturbation, until the optimum stops being adversarial. The paper's line search
looks for the largest ``c`` whose optimum still fools the model; we run it per image: start at ``initial_const``,
multiply by 10 while the optimum fools the model (divide by 10 while it does not) until the boundary is bracketed,
then bisect in log space, for ``search_steps`` optimisations in all. Each image keeps the adversarial input (argmax
!= y, re-checked with a forward pass) of smallest L2 found in any round; where none was found it gets ``x`` back.

The first optimisation starts from ``x``. With ``warm_start`` (the default) each later one starts from the previous
optimum rather than from ``x`` again: neighbouring constants have nearby minimisers, so a few iterations suffice. On
an MNIST ResNet this found smaller perturbations at a third of the cost of cold starts with twice the iterations.

The objective is separable across images, so each round is one L-BFGS-B run over the whole batch's inputs as one flat
vector (the sum of the per-image objectives, each with its own ``c``): one forward and backward pass of the batch per
function evaluation. scipy works in float64, the model in float32.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import Bounds, minimize
from torch import nn

from benchmark.core.attack import PAPER, Attack
from benchmark.core.options import Option
from benchmark.core.registry import register_attack
from benchmark.core.vocab import AttackKind, Norm


def _runner_up(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The most likely class other than the true one."""
    masked = logits.clone()
    masked[torch.arange(len(y)), y] = -torch.inf
    return masked.argmax(1)


@register_attack("lbfgs")
class LBFGS(Attack):
    summary = "box-constrained L-BFGS towards the runner-up class, line search over its constant (Szegedy et al. 2014)"
    groups = PAPER
    norm, kind, library = Norm.L2, AttackKind.MINIMAL, "defensebench"
    OPTIONS = (
        Option("initial_const", float, 1.0, "first constant c of the line search (weight of the squared L2 norm)",
               low=1e-6),
        Option("search_steps", int, 8, "L-BFGS-B optimisations in the line search over c", low=1),
        Option("maxiter", int, 30, "L-BFGS-B iterations per optimisation", low=1),
        Option("warm_start", bool, True, "start each optimisation from the previous optimum (false: from x)"),
    )

    def __init__(self, initial_const: float = 1.0, search_steps: int = 8, maxiter: int = 30,
                 warm_start: bool = True) -> None:
        super().__init__(initial_const=initial_const, search_steps=search_steps, maxiter=maxiter,
                         warm_start=warm_start)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | None) -> torch.Tensor:
        opts = self._options
        x = x.detach()
        device, shape = x.device, x.shape[1:]
        with torch.no_grad():
            logits = model(x)
        target = _runner_up(logits, y)
        best = x.clone()
        best_l2 = torch.full((len(x),), torch.inf, device=device)
        best_l2[logits.argmax(1) != y] = 0.0  # already misclassified: x itself is the smallest adversarial
        todo = torch.nonzero(best_l2 > 0).flatten()
        if len(todo) == 0:
            return best
        x0, y0, t0 = x[todo], y[todo], target[todo]
        x0_np = x0.detach().cpu().double().numpy().reshape(len(todo), -1)
        n = len(todo)

        def objective(z: np.ndarray, c: np.ndarray) -> tuple[float, np.ndarray]:
            # float64 for the norm term (keeps the line search stable), float32 autograd for the cross-entropy
            zz = z.reshape(n, -1)
            diff = zz - x0_np
            zt = torch.from_numpy(zz).float().to(device).view(n, *shape).requires_grad_(True)
            with torch.enable_grad():  # the harness may call us under no_grad
                ce = F.cross_entropy(model(zt), t0, reduction="sum")
                (grad,) = torch.autograd.grad(ce, zt)
            value = float((c * (diff**2).sum(1)).sum()) + float(ce.detach())
            gradient = 2 * c[:, None] * diff + grad.detach().cpu().double().numpy().reshape(n, -1)
            return value, gradient.ravel()

        c = np.full(n, float(opts["initial_const"]))
        c_succ = np.full(n, np.nan)  # largest c whose optimum fooled the model
        c_fail = np.full(n, np.nan)  # smallest c whose optimum did not
        box = Bounds(np.zeros(x0_np.size), np.ones(x0_np.size))
        start = x0_np.ravel()
        for _ in range(int(opts["search_steps"])):
            result = minimize(objective, start, args=(c,), jac=True, method="L-BFGS-B", bounds=box,
                              options={"maxiter": int(opts["maxiter"])})
            if opts["warm_start"]:
                start = result.x
            adv = torch.from_numpy(result.x).float().to(device).view(n, *shape)
            with torch.no_grad():
                fooled = (model(adv).argmax(1) != y0).cpu().numpy()
            l2 = (adv - x0).flatten(1).norm(dim=1)
            better = torch.from_numpy(fooled).to(device) & (l2 < best_l2[todo])
            best[todo[better]] = adv[better]
            best_l2[todo[better]] = l2[better]
            # line search: fooled -> more weight on the norm; not fooled -> less. Bisect in log space once bracketed.
            c_succ = np.where(fooled, np.fmax(c_succ, c), c_succ)
            c_fail = np.where(~fooled, np.fmin(c_fail, c), c_fail)
            c = np.where(np.isnan(c_fail), c * 10,
                         np.where(np.isnan(c_succ), c / 10, np.sqrt(c_succ * c_fail)))
        return best
