"""AutoAttack (Croce and Hein, ICML 2020, https://arxiv.org/abs/2003.01690) and its black-box member, the Square attack
(Andriushchenko et al., ECCV 2020, https://arxiv.org/abs/1912.00049), both as torchattacks implements them.

torchattacks reseeds torch's global generator from each attack's ``seed``; we draw that seed from the generator the
harness seeded for the batch, so results follow ``--seed`` and the batch as for every other attack. On a CPU AutoAttack
is slow where the model is robust (its later members run only on the examples the earlier ones did not fool).
"""
from __future__ import annotations

import torch

from benchmark.core.attack import Attack
from benchmark.core.options import Option
from benchmark.core.registry import register_attack
from benchmark.core.vocab import AttackKind, Norm


def _seed() -> int:
    return int(torch.randint(0, 2**31 - 1, ()))


@register_attack("autoattack")
class AutoAttack(Attack):
    summary = "AutoAttack: APGD-CE, APGD-T, FAB-T and Square, each on what the others left (Croce and Hein 2020)"
    norm, kind, library = Norm.LINF, AttackKind.FIXED, "torchattacks"
    randomised = True
    runs_black_box = True  # Square is its last member
    OPTIONS = (Option("version", str, "standard", "torchattacks' ensemble: standard (the RobustBench protocol), plus, "
                      "or rand (for randomised defenses)", choices=("standard", "plus", "rand")),)

    # 'standard' is the RobustBench protocol; 'rand' (APGD-CE and APGD-DLR with torchattacks' own EOT over 20 draws)
    # is meant for randomised defenses, but under --threat adaptive our model wrapper already averages their draws
    def __init__(self, version: str = "standard") -> None:
        super().__init__(version=version)

    def run(self, model, x, y, eps):
        import torchattacks

        with torch.no_grad():
            n_classes = int(model(x[:1]).shape[1])  # the data set's classes, read off the logits
        attack = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version=self._options["version"],
                                         n_classes=n_classes, seed=_seed())
        return attack(x, y)


@register_attack("square")
class Square(Attack):
    summary = "Square attack: random search over square patches on the margin loss, scores only (black box)"
    norm, kind, library = Norm.LINF, AttackKind.FIXED, "torchattacks"
    needs_gradients, randomised = False, True
    OPTIONS = (
        Option("n_queries", int, 5000, "model queries per image", low=1),
        Option("p_init", float, 0.8, "initial share of the image a square covers (halved on a schedule)",
               low=1e-6, high=1),
    )

    def __init__(self, n_queries: int = 5000, p_init: float = 0.8) -> None:
        super().__init__(n_queries=n_queries, p_init=p_init)

    def run(self, model, x, y, eps):
        import torchattacks

        attack = torchattacks.Square(model, norm="Linf", eps=eps, n_queries=self._options["n_queries"],
                                     p_init=self._options["p_init"], n_restarts=1, loss="margin", seed=_seed())
        return attack(x, y)
