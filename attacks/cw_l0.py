"""Carlini-Wagner L0 (Carlini and Wagner 2017, https://arxiv.org/abs/1608.04644, section V.B), ours, batched.

Neither foolbox 3 nor torchattacks has it. The attack shrinks the set of pixels it may change until the CW L2 attack
restricted to that set no longer succeeds, and returns the last success:

1. Run CW L2 (tanh space, Adam, the loss of :mod:`attacks.cw`) changing only the allowed pixels; the others stay
   exactly at ``x``. The constant starts at ``initial_const`` and is multiplied by ``const_factor`` while the fit
   finds no adversarial iterate, for at most ``const_steps`` fits; it then carries over to the next round.
2. If no fit succeeded, stop: the image keeps the last adversarial example found (or ``x`` if there was none).
3. Otherwise, with ``g`` the gradient of the margin ``Z_y - max_{j != y} Z_j`` at that adversarial example and
   ``delta`` its perturbation, score each allowed pixel by ``|sum over channels of delta| * sum over channels |g|``
   (how much the margin owes to it) and remove the lowest-scoring pixels from the allowed set, exactly as the
   reference code does: in increasing order of score, every pixel whose score is at most ``negligible`` and then one
   more, but no more than ``0.3 * sqrt(changed pixels)`` (at least one) per round.

Each round's fit starts where the previous adversarial example was (warm start, as the reference code does), with the
removed pixels back at ``x``. A pixel is all its channels: the reference's default (``independent_channels`` off).
Rounds run for every image still shrinking, as one batch; ``max_rounds`` bounds the total.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from benchmark.core.attack import Attack
from benchmark.core.options import Option
from benchmark.core.registry import register_attack
from benchmark.core.vocab import AttackKind, Norm

from .cw import _Adam, _margin, _to_image, _to_tanh_space, unsettled

_CHANGED = 1e-4  # the reference code's test for a pixel that changed


@register_attack("cw-l0")
class CarliniWagnerL0(Attack):
    summary = "Carlini-Wagner L0: CW L2 on a shrinking set of pixels, dropping those the margin owes least to"
    norm, kind, library = Norm.L0, AttackKind.MINIMAL, "defensebench"
    OPTIONS = (
        Option("steps", int, 50, "Adam steps per CW L2 fit", low=1),
        Option("stepsize", float, 0.1, "Adam step size, in tanh space", low=1e-6),
        Option("initial_const", float, 1.0, "first constant c of the fits", low=1e-6),
        Option("const_factor", float, 10.0, "factor that raises c after a fit that found nothing", low=1),
        Option("const_steps", int, 4, "fits per round, at growing c", low=1),
        Option("negligible", float, 0.01, "pixel score at or below which a pixel is dropped with the lowest", low=0),
        Option("max_rounds", int, 400, "rounds of shrinking the allowed pixels, at most", low=1),
    )

    def __init__(self, steps: int = 50, stepsize: float = 0.1, initial_const: float = 1.0, const_factor: float = 10.0,
                 const_steps: int = 4, negligible: float = 0.01, max_rounds: int = 400) -> None:
        super().__init__(steps=steps, stepsize=stepsize, initial_const=initial_const, const_factor=const_factor,
                         const_steps=const_steps, negligible=negligible, max_rounds=max_rounds)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | None) -> torch.Tensor:
        opts = self._options
        x = x.detach()
        best = x.clone()
        todo = unsettled(model, x, y, 0.0)
        if len(todo) == 0:
            return best
        x0, y0 = x[todo], y[todo]
        w0 = _to_tanh_space(x0)
        n = len(todo)
        allowed = torch.ones(n, 1, *x.shape[2:], dtype=torch.bool, device=x.device)
        delta = torch.zeros_like(x0)  # in tanh space, warm start of the next fit
        const = torch.full((n,), float(opts["initial_const"]), device=x.device)
        active = torch.ones(n, dtype=torch.bool, device=x.device)
        for _ in range(int(opts["max_rounds"])):
            idx = torch.nonzero(active).flatten()
            if len(idx) == 0:
                break
            found, adv, d, c = self._fit(model, x0[idx], y0[idx], w0[idx], delta[idx], allowed[idx], const[idx])
            const[idx], delta[idx] = c, d
            ok = idx[found]
            best[todo[ok]] = adv[found]
            active[idx[~found]] = False  # the allowed set got too small: the last success stands
            if len(ok):
                allowed[ok] &= ~self._to_remove(model, x0[ok], y0[ok], adv[found], allowed[ok])
                delta[ok] = torch.where(allowed[ok], delta[ok], 0.0)
                active[ok] &= allowed[ok].flatten(1).any(1)
        return best

    def _fit(self, model, x0, y0, w0, delta, allowed, const):
        """CW L2 on the allowed pixels (``w0``: ``x0`` in tanh space), raising the constant of images that found
        nothing. Returns per image whether an adversarial iterate turned up, the one of smallest L2, its tanh-space
        perturbation and the constant used."""
        opts = self._options
        found = torch.zeros(len(x0), dtype=torch.bool, device=x0.device)
        best_adv, best_delta = x0.clone(), delta.clone()
        best_l2 = torch.full((len(x0),), math.inf, device=x0.device)
        const = const.clone()
        for _ in range(int(opts["const_steps"])):
            pending = torch.nonzero(~found).flatten()
            if len(pending) == 0:
                break
            d_all = delta[pending].clone()
            adam = _Adam(d_all, float(opts["stepsize"]))
            c, mask, x_p, y_p, w_p = const[pending], allowed[pending], x0[pending], y0[pending], w0[pending]
            for _ in range(int(opts["steps"])):
                d = d_all.clone().requires_grad_(True)
                with torch.enable_grad():  # the harness may call us under no_grad
                    x_adv = torch.where(mask, _to_image(w_p + d), x_p)
                    margin = _margin(model(x_adv), y_p, 0.0)
                    loss = (c * margin.clamp(min=0)).sum() + (x_adv - x_p).flatten(1).square().sum()
                    (gradient,) = torch.autograd.grad(loss, d)
                d_all -= adam.step(gradient)
                is_adv = margin.detach() < 0
                l2 = (x_adv.detach() - x_p).flatten(1).norm(dim=1)
                better = is_adv & (l2 < best_l2[pending])
                where = pending[better]
                best_adv[where], best_delta[where], best_l2[where] = x_adv.detach()[better], d.detach()[better], l2[better]
                found[where] = True
            const[pending[~found[pending]]] *= float(opts["const_factor"])
        return found, best_adv, torch.where(found.view(-1, 1, 1, 1), best_delta, delta), const

    def _to_remove(self, model, x0, y0, adv, allowed) -> torch.Tensor:
        """The allowed pixels to fix at their clean value after a success (the reference code's rule)."""
        a = adv.clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(_margin(model(a), y0, 0.0).sum(), a)
        diff = adv - x0
        score = (diff.sum(1).abs() * g.abs().sum(1)).flatten(1)  # per pixel: channels together
        allowed_flat = allowed.flatten(1)
        score = torch.where(allowed_flat, score, math.inf)
        rank = score.argsort(1).argsort(1)  # 0 for the lowest score
        changed = (diff.abs().amax(1) > _CHANGED).flatten(1).sum(1).float()
        negligible = ((score <= float(self._options["negligible"])) & allowed_flat).sum(1)
        limit = (0.3 * changed.sqrt()).ceil().clamp(min=1)
        count = torch.minimum(negligible + 1, limit.long())
        return ((rank < count[:, None]) & allowed_flat).view_as(allowed)
