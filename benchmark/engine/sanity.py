"""Sanity checks that an evaluation measured what it claims (Athalye, Carlini and Wagner 2018, section 3.1; Carlini
et al. 2019, "On Evaluating Adversarial Robustness", section 5): stored in every record, shown on the leaderboard.

Probed once per defense on a few clean test points (:func:`probe_defense`):

- ``randomness``: the pipeline (purified input; scores too for a defense that classifies) is run twice with one
  seed and once with another. A defense that declares itself
  deterministic must give identical outputs across seeds; one that declares itself randomised must differ across
  seeds (else its EOT and multi-draw evaluation are wasted and its trait is wrong); both must repeat for one seed.
  A randomised defense that gives the same output on every probe point is probed again on the midpoints of pairs of
  them: a random vote may be unanimous far from any decision boundary.
- ``optimises_in_forward``: the defense solves an optimisation problem per input, as declared (``optimises``) or
  observed (it calls autograd while purifying, as Defense-GAN's projection does). Gradients through such a step are
  those of an unrolled optimiser and unreliable: a defense differentiated through one is flagged; through BPDA it is
  only noted.
- ``gradients``: the input gradient of the cross-entropy loss through the pipeline as an adaptive attacker takes it
  (:class:`attacks.adaptive.DefendedModel`: real gradients, BPDA, EOT): the share of examples whose gradient is all
  zero, and of those with a NaN or infinite entry. Either one stops gradient attacks while proving nothing.

Checked per record from its own outcomes and attack (:func:`record_flags`), and across the records of a leaderboard row
(:func:`black_box_beats_white_box`): a gradient-free attack (Square) that does better than every gradient attack is the
classic sign of masked gradients. "Better" is paired and significant: on the same examples, it breaks more than each
gradient attack by more than chance would (McNemar's exact test, one-sided, p < 0.05 after Bonferroni's correction for
the several budgets at which it may lead). An attack that runs a black box among its members (AutoAttack ends with
Square) is on neither side: it matches that black box by construction, and as a gradient attack it would hide the very
lead the check looks for. Adversarial inputs outside their budget or box never reach a record
(:mod:`benchmark.engine.checks` fails the cell); a record stores the largest perturbation it saw per budget instead.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.defense import Defense

PROBE_POINTS = 16  # clean test points each probe uses: enough to see masking, cheap even for PixelDefend
ZERO_GRADIENT_LIMIT = 0.5  # flag when more than this share of examples has an all-zero input gradient
MASKING_ALPHA = 0.05  # a black box must beat every gradient attack at this one-sided significance to be flagged


@contextlib.contextmanager
def _count_gradient_calls() -> Iterator[list[int]]:
    """Count calls of torch.autograd.backward and torch.autograd.grad (Tensor.backward goes through the former)."""
    calls = [0]
    real_backward, real_grad = torch.autograd.backward, torch.autograd.grad

    def backward(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real_backward(*args, **kwargs)

    def grad(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real_grad(*args, **kwargs)

    torch.autograd.backward, torch.autograd.grad = backward, grad
    try:
        yield calls
    finally:
        torch.autograd.backward, torch.autograd.grad = real_backward, real_grad


def _purify(defense: Defense, x: torch.Tensor, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        return defense.purify(x) if defense.purifies else x


def _pipeline(classifier: nn.Module, defense: Defense, x: torch.Tensor, seed: int) -> torch.Tensor:
    """What the defense outputs: its purified input, and its scores too when it makes the decision itself."""
    purified = _purify(defense, x, seed)
    if not defense.classifies:
        return purified
    with torch.no_grad():
        return torch.cat([purified.flatten(1), defense.classify(classifier, purified)], 1)


def _seen_randomness(classifier: nn.Module, defense: Defense, x: torch.Tensor, seed: int) -> tuple[bool, bool]:
    """(observed: the output differs across seeds, repeatable: it is the same for one seed)."""
    first = _pipeline(classifier, defense, x, seed)
    again = _pipeline(classifier, defense, x, seed)
    other = _pipeline(classifier, defense, x, seed + 1)
    return not torch.equal(first, other), torch.equal(first, again)


def probe_randomness(classifier: nn.Module, defense: Defense, x: torch.Tensor, seed: int) -> dict[str, Any]:
    observed, repeatable = _seen_randomness(classifier, defense, x, seed)
    if defense.randomised and not observed:
        # A random vote can be unanimous on every clean point (region-based before a robust classifier). The
        # midpoints of pairs of probe points lie nearer a decision boundary, where a random decision shows.
        observed, repeatable_there = _seen_randomness(classifier, defense, 0.5 * (x + x.roll(1, 0)), seed)
        repeatable = repeatable and repeatable_there
    return {"declared": bool(defense.randomised), "observed": observed, "repeatable": repeatable}


def probe_optimisation(classifier: nn.Module, defense: Defense, x: torch.Tensor, seed: int) -> dict[str, bool]:
    """Declared (``optimises``, e.g. a closed-form iterative solver) or observed (autograd called while purifying),
    and whether adaptive attacks differentiate through it (unrolled optimisation: unreliable gradients) or use BPDA."""
    observed = False
    if defense.purifies or defense.classifies:
        with _count_gradient_calls() as calls:
            _pipeline(classifier, defense, x, seed)
        observed = calls[0] > 0
    return {"declared": bool(getattr(defense, "optimises", False)), "observed": observed,
            "differentiated": bool(defense.differentiable)}


def probe_gradients(classifier: nn.Module, defense: Defense, x: torch.Tensor, y: torch.Tensor, eot_samples: int,
                    seed: int) -> dict[str, float]:
    from attacks.adaptive import DefendedModel

    model = DefendedModel(classifier, defense, eot_samples).eval()
    torch.manual_seed(seed)
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y, reduction="sum")
        grad = torch.autograd.grad(loss, x, allow_unused=True)[0] if loss.requires_grad else None
    if grad is None:  # nothing connects the output to the input (a detached purifier declared differentiable)
        grad = torch.zeros_like(x)
    flat = grad.detach().flatten(1)
    nonfinite = ~torch.isfinite(flat).all(1)
    zero = (flat == 0).all(1)
    return {"zero": round(float(zero.float().mean()), 4), "nonfinite": round(float(nonfinite.float().mean()), 4)}


def probe_defense(classifier: nn.Module, defense: Defense, x: torch.Tensor, y: torch.Tensor, eot_samples: int,
                  seed: int) -> dict[str, Any]:
    """The per-defense part of every record's ``checks`` (see the module docstring); x, y: a few clean points."""
    x, y = x[:PROBE_POINTS], y[:PROBE_POINTS]
    return {
        "probe_points": len(x),
        "randomness": probe_randomness(classifier, defense, x, seed),
        "optimises_in_forward": probe_optimisation(classifier, defense, x, seed),
        "gradients": probe_gradients(classifier, defense, x, y, eot_samples, seed),
    }


