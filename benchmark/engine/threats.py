"""What the attacker sees under each threat model (docs/design.md, "Threat models"), as the runner needs it.

- ``oblivious``: the undefended classifier. Adversarial inputs are shared by every defense on that classifier.
- ``adaptive``: the whole defended pipeline (:class:`attacks.adaptive.DefendedModel`: real gradients, BPDA, EOT),
  so the inputs are generated per defense. A randomised pipeline is evaluated over ``eval_draws`` draws and an
  example counts as correct only if every draw classifies it correctly (clean and adversarial alike).
- ``transfer``: a substitute classifier trained independently (the other architecture, the next seed, standard
  training); its adversarial inputs go to the defended pipeline and are shared by every defense.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from benchmark.core.attack import Attack
from benchmark.core.defense import Defense
from benchmark.core.vocab import Threat

# transfer: the substitute is the other built-in architecture; a plugin architecture is its own substitute
# the user's own classifier (any architecture) is attacked through the project's ResNet-style network
SUBSTITUTE_ARCH = {"resnet": "vgg", "vgg": "resnet", "user": "resnet"}


@dataclass(frozen=True)
class ThreatOptions:
    """Knobs of the adaptive threat model: the first two only matter for randomised defenses, the last only for
    purifiers that offer a cheaper stand-in for their forward pass in gradient steps (``bpda_forward``)."""

    eot_samples: int = 10  # draws of the pipeline averaged per gradient (EOT)
    eval_draws: int = 10  # draws per final evaluation (Croce et al. 2022: 10); robust only if right in all
    stand_ins: bool = True  # False: the real purifier in every gradient step (slow; checks what a stand-in costs)


def substitute_for(arch: str, seed: int) -> tuple[str, int]:
    """(architecture, seed) of the transfer substitute of a classifier ``arch`` trained with ``seed`` (``arch@weights``
    names a classifier with the user's weights, benchmark.training.zoo.user_model_name)."""
    if "@" in arch:
        arch = "user"
    return SUBSTITUTE_ARCH.get(arch, arch), seed + 1


def config_options(threat: Threat, arch: str, seed: int, options: ThreatOptions) -> dict[str, Any] | None:
    """What a record's id must depend on beyond the cell, per threat model (None for oblivious: ids stay as they
    were before other threat models existed)."""
    if threat == Threat.ADAPTIVE:
        ids = {"eot_samples": options.eot_samples, "eval_draws": options.eval_draws}
        # only when off, so that the ids of records made with stand-ins (the default) stay as they were
        return ids if options.stand_ins else {**ids, "bpda_forward": "real"}
    if threat == Threat.TRANSFER:
        sub_arch, sub_seed = substitute_for(arch, seed)
        return {"substitute": sub_arch, "substitute_seed": sub_seed}
    return None


def eval_draws(threat: Threat, defense: Defense, options: ThreatOptions) -> int:
    """Draws of the defended pipeline per evaluated input."""
    return options.eval_draws if threat == Threat.ADAPTIVE and defense.randomised else 1


def adaptive_target(classifier: nn.Module, defense: Defense, options: ThreatOptions, attack: Attack
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """The model an adaptive attack runs on, and how it differentiates the pipeline (recorded with the attack).

    A gradient-free attack queries the pipeline as deployed, one draw per query: it gets neither BPDA nor EOT."""
    from attacks.adaptive import DefendedModel, gradient_modes

    if not attack.needs_gradients:
        return DefendedModel(classifier, defense, 1).eval(), {"gradients": {}, "eot_samples": 1}
    model = DefendedModel(classifier, defense, options.eot_samples, stand_ins=options.stand_ins).eval()
    modes = gradient_modes(defense)
    forwards = model.bpda_forwards()
    if attack.own_gradients is not None:  # it never differentiates the purifiers, nor runs their stand-ins
        modes, forwards = {part: attack.own_gradients for part in modes}, {}
    recorded = {"gradients": modes, "eot_samples": model.eot_samples}
    if forwards:  # only where a purifier offers one, so that other records keep their ids and options
        recorded["bpda_forward"] = forwards
    return model, recorded
