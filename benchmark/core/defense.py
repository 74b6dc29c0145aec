"""The defense interface.

A defense may have a training-time part (it changes how the classifier is trained: adversarial training, label
smoothing) and an inference-time part (it transforms the input before the classifier: squeezing, purification; or it
makes the decision itself from the classifier's answers: a vote over noisy copies, see :meth:`Defense.classify`).
Its traits are class data, read by the runner, the tests and the leaderboard alike. Defenses compose with ``+`` in the
order written (``adv-fgsm+feature-squeezing``): at most one training part, purifiers applied left to right, at most
one part that classifies.

A randomised defense draws from :func:`draw_generator`: the harness seeds torch's global generator before every batch,
so its draws repeat for a seed and differ between calls (independent draws, EOT).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.errors import BenchError
from benchmark.core.options import Option


def rows_near(x: torch.Tensor, previous: torch.Tensor | None, reach: float) -> torch.Tensor:
    """For a ``bpda_forward`` stand-in that keeps state per row: which rows of x (N,) are within ``reach``
    (L-infinity) of the same row at its previous call, i.e. the same input moved by an attack step. No row is when
    there was no previous call or it had another shape (a new batch)."""
    if previous is None or previous.shape != x.shape:
        return torch.zeros(len(x), dtype=torch.bool, device=x.device)
    return (x - previous).flatten(1).abs().amax(1) <= reach


@dataclass(frozen=True)
class DefenseContext:
    """What a defense may use to prepare itself: the data set, the trained classifier, the device and the store."""

    dataset: Any  # benchmark.data.dataset.Dataset
    classifier: nn.Module
    device: torch.device
    store: Any  # benchmark.store.model_store.ModelStore
    seed: int


class Defense:
    """Base class. Override :meth:`training_loss` (training part) and/or :meth:`purify` (inference part).

    A non-differentiable purifier may also define ``bpda_surrogate(self, x) -> Tensor``: a differentiable
    approximation of :meth:`purify` whose gradient adaptive attacks use instead (BPDA; see :mod:`attacks.adaptive`).
    Without one they take the identity's gradient (straight-through). A purifier that solves an optimisation per input
    may define ``bpda_forward(self)``, returning a fresh callable that stands in for :meth:`purify`'s forward pass in
    those gradient steps (cheaper, and free to keep state across the steps of one attack, e.g. warm starts).

    A defense that makes the decision itself (``classifies``) overrides :meth:`classify`; it may define
    ``classify_surrogate(self, classifier, x) -> Tensor``, differentiable logits that adaptive attacks take gradients
    of instead (e.g. the classifier at one random point where the decision is a vote over many).
    """

    name: str = ""  # the registered name (a configured instance: its canonical spelling, benchmark.core.options)
    summary: ClassVar[str] = ""
    OPTIONS: ClassVar[tuple[Option, ...]] = ()  # what the constructor accepts (benchmark.core.options)
    trains_classifier: ClassVar[bool] = False  # has a training-time part
    purifies: ClassVar[bool] = False  # has an inference-time part
    differentiable: ClassVar[bool] = True  # the inference part (purify, or classify) passes useful gradients
    randomised: ClassVar[bool] = False  # the inference part draws random numbers
    detects: ClassVar[bool] = False  # offers detection scores (higher = more suspicious)
    classifies: ClassVar[bool] = False  # the inference part makes the decision itself (see classify)
    optimises: ClassVar[bool] = False  # the inference part solves an optimisation problem per input (a sanity check)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # the constructor's arguments, kept so that an instance configured in Python is named in records by its
        # canonical spelling, as the same setting given on the command line (benchmark.api.naming)
        obj = super().__new__(cls)
        obj._given = (args, kwargs)
        return obj

    @classmethod
    def describe(cls) -> dict[str, str]:
        return {"kind": "defense", "traits": _traits(cls), "summary": cls.summary}

    def traits(self) -> str:
        """The declared traits of this instance (a composition derives its own from its parts)."""
        return _traits(self)

    # -- training-time part ---------------------------------------------------------------------------------------
    def training_config(self, dataset: Any) -> dict[str, Any] | None:
        """The parameters of the training-time part for ``dataset`` (part of the classifier's store key, and passed
        back to :meth:`training_loss`); None for standard training."""
        return None

    def training_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: dict[str, Any] | None
                      ) -> torch.Tensor:
        """The loss minimised on one training batch (x in [0, 1], NCHW). Standard: cross-entropy."""
        return F.cross_entropy(model(x), y)

    # -- inference-time part --------------------------------------------------------------------------------------
    def prepare(self, ctx: DefenseContext) -> None:
        """Fit or load what the inference part needs (thresholds, generative models). Called once per classifier."""

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        """Transform a batch of inputs (N, C, H, W) in [0, 1]; same shape and range out."""
        return x

    def classify(self, classifier: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Scores (N, K) whose arg max is the defended decision on ``x`` (already purified). Default: the classifier's
        logits; a defense that ``classifies`` decides otherwise (e.g. a majority vote)."""
        return classifier(x)

    def detect(self, x: torch.Tensor, classifier: nn.Module) -> torch.Tensor | None:
        """Per-input booleans: flagged as adversarial by the defense's calibrated detector; None if it has none."""
        return None

    def options(self) -> dict[str, Any]:
        """Parameters that change the defense's output (recorded with every result)."""
        return {}


