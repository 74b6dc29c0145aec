"""The attack interface.

An attack's norm and kind are class data (foolbox 3 style), read by the runner, the tests and the leaderboard. The goal
(the true labels to move away from) is an argument of the call; configuration is fixed at construction. Attacks are
never trusted: the harness re-checks bounds, budget, finiteness and the prediction of whatever :meth:`run` returns.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from benchmark.core.options import Option
from benchmark.core.vocab import AttackKind, Norm

# the thirteen attacks of the PixelDefend paper's tables and of its reproduction (pgd, cw-linf): `--attack paper`
PAPER = ("paper",)


class Attack:
    name: str = ""  # the registered name (a configured instance: its canonical spelling, benchmark.core.options)
    summary: ClassVar[str] = ""
    OPTIONS: ClassVar[tuple[Option, ...]] = ()  # what the constructor accepts (benchmark.core.options)
    norm: ClassVar[Norm] = Norm.LINF
    kind: ClassVar[AttackKind] = AttackKind.FIXED
    needs_gradients: ClassVar[bool] = True
    randomised: ClassVar[bool] = False
    # a gradient attack that also runs a gradient-free member (AutoAttack runs Square): it does as well as that black
    # box by construction, so it sits out the masked-gradient check (benchmark.engine.sanity) on either side
    runs_black_box: ClassVar[bool] = False
    # runs only on a defended pipeline (--threat adaptive) whose purifier projects onto a GAN generator
    needs_generator: ClassVar[bool] = False
    # how an adaptive attack that differentiates the defense's components itself (not through the pipeline's BPDA and
    # EOT wrapper) gets its gradients; recorded in place of the wrapper's modes. None: it uses the wrapper.
    own_gradients: ClassVar[str | None] = None
    library: ClassVar[str] = "defensebench"  # whose implementation runs: foolbox, torchattacks or ours
    groups: ClassVar[tuple[str, ...]] = ()  # named sets selectable like a name, e.g. --attack paper

    def __init__(self, **options: Any) -> None:
        self._options = dict(options)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # the constructor's arguments, kept so that an instance configured in Python is named in records by its
        # canonical spelling, as the same setting given on the command line (benchmark.api.naming)
        obj = super().__new__(cls)
        obj._given = (args, kwargs)
        return obj

    @classmethod
    def describe(cls) -> dict[str, str]:
        traits = ["gradient" if cls.needs_gradients else "gradient-free"]
        if cls.runs_black_box:
            traits.append("runs a black box too")
        if cls.randomised:
            traits.append("randomised")
        if cls.needs_generator:
            traits.append("GAN defenses, adaptive only")
        return {"kind": cls.kind.value, "norm": cls.norm.value, "traits": ", ".join(traits),
                "groups": ", ".join(cls.groups), "implementation": cls.library, "summary": cls.summary}

    @classmethod
    def applies_to(cls, defense: Any, threat: Any) -> str | None:
        """Why this attack cannot run against ``defense`` (a Defense) under ``threat`` (a Threat), or None if it can.
        ``--attack all`` (or a group, or a wildcard) leaves such cells out; an attack named on its own still runs, and
        fails with that one line."""
        return None

    def options(self) -> dict[str, Any]:
        """The attack's parameters, recorded with every result."""
        return dict(self._options)

    def budgets(self, eps: tuple[float, ...]) -> tuple[float, ...]:
        """The budgets this attack runs at, in its own norm, given the run's L-infinity budgets ``eps``.

        Most attacks run at ``eps`` itself; one measured in another norm (pgd-l2) returns its own budgets, which its
        records then carry in ``config.eps`` and the harness checks in that norm.
        """
        return eps

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | None) -> torch.Tensor:
        """Adversarial inputs for ``x`` (N, C, H, W in [0, 1]) with true labels ``y``.

        ``model`` maps [0, 1] images to logits and is in eval mode. Fixed-eps attacks get ``eps`` (in their native
        norm); minimal attacks get None and return their smallest adversarial input, or ``x`` itself where they failed.
        Random draws come from torch's global generator, which the harness seeds per batch.
        """
        raise NotImplementedError
