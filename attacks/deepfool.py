"""foolbox 3's DeepFool, made to stop spending on examples that are already adversarial (same outputs, less work).

foolbox's ``L2DeepFoolAttack`` steps the whole batch until every example is adversarial, and each step costs
``candidates - 1`` forward and backward passes of the whole batch, although an adversarial example is frozen (its input
no longer changes). The subclass here overrides only ``run`` (foolbox's final ``__call__`` still re-checks what it
returns): a step runs only the examples that were not adversarial at the previous step, with one forward pass and
``candidates - 1`` backward passes through it (foolbox's own note: "we could avoid repeated forward passes"). The
outputs are foolbox's up to float rounding (largest difference 6e-8 on 100 mnist5k points, at a quarter of the time):
84 of those points were left after the first step and none after 20, of 50 allowed.

Untargeted misclassification only, which is what the benchmark asks of it. (Salt and pepper was measured for the same
kind of waste: 90% of its draws are closer than the example's best so far, so skipping the model on the others, the
TODO in foolbox's source, would save a tenth of its model calls; it stays foolbox's own.)
"""
from __future__ import annotations

import functools
from typing import Any

import torch


def _labels(criterion: Any) -> torch.Tensor:
    import foolbox as fb

    if not isinstance(criterion, fb.criteria.Misclassification):
        raise ValueError(f"expected an untargeted Misclassification criterion, got {type(criterion).__name__}")
    return criterion.labels.raw



@functools.cache
def deepfool_l2() -> type:
    """foolbox's ``L2DeepFoolAttack`` with a shrinking batch and one forward pass per step."""
    import eagerpy as ep
    import foolbox as fb
    from foolbox.attacks.base import get_criterion, raise_if_kwargs, verify_input_bounds

    class ActiveL2DeepFool(fb.attacks.L2DeepFoolAttack):
        def run(self, model, inputs, criterion, *, early_stop=None, **kwargs):
            raise_if_kwargs(kwargs)
            x0_, restore_type = ep.astensor_(inputs)
            verify_input_bounds(x0_, model)
            labels = _labels(get_criterion(criterion))
            if self.loss != "logits":
                raise ValueError(f"only the logits loss is supported, got {self.loss!r}")
            x0 = x0_.raw
            min_, max_ = model.bounds
            with torch.no_grad():
                logits = model(x0)
            n_classes = logits.shape[-1]
            candidates = n_classes if self.candidates is None else min(self.candidates, n_classes)
            if candidates < 2:
                raise ValueError(f"expected the model output to have at least 2 classes, got {n_classes}")
            classes = logits.argsort(dim=-1).flip(-1)[:, :candidates]  # foolbox's order, ties included
            x = x0.clone()
            p_total = torch.zeros_like(x0)
            active = torch.arange(len(x0), device=x0.device)
            for _ in range(self.steps):
                xi = x[active].requires_grad_(True)
                with torch.enable_grad():
                    logits = model(xi)
                    todo = logits.argmax(-1) == labels[active]  # not adversarial yet: these take a step
                    if not bool(todo.any()):
                        break
                    top = classes[active]
                    losses = logits.gather(1, top[:, 1:]) - logits.gather(1, top[:, :1])  # (n, candidates - 1)
                    grads = torch.stack([
                        torch.autograd.grad(losses[:, k].sum(), xi, retain_graph=k < candidates - 2)[0]
                        for k in range(candidates - 1)
                    ], dim=1)
                losses = losses.detach()
                # foolbox's own formulas from here on
                distances = self.get_distances(ep.astensor(losses), ep.astensor(grads)).raw
                rows = torch.arange(len(active), device=x0.device)
                best = distances.argmin(dim=1)
                distances = distances[rows, best] + 1e-4  # foolbox: "for numerical stability"
                p_step = self.get_perturbations(ep.astensor(distances), ep.astensor(grads[rows, best])).raw
                active = active[todo]
                p_total[active] += p_step[todo]
                x[active] = (x0[active] + (1.0 + self.overshoot) * p_total[active]).clamp(min_, max_)
            return restore_type(ep.astensor(x))

    return ActiveL2DeepFool