class ComposedDefense(Defense):
    """``a+b+c``: the training part of the one part that has it, purifiers applied in the order written."""

    def __init__(self, parts: list[Defense]) -> None:
        trainers = [p for p in parts if p.trains_classifier]
        if len(trainers) > 1:
            raise BenchError(
                f"defense {'+'.join(p.name for p in parts)!r} combines two training-time defenses "
                f"({', '.join(p.name for p in trainers)}); a classifier is trained one way"
            )
        deciders = [p for p in parts if p.classifies]
        if len(deciders) > 1:
            raise BenchError(
                f"defense {'+'.join(p.name for p in parts)!r} combines two defenses that make the decision "
                f"({', '.join(p.name for p in deciders)}); an input is classified one way"
            )
        self.parts = parts
        self.name = "+".join(p.name for p in parts)
        self.trains_classifier = bool(trainers)
        self.purifies = any(p.purifies for p in parts)
        self.differentiable = all(p.differentiable for p in parts if p.purifies or p.classifies)
        self.randomised = any(p.randomised for p in parts)
        self.detects = any(p.detects for p in parts)
        self.classifies = bool(deciders)
        self._trainer = trainers[0] if trainers else None
        self.decider = deciders[0] if deciders else None

    def training_config(self, dataset: Any) -> dict[str, Any] | None:
        return self._trainer.training_config(dataset) if self._trainer else None

    def training_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: dict[str, Any] | None
                      ) -> torch.Tensor:
        if self._trainer is None:
            return super().training_loss(model, x, y, config)
        return self._trainer.training_loss(model, x, y, config)

    def prepare(self, ctx: DefenseContext) -> None:
        for p in self.parts:
            p.prepare(ctx)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        for p in self.parts:
            if p.purifies:
                x = p.purify(x)
        return x

    def classify(self, classifier: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self.decider.classify(classifier, x) if self.decider else classifier(x)

    def detect(self, x: torch.Tensor, classifier: nn.Module) -> torch.Tensor | None:
        flags = [f for p in self.parts if (f := p.detect(x, classifier)) is not None]
        return torch.stack(flags).any(0) if flags else None

    def options(self) -> dict[str, Any]:
        return {p.name: p.options() for p in self.parts}


def _traits(obj: Any) -> str:
    traits = [t for t in ("trains_classifier", "purifies", "classifies", "detects", "randomised") if getattr(obj, t)]
    if obj.purifies or obj.classifies:
        traits.append("differentiable" if obj.differentiable else "non-differentiable")
    return ", ".join(t.replace("_", "-") for t in traits) or "-"


def draw_generator(device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for one call of a randomised defense on ``device``, seeded from torch's global generator (which the
    harness seeds per batch: :func:`benchmark.engine.runner.defended_predictions`). Same seed, same draws; the next call
    (another EOT or evaluation draw) gets a new seed."""
    seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    return torch.Generator(device=device).manual_seed(seed)


def build_defense(spec: str) -> Defense:
    """A defense instance from a registered name, a name with options (``jpeg(quality=50)``) or a ``+`` composition of
    them (``adv-fgsm+feature-squeezing(bits=4)``)."""
    from benchmark.core.options import split_top
    from benchmark.core.registry import DEFENSES

    parts = [DEFENSES.build(part.strip()) for part in split_top(spec, "+")]
    return parts[0] if len(parts) == 1 else ComposedDefense(parts)
