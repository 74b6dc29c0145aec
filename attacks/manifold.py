"""The robust manifold paper's "overpowered" min-max attack on the generator's range (Ilyas et al., "The Robust
Manifold Defense", 2017, https://arxiv.org/abs/1712.09196, Section 3.1), as a test-time attack on a defense that
projects its input onto a GAN generator (``invert-and-classify``, ``invert-and-classify-robust``).

The paper bounds what any attacker can do to invert-and-classify: if x' near x fools it, then the projections
z* = P(x) and z' = P(x') have images G(z*), G(z') close to each other (triangle inequality) that the classifier tells
apart. Its attack therefore searches the generator's range directly, pairs (z, z') with G(z) close to G(z') and
KL(C(G(z)) || C(G(z'))) as large as possible, the constraint Lagrangified and ascended by a first-order method
(``defenses.robust_manifold.min_max_ascent``, which also trains ``invert-and-classify-robust``). It is overpowered
because it chooses the projection itself instead of an input.

On a test input x with true label y this attack:

1. projects x as the defense does (the defense's own generator and projection settings): z* with G(z*) = P(x);
2. holds z = z* and ascends over z' alone, from z* + 0.1 N(0, I) (as the training pairs start), the paper's objective
   KL(C(G(z*)) || C(G(z'))) - penalty * sum over pixels max(0, |G(z') - G(z*)| - eps): the paper's constraint, with
   the run's L-infinity budget eps in place of the paper's L2 eta, so that the move along the range fits the budget;
3. returns x + clip(G(z') - G(z*), -eps, eps), clipped to [0, 1]: the on-manifold move from the projection, applied
   to x itself. Within the budget by construction (the harness re-checks it). Its projection lands near G(z') when
   the move stays along the range; G(z') itself is usually not within eps of x, since a generator reconstructs an
   input only up to a residual larger than the usual budgets, which is why the move and not G(z') is returned.

It runs only where it makes sense: under ``--threat adaptive`` (the attacked model is the defended pipeline) against
a defense whose one purifier is a GAN projection; anywhere else the cell fails with one line saying so. White-box
(gradients of the generator and the classifier), randomised (the start of z'), fixed-eps L-infinity.

Defaults: 100 Adam steps of 0.05 (the training pairs' step size) and penalty 10 (the paper's Lagrangian weight in
``min_max_pairs``). Its cost is one projection of the batch (the defense's own, L x R generator passes) plus
100 generator and classifier passes: about what one defended forward pass costs.
"""
from __future__ import annotations

import torch

from attacks.projecting import projecting_defense, projection_applies_to
from benchmark.core.attack import Attack
from benchmark.core.options import Option
from benchmark.core.registry import register_attack
from benchmark.core.vocab import AttackKind, Norm
from benchmark.training.robust_manifold import min_max_ascent
from models.projection import project


@register_attack("min-max-manifold")
class MinMaxManifold(Attack):
    summary = ("the robust manifold paper's min-max attack: from the input's GAN projection, the on-manifold move "
               "within eps that the classifier tells apart most (Ilyas et al. 2017); GAN defenses, adaptive only")
    norm, kind, library = Norm.LINF, AttackKind.FIXED, "defensebench"
    randomised = True
    needs_generator = True
    own_gradients = "exact (generator and classifier)"  # it differentiates them itself, never the projection
    OPTIONS = (
        Option("steps", int, 100, "Adam steps of the ascent over z'", low=1),
        Option("lr", float, 0.05, "Adam step size (the training pairs' one)", low=1e-6),
        Option("penalty", float, 10.0, "weight of the excess over the budget (the paper's Lagrangian weight)", low=0),
        Option("start_noise", float, 0.1, "standard deviation of the noise added to z* to start z'", low=0),
    )

    @classmethod
    def applies_to(cls, defense, threat):
        return projection_applies_to(defense, threat)

    def __init__(self, steps: int = 100, lr: float = 0.05, penalty: float = 10.0, start_noise: float = 0.1) -> None:
        super().__init__(steps=steps, lr=lr, penalty=penalty, start_noise=start_noise)

    def run(self, model, x, y, eps):

        defense = projecting_defense(model, "min-max-manifold")
        generator, classifier, o = defense.generator, model.classifier, self._options
        with torch.no_grad():
            z_star = torch.cat([project(generator, x[i : i + defense.batch_size], defense.projection)[1]
                                for i in range(0, len(x), defense.batch_size)])
            home = generator(z_star)
        start = z_star + o["start_noise"] * torch.randn_like(z_star)

        def excess(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return ((b - a).abs() - eps).clamp(min=0).flatten(1).sum(1)

        _, z_adv = min_max_ascent(classifier, generator, z_star, start, excess, o["steps"], o["lr"], o["penalty"],
                                  hold_first=True)
        with torch.no_grad():
            move = (generator(z_adv) - home).clamp(-eps, eps)
        return (x + move).clamp(0, 1)
