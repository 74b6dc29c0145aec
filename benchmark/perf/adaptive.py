"""``bench perf adaptive``: what one step of an adaptive gradient attack costs per defense.

One step is one forward and one backward pass of the loss through the defended pipeline as the adaptive attacker
takes it (:class:`attacks.adaptive.DefendedModel`: real gradients, BPDA, EOT with the default number of draws), on a
batch of clean test points. Reported in milliseconds per image per step, with how the pipeline is differentiated, so
that the cost of a whole attack is (steps x restarts x images) times it: BPDA on PixelDefend purifies once per step
(a randomised defense: once per EOT draw) and so relies on the fast purifier. The first step is not counted: it warms
caches up, and a stand-in for a purifier's forward pass (``bpda_forward``) runs the real purifier there. The mean of
the next ``steps`` is reported, so that a stand-in that refreshes now and then (the deep image prior's: one fit every
10 steps) is charged as an attack pays for it. A defense with a stand-in gets a second row without it
(``--real-forward`` in ``bench run``), measured in the same run.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from benchmark.core.defense import DefenseContext, build_defense
from benchmark.core.device import resolve_device
from benchmark.data.dataset import load_dataset
from benchmark.engine.threats import ThreatOptions
from benchmark.perf.timing import timed
from benchmark.store.model_store import ModelStore
from benchmark.training.zoo import get_classifier


def adaptive_step_cost(dataset_name: str, model_name: str, defenses: Sequence[str], n: int = 32, steps: int = 10,
                       device: str = "auto", seed: int = 0) -> list[dict[str, Any]]:
    from attacks.adaptive import DefendedModel, gradient_modes

    dev = resolve_device(device)
    store = ModelStore()
    dataset = load_dataset(dataset_name)
    points = dataset.test_points(n)
    x, y = points.x.to(dev), points.y.to(dev)
    eot = ThreatOptions().eot_samples
    rows = []
    for name in defenses:
        defense = build_defense(name)
        classifier, _ = get_classifier(dataset, model_name, defense, seed, dev, store)
        defense.prepare(DefenseContext(dataset, classifier, dev, store, seed))
        models = [DefendedModel(classifier, defense, eot).eval()]
        if models[0].bpda_forwards():
            models.append(DefendedModel(classifier, defense, eot, stand_ins=False).eval())
        for model in models:
            step = _mean_step(model, x, y, steps, seed, dev)
            rows.append({"dataset": dataset_name, "model": model_name, "defense": name,
                         "gradients": ", ".join(f"{k}: {v}" for k, v in gradient_modes(defense).items()) or "exact",
                         "eot_samples": model.eot_samples, "n": n, "ms_per_image_step": round(1000 * step / n, 3),
                         "torch_threads": torch.get_num_threads(),
                         "bpda_forward": "; ".join(f"{k}: {v}" for k, v in model.bpda_forwards().items())
                         or ("-" if model is models[0] else "real (--real-forward)")})
    return rows


def _mean_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int,
               dev: torch.device) -> float:
    """Seconds per step, the mean over ``steps`` after one that is not counted; the input moves a little each step, as
    an attack's does (a stand-in that follows small moves must not see the same input twice)."""
    torch.manual_seed(seed)
    times = []
    xi = x.clone()
    for _ in range(steps + 1):
        xi = xi.detach().requires_grad_(True)
        seconds, (grad,) = timed(lambda xi=xi: torch.autograd.grad(F.cross_entropy(model(xi), y), xi), dev)
        times.append(seconds)
        xi = (xi + grad.sign() / 255).clamp(0, 1)
    return sum(times[1:]) / steps