def defense_flags(checks: dict[str, Any] | None) -> list[str]:
    """Short problem names from a record's ``checks`` (empty: nothing wrong), as the leaderboard shows them."""
    if not checks:
        return []
    flags = []
    rnd = checks.get("randomness") or {}
    if rnd.get("declared") is False and rnd.get("observed"):
        flags.append("random but declared deterministic")
    if rnd.get("declared") and rnd.get("observed") is False:
        flags.append("declared random, never varies")
    if rnd.get("repeatable") is False:
        flags.append("not repeatable for a seed")
    opt = checks.get("optimises_in_forward") or {}
    if opt.get("declared") or opt.get("observed"):
        # through BPDA it is handled; differentiated through, its gradients are those of an unrolled optimiser
        flags.append("optimises in forward" + (", differentiated through it" if opt.get("differentiated") else ""))
        if opt.get("observed") and not opt.get("declared"):
            flags.append("optimises in forward, not declared")
    grads = checks.get("gradients") or {}
    if grads.get("zero", 0) > ZERO_GRADIENT_LIMIT:
        flags.append(f"zero gradients ({round(100 * grads['zero'])}%)")
    if grads.get("nonfinite", 0) > 0:
        flags.append(f"NaN gradients ({round(100 * grads['nonfinite'])}%)")
    return flags


def paired_lead_p(black: Sequence[bool], white: Sequence[bool]) -> float:
    """One-sided p-value that the black-box attack breaks more of the same examples than the white-box one (per
    example: robust or not; records share their test order, so the shorter one's points are the common ones).
    McNemar's exact test: only the examples exactly one attack breaks say which is stronger, and if both are equally
    strong, each of those is the black box's with probability one half."""
    from scipy.stats import binomtest

    only_black = sum(1 for b, w in zip(black, white) if w and not b)
    only_white = sum(1 for b, w in zip(black, white) if b and not w)
    if only_black == 0:
        return 1.0
    return float(binomtest(only_black, only_black + only_white, 0.5, alternative="greater").pvalue)


AttackOutcome = tuple[str, Optional[bool], Sequence[Sequence[bool]]]  # name, masking_side, per budget: robust


def masking_side(attack: dict[str, Any]) -> Optional[bool]:
    """The side of :func:`black_box_beats_white_box` a record's ``attack`` is on: True a gradient attack, False a
    black box, None neither (unknown, or an ensemble with a black-box member: AutoAttack matches Square by
    construction)."""
    return None if attack.get("runs_black_box") else attack.get("needs_gradients")


def black_box_beats_white_box(attacks: Sequence[AttackOutcome]) -> list[tuple[str, float]]:
    """Gradient-free attacks that, at some budget, break significantly more examples than each gradient attack of the
    same row (:func:`paired_lead_p` below ``MASKING_ALPHA`` against every one), with that p-value: the largest over the
    gradient attacks (it must beat each), at the budget where it is smallest, times the number of budgets (Bonferroni:
    with k budgets, a lead somewhere is k chances at a fluke). A lead of one or two examples in a hundred is noise,
    not masked gradients."""
    white = [robust for _, side, robust in attacks if side]
    if not white:
        return []
    found = []
    for name, side, robust in attacks:
        if side is False:
            lead = min(max(paired_lead_p(robust[b], w[b]) for w in white) for b in range(len(robust)))
            p = min(1.0, lead * len(robust))
            if p < MASKING_ALPHA:
                found.append((name, p))
    return found


def largest_perturbations(x: torch.Tensor, per_eps: Sequence[torch.Tensor], norm: str) -> list[float]:
    """Per budget, the largest size (in ``norm``) of the adversarial inputs that were checked and counted."""
    from benchmark.engine.checks import norms

    return [round(float(norms(xa - x)[norm].max()) if len(x) else 0.0, 6) for xa in per_eps]
