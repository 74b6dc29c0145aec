"""``bench perf attacks``: attacks made cheaper, against the implementation and settings they replaced.

Weak attacks flatter every defense, so a faster attack counts only if it is not weaker. For each attack that was made
cheaper, the reference is what the benchmark ran before, built here directly from foolbox 3 with the old settings:

* ``cw``: foolbox's ``L2CarliniWagnerAttack``, 5 binary-search steps x 100 steps of 0.05, initial constant 0.1;
* ``deepfool``: foolbox's ``L2DeepFoolAttack``, 50 steps, overshoot 0.02, 10 candidates;
* ``gaussian-blur``: foolbox's ``GaussianBlurAttack``, 200 widths;
* ``fgm`` and ``uniform-noise``: foolbox's ``L2FastGradientAttack`` and ``LinfAdditiveUniformNoiseAttack`` called with
  the attack's whole sweep of budgets (foolbox runs every budget on the whole batch), the first success kept.

Both sides run through the same harness (:func:`benchmark.engine.adversarial.generate`: the same seeding, checks and
size bookkeeping) on the undefended mnist5k ResNet and the first ``n`` test points, interleaved, best of ``repeats``
for the time (:func:`benchmark.perf.timing.best_of`; no warm-up call by default: each side runs for seconds to
minutes). Reported per side: wall time, success (the harness's re-check, on the correctly classified points), the median
unclipped size of the successes in the attack's norm, and the undefended accuracy after projection into each budget
(what the grid reports). ``not_weaker`` holds when success is not lower, the median size is at most 2% larger and no
accuracy is higher.
"""
from __future__ import annotations

from typing import Any

import torch

from benchmark.core.attack import Attack
from benchmark.core.vocab import AttackKind
from benchmark.perf.timing import best_of

TOLERANCE = 0.02  # a median size up to 2% larger still counts as not weaker (run-to-run noise of the optimisers)


# what the benchmark ran before: foolbox 3's class, the settings it was given, and how it was called ("minimal": once,
# unbounded; "sweep": foolbox's __call__ with the attack's whole list of budgets, the first that fools kept)
REFERENCES: dict[str, tuple[str, dict[str, Any], str]] = {
    "cw": ("L2CarliniWagnerAttack",
           {"binary_search_steps": 5, "steps": 100, "stepsize": 0.05, "initial_const": 0.1, "confidence": 0.0},
           "minimal"),
    "deepfool": ("L2DeepFoolAttack", {"steps": 50, "overshoot": 0.02, "candidates": 10}, "minimal"),
    "gaussian-blur": ("GaussianBlurAttack", {"steps": 200, "distance": "l2"}, "minimal"),
    "fgm": ("L2FastGradientAttack", {}, "sweep"),
    "uniform-noise": ("LinfAdditiveUniformNoiseAttack", {}, "sweep"),
}


class _Reference(Attack):
    """foolbox's class with the old settings, under the new attack's name (so that seeding is identical) and traits."""

    def __init__(self, like: Attack, foolbox_class: str, settings: dict[str, Any], call: str) -> None:
        super().__init__(foolbox_class=foolbox_class, call=call, **settings)
        self.name, self.norm, self.kind, self.randomised = like.name, like.norm, like.kind, like.randomised
        self._like, self._class, self._settings, self._call = like, foolbox_class, settings, call

    def run(self, model, x, y, eps):
        import foolbox as fb

        from attacks.adapters import foolbox_minimal, foolbox_model

        assert self.kind == AttackKind.MINIMAL
        settings = {k: getattr(fb.distances, v) if k == "distance" else v for k, v in self._settings.items()}
        attack = getattr(fb.attacks, self._class)(**settings)
        if self._call == "minimal":
            return foolbox_minimal(attack, model, x, y)
        _, clipped, success = attack(foolbox_model(model, x.device), x, y, epsilons=self._like.sweep_budgets(x))
        result = x.clone()
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for adv, ok in zip(clipped, success):  # budgets in increasing order: keep the first success
            take = ok & ~done
            result[take] = adv[take]
            done |= take
        return result


def _summary(adv, model, x: torch.Tensor, y: torch.Tensor, correct: torch.Tensor, size: str) -> dict[str, Any]:
    from benchmark.engine.adversarial import predict

    found = adv.unbounded["found"].bool() & correct
    sizes = adv.unbounded[size][found]
    accuracy = [float((predict(model, x_eps) == y).float().mean()) for x_eps in adv.per_eps]
    return {"success": float(found.sum()) / max(1, int(correct.sum())),
            "median": float(sizes.median()) if len(sizes) else float("inf"), "accuracy": accuracy}


def compare_attacks(names: tuple[str, ...] = tuple(REFERENCES), n: int = 100, repeats: int = 1,
                    device: str = "auto", warmup: int = 0) -> list[dict[str, Any]]:
    from benchmark.core.budgets import format_eps
    from benchmark.core.defense import build_defense
    from benchmark.core.device import resolve_device
    from benchmark.core.errors import BenchError
    from benchmark.core.registry import ATTACKS
    from benchmark.data.dataset import load_dataset
    from benchmark.engine.adversarial import generate, predict
    from benchmark.store.model_store import ModelStore
    from benchmark.training.zoo import get_classifier

    unknown = [a for a in names if a not in REFERENCES]
    if unknown:
        raise BenchError(f"no reference implementation for {', '.join(unknown)}; choose from {', '.join(REFERENCES)}")
    dev = resolve_device(device)
    data = load_dataset("mnist5k")
    model, _ = get_classifier(data, "resnet", build_defense("none"), 0, dev, ModelStore())
    x, y = data.test.x[:n], data.test.y[:n]
    eps = data.default_eps
    correct = predict(model, x.to(dev)).cpu() == y
    rows = []
    for name in names:
        new = ATTACKS.build(name)
        old = _Reference(new, *REFERENCES[name])
        size = "linf" if new.norm.value == "linf" else "l2"
        advs: dict[str, Any] = {}

        def side(label: str, attack: Attack, advs: dict[str, Any] = advs) -> Any:
            return lambda: advs.__setitem__(label, generate(attack, model, x, y, eps, 0, 250, dev))

        # interleaved, so that load from other processes hurts both sides alike
        times = best_of({"old": side("old", old), "new": side("new", new)}, repeats=repeats, warmup=warmup,
                        device=dev)
        results = {label: _summary(adv, model, x, y, correct, size) for label, adv in advs.items()}
        o, w = results["old"], results["new"]
        row: dict[str, Any] = {"attack": name, "n": n, "old_s": round(times["old"], 1), "new_s": round(times["new"], 1),
                               "speedup": round(times["old"] / times["new"], 2),
                               "old_success": round(o["success"], 3), "new_success": round(w["success"], 3),
                               "size": size, "old_median": round(o["median"], 4), "new_median": round(w["median"], 4)}
        for i, e in enumerate(eps):
            row[f"old_acc_{format_eps(e)}"] = round(o["accuracy"][i], 3)
            row[f"new_acc_{format_eps(e)}"] = round(w["accuracy"][i], 3)
        row["not_weaker"] = (w["success"] >= o["success"] and w["median"] <= o["median"] * (1 + TOLERANCE)
                             and all(a <= b for a, b in zip(w["accuracy"], o["accuracy"])))
        rows.append(row)
    return rows
