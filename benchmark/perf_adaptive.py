"""``bench perf adaptive``: what one step of an adaptive gradient attack costs per defense.

One step is one forward and one backward pass of the loss through the defended pipeline as the adaptive attacker
takes it (:class:`attacks.adaptive.DefendedModel`: real gradients, BPDA, EOT with the default number of draws), on a
batch of clean test points. Reported in milliseconds per image per step, with how the pipeline is differentiated, so
that the cost of a whole attack is (steps x restarts x images) times it: BPDA on PixelDefend purifies once per step
(a randomised defense: once per EOT draw) and so relies on the fast purifier. The first step is not counted: it warms
caches up, and invert-and-classify's attacker projects in full only there (later steps start from the previous z*).
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .data import load_dataset
from .defense import DefenseContext, build_defense
from .device import resolve_device
from .store import ModelStore
from .threats import ThreatOptions
from .zoo import get_classifier


def adaptive_step_cost(dataset_name: str, model_name: str, defenses: Sequence[str], n: int = 32, steps: int = 3,
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
        model = DefendedModel(classifier, defense, eot).eval()
        torch.manual_seed(seed)
        times = []
        for _ in range(steps + 1):  # the first step warms caches up and is not counted
            xi = x.clone().requires_grad_(True)
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(xi), y)
            torch.autograd.grad(loss, xi)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        step = min(times[1:])
        rows.append({"dataset": dataset_name, "model": model_name, "defense": name,
                     "gradients": ", ".join(f"{k}: {v}" for k, v in gradient_modes(defense).items()) or "exact",
                     "eot_samples": model.eot_samples, "n": n, "ms_per_image_step": round(1000 * step / n, 3),
                     "torch_threads": torch.get_num_threads(),
                     "bpda_forward": "; ".join(f"{k}: {v}" for k, v in model.bpda_forwards().items()) or "-"})
    return rows
