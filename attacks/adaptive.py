"""The defended pipeline as one model, for adaptive attacks: BPDA and EOT (Athalye, Carlini and Wagner, ICML 2018,
"Obfuscated Gradients Give a False Sense of Security", https://arxiv.org/abs/1802.00420).

:class:`DefendedModel` maps [0, 1] images to the classifier's logits on the purified input, so every attack of the
registry becomes adaptive by being handed this wrapper as its ``model``: no attack's code is copied.

- Differentiable purifiers pass their real gradients.
- Non-differentiable ones (rounding, arg max) use BPDA: the forward pass is the real purifier, the backward pass goes
  through a differentiable approximation: the purifier's ``bpda_surrogate(x)`` where it defines one, else the identity
  (straight-through). A purifier that is an optimisation per input may offer ``bpda_forward()``: a fresh, stateful,
  cheaper stand-in for its forward pass while gradients are taken (invert-and-classify warm-starts its projection from
  the previous step's); predictions without gradients always run the real purifier.
- Randomised pipelines use EOT: while gradients are being taken, the logits are averaged over ``eot_samples``
  independent draws of the pipeline, so the gradient is that of the expected logits (exact EOT for margin losses
  such as CW's, which are linear in the logits; a close stand-in for cross-entropy). Without gradients (an attack
  checking success) one draw is made, as the deployed defense would.
- A defense that makes the decision itself (``classifies``: a vote) answers with its own scores without gradients;
  while gradients are taken, the logits of its ``classify_surrogate(classifier, x)`` stand in (EOT averages them), or
  else the classifier's own logits on x.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from benchmark.core.defense import ComposedDefense, Defense


class _StraightThrough(torch.autograd.Function):
    """Forward: ``real`` exactly; backward: the whole gradient goes to ``approx`` (x itself or a surrogate of it)."""

    @staticmethod
    def forward(ctx: Any, approx: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return real.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


Purifier = Callable[[torch.Tensor], torch.Tensor]


def bpda(purify: Purifier, x: torch.Tensor, surrogate: Purifier | None = None) -> torch.Tensor:
    """``purify(x)`` in the forward pass; in the backward pass the gradient of ``surrogate(x)`` (identity if None)."""
    with torch.no_grad():
        real = purify(x)
    approx = x if surrogate is None else surrogate(x)
    return _StraightThrough.apply(approx, real)


def _parts(defense: Defense) -> list[Defense]:
    """The purifiers of a defense in application order (a composition ``a+b`` has several, each handled alone)."""
    return [p for p in (defense.parts if isinstance(defense, ComposedDefense) else [defense]) if p.purifies]


def gradient_modes(defense: Defense) -> dict[str, str]:
    """How the adaptive attacker differentiates each purifier: ``exact``, ``bpda-surrogate`` or ``bpda-identity``."""
    def mode(part: Defense) -> str:
        if part.differentiable:
            return "exact"
        return "bpda-surrogate" if callable(getattr(part, "bpda_surrogate", None)) else "bpda-identity"

    modes = {p.name: mode(p) for p in _parts(defense)}
    decider = _decider(defense)
    if decider is not None:
        has_surrogate = callable(getattr(decider, "classify_surrogate", None))
        modes[decider.name] = "classify-surrogate" if has_surrogate else "classify-identity"
    return modes


def _bpda_forward(part: Defense) -> Any:
    make = getattr(part, "bpda_forward", None)
    return make() if callable(make) and not part.differentiable else None


def _decider(defense: Defense) -> Defense | None:
    """The part that makes the decision itself, if any."""
    if not defense.classifies:
        return None
    return defense.decider if isinstance(defense, ComposedDefense) else defense


class DefendedModel(nn.Module):
    """classifier(defense.purify(x)) with usable gradients (see the module's docstring); logits out, shape (N, K)."""

    def __init__(self, classifier: nn.Module, defense: Defense, eot_samples: int = 10, stand_ins: bool = True) -> None:
        super().__init__()
        if eot_samples < 1:
            raise ValueError(f"eot_samples must be at least 1, got {eot_samples}")
        self.classifier = classifier
        self.defense = defense
        # mirror the classifier's mode: attacks that restore the mode they found (torchattacks) must not switch the
        # classifier into training mode on leaving
        self.training = classifier.training
        # a deterministic pipeline gives the same gradient every draw: averaging would only cost time
        self.eot_samples = eot_samples if defense.randomised else 1
        # per purifier, the stand-in for its forward pass in gradient steps (the real purify where none is offered
        # or stand-ins are off)
        self._forwards = [_bpda_forward(part) if stand_ins else None for part in _parts(defense)]

    def bpda_forwards(self) -> dict[str, str]:
        """What stands in for each purifier's forward pass in gradient steps, where it is not the purifier itself."""
        return {part.name: forward.describe() for part, forward in zip(_parts(self.defense), self._forwards)
                if forward is not None}

    def _purify_differentiably(self, x: torch.Tensor) -> torch.Tensor:
        for part, forward in zip(_parts(self.defense), self._forwards):
            if part.differentiable:
                x = part.purify(x)
            else:
                x = bpda(forward or part.purify, x, getattr(part, "bpda_surrogate", None))
        return x

    def _classify_differentiably(self, x: torch.Tensor) -> torch.Tensor:
        decider = _decider(self.defense)
        surrogate = getattr(decider, "classify_surrogate", None)
        return surrogate(self.classifier, x) if callable(surrogate) else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and x.requires_grad):
            purified = self.defense.purify(x) if self.defense.purifies else x
            return self.defense.classify(self.classifier, purified)
        draws = [self._classify_differentiably(self._purify_differentiably(x)) for _ in range(self.eot_samples)]
        return draws[0] if len(draws) == 1 else torch.stack(draws).mean(0)
