"""``bench diagnose``: how much of an attack's perturbation survives a purifier.

A purifier that maps every input near x back to (nearly) the same point undoes any perturbation smaller than its
reach, whatever the attacker's gradients: then a strong adaptive attack fails for a real reason, not because of
masked gradients. This measures it on the adversarial inputs of one attack (generated here, on the first n test
points): per budget, the share of perturbed sub-pixels that the purifier returns to the value it gives the clean
image ("undone"), the ratio of the L1 distance between the purified adversarial and purified clean inputs to the
L1 size of the perturbation ("surviving", 0 = all undone, 1 = passed through), the median over the points of the
perturbation's L-infinity size in 8-bit levels ("median_linf": a purifier that moves a sub-pixel by at most k levels
cannot undo more than k), and the defended accuracy. A first
row does the same for the clean points. Every row also names the class the defended pipeline predicts most and how
often: a pipeline that sends most inputs to one class (a classifier collapsed onto a catch-all class on the purifier's
outputs, say) shows it there, where accuracy alone only says that it is low. For a defense that projects onto a
generator's range, a further row gives the class the classifier predicts most on 1,000 of the generator's samples
G(z), z ~ N(0, I): whether the classifier, rather than the projection, sends the range to one class.

``bpda="soft"`` (adaptive threat, PixelDefend only) gives the attacker PixelDefend's smooth stand-in
(:func:`defenses.pixeldefend.soft_purify`) as its BPDA approximation instead of the identity: a check that the
identity's gradients are not what keeps the attack weak.
"""
from __future__ import annotations

from typing import Any

import torch

from benchmark.core.budgets import format_eps
from benchmark.core.defense import DefenseContext, build_defense
from benchmark.core.device import resolve_device
from benchmark.core.errors import BenchError
from benchmark.core.registry import ATTACKS
from benchmark.core.vocab import Threat
from benchmark.data.dataset import Dataset, load_dataset
from benchmark.engine.adversarial import generate
from benchmark.engine.cells import predict_all
from benchmark.engine.threats import ThreatOptions, adaptive_target
from benchmark.store.model_store import ModelStore
from benchmark.training.zoo import get_classifier


GENERATOR_SAMPLES = 1000


def _purified(defense, x: torch.Tensor, batch_size: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        return torch.cat([defense.purify(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def purification_survival(dataset_name: str, model_name: str, defense_name: str, attack_name: str,
                          eps: tuple[float, ...], n: int, threat: Threat, seed: int = 0, batch_size: int = 100,
                          device: str = "auto", data_root: str | None = None, bpda: str = "declared"
                          ) -> list[dict[str, Any]]:
    dev = resolve_device(device)
    store = ModelStore()
    dataset = load_dataset(dataset_name, data_root)
    points = dataset.test_points(n)
    defense = build_defense(defense_name)
    classifier, _ = get_classifier(dataset, model_name, defense, seed, dev, store)
    defense.prepare(DefenseContext(dataset, classifier, dev, store, seed))
    attack = ATTACKS.build(attack_name)
    target = classifier
    if bpda == "soft":
        _use_soft_surrogate(defense, threat)
    if threat == Threat.ADAPTIVE:
        target, _ = adaptive_target(classifier, defense, ThreatOptions(), attack)
    budgets = attack.budgets(eps)
    adv = generate(attack, target, points.x, points.y, budgets, seed, batch_size, dev)
    x = points.x.to(dev)
    clean = _purified(defense, x, batch_size, seed)
    common = {"dataset": dataset_name, "defense": defense_name, "attack": attack_name, "threat": threat.value,
              "bpda": bpda}
    rows = [{**common, "eps": "clean", "n": len(x), "perturbed_subpixels": 0.0, "undone": None, "surviving_l1": None,
             "median_linf": 0.0, **_predictions(classifier, clean, points.y, batch_size, dataset)}]
    generator = getattr(defense, "generator", None)
    if isinstance(generator, torch.nn.Module):
        samples = _generator_samples(generator, GENERATOR_SAMPLES, seed)
        predicted = _predictions(classifier, samples, None, batch_size, dataset)
        rows.append({**common, "eps": "generator samples", "n": GENERATOR_SAMPLES, "perturbed_subpixels": None,
                     "undone": None, "surviving_l1": None, "median_linf": None, **predicted})
    for e, xa in zip(budgets, adv.per_eps):
        xa = xa.to(dev)
        purified = _purified(defense, xa, batch_size, seed)
        moved = (xa - x).abs() > 1e-6
        undone = ((purified - clean).abs() <= 1e-6) & moved
        surviving = (purified - clean).abs().flatten(1).sum(1) / (xa - x).abs().flatten(1).sum(1).clamp_min(1e-12)
        rows.append({
            **common, "eps": format_eps(e), "n": len(x),
            "perturbed_subpixels": round(float(moved.float().mean()), 4),
            "undone": round(float(undone.sum() / moved.sum().clamp_min(1)), 4),
            "surviving_l1": round(float(surviving.mean()), 4),
            "median_linf": round(float((xa - x).abs().flatten(1).amax(1).median()) * 255, 1),
            **_predictions(classifier, purified, points.y, batch_size, dataset),
        })
    return rows


def _generator_samples(generator: torch.nn.Module, n: int, seed: int) -> torch.Tensor:
    """n images G(z), z ~ N(0, I) drawn from ``seed``."""
    device = next(generator.parameters()).device
    z = torch.randn(n, generator.latent, generator=torch.Generator().manual_seed(seed)).to(device)
    with torch.no_grad():
        return generator(z)


def _predictions(classifier, purified: torch.Tensor, y: torch.Tensor | None, batch_size: int,
                 dataset: Dataset) -> dict[str, Any]:
    """The defended accuracy on ``purified`` (None without labels) and the class predicted most often (by name where
    the data set has names), with its share."""
    predicted = predict_all(classifier, purified, batch_size, purified.device)
    counts = torch.bincount(predicted)
    top = int(counts.argmax())
    accuracy = None if y is None else round(float((predicted == y.to(predicted.device)).float().mean()), 4)
    share = float(counts[top]) / len(predicted)
    return {"defended_accuracy": accuracy, "most_predicted": f"{dataset.class_name(top)} ({share:.0%})"}


def _use_soft_surrogate(defense, threat: Threat) -> None:
    """Give every PixelDefend part of ``defense`` its smooth stand-in as the BPDA approximation (this run only)."""
    from defenses.pixeldefend import PixelDefend

    parts = [p for p in getattr(defense, "parts", [defense]) if isinstance(p, PixelDefend)]
    if threat != Threat.ADAPTIVE or not parts:
        raise BenchError("--bpda soft needs --threat adaptive and a PixelDefend defense (pixeldefend, "
                         f"adaptive-pixeldefend, ...), not --threat {threat.value} with {defense.name!r}")
    for part in parts:
        part.bpda_surrogate = part.soft_surrogate
