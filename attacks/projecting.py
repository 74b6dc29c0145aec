"""What the attacks on a GAN projection defense (``invert-and-classify``, ``invert-and-classify-robust``) share: where
they run, the projecting purifier inside the defended pipeline they are handed, and the classifier's margin they
raise."""
from __future__ import annotations

import torch
from torch import nn

from benchmark.core.errors import CellFailed

GENERATOR_DEFENSES = "invert-and-classify or invert-and-classify-robust"


def margin(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Per row, the largest other logit minus the logit of ``label``: negative while ``label`` wins."""
    own = logits.gather(1, label[:, None])[:, 0]
    others = logits.scatter(1, label[:, None], float("-inf"))
    return others.amax(1) - own


def projection_applies_to(defense, threat) -> str | None:
    """Why an attack on a GAN projection cannot run against ``defense`` under ``threat``, or None when it can."""
    from attacks.adaptive import _parts
    from benchmark.core.vocab import Threat

    if threat != Threat.ADAPTIVE:
        return f"it attacks a GAN projection defense ({GENERATOR_DEFENSES}) under --threat adaptive only"
    if not any(hasattr(p, "projection") for p in _parts(defense)):
        return f"{defense.name!r} does not project onto a GAN ({GENERATOR_DEFENSES} do)"
    return None


def projecting_defense(model: nn.Module, attack: str):
    """The GAN projection the attacked pipeline applies, or a one-line CellFailed (naming ``attack``) saying why
    there is none."""
    from attacks.adaptive import DefendedModel, _parts

    usage = (f"{attack} attacks the generator of a GAN projection defense ({GENERATOR_DEFENSES}); "
             "run it with --threat adaptive against one of them")
    if not isinstance(model, DefendedModel):
        raise CellFailed(f"{usage} (here it was handed a bare classifier, not a defended pipeline)")
    purifiers = _parts(model.defense)
    projecting = [p for p in purifiers if getattr(p, "generator", None) is not None and hasattr(p, "projection")]
    if not projecting:
        raise CellFailed(f"{usage} (defense {model.defense.name!r} has no generator)")
    if len(purifiers) > 1:
        raise CellFailed(f"{usage}, with no other purifier (defense {model.defense.name!r} has "
                         f"{', '.join(p.name for p in purifiers)})")
    return projecting[0]
