"""``bench perf network``: one forward and backward pass of a stored classifier, batch norms folded or not.

Every gradient attack step is such a pass (the loss's gradient with respect to the input), so this is the ratio by
which folding (:func:`benchmark.training.zoo.fold_batch_norm`) speeds up the attacks. Both versions run on the same
batch of test points, interleaved (:func:`benchmark.perf.timing.best_of`, one untimed round first), and the fastest
of ``steps`` passes is reported for each. The outputs and input gradients of the two are compared too: folding
changes the order of floating-point operations, not the function.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from benchmark.perf.timing import best_of


def _pass(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xi = x.clone().requires_grad_(True)
    logits = model(xi)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), xi)
    return logits.detach(), grad


def network_step_cost(dataset_name: str = "mnist5k", models: Sequence[str] = ("resnet", "vgg"), n: int = 100,
                      steps: int = 10, device: str = "auto", seed: int = 0) -> list[dict[str, Any]]:
    from benchmark.core.defense import build_defense
    from benchmark.core.device import resolve_device
    from benchmark.data.dataset import load_dataset
    from benchmark.store.model_store import ModelStore
    from benchmark.training.zoo import get_classifier

    dev = resolve_device(device)
    dataset = load_dataset(dataset_name)
    points = dataset.test_points(n)
    x, y = points.x.to(dev), points.y.to(dev)
    rows = []
    for name in models:
        versions = {fold: get_classifier(dataset, name, build_defense("none"), seed, dev, ModelStore(), fold=fold)[0]
                    for fold in (False, True)}
        # interleaved; one untimed round first warms caches up
        plain, folded = versions[False], versions[True]
        times = best_of({"plain": lambda m=plain: _pass(m, x, y), "folded": lambda m=folded: _pass(m, x, y)},
                        repeats=steps, warmup=1, device=dev)
        best = {False: times["plain"], True: times["folded"]}
        (plain_logits, plain_grad), (folded_logits, folded_grad) = (_pass(m, x, y) for m in versions.values())
        relative = ((folded_grad - plain_grad).flatten(1).norm(dim=1)
                    / plain_grad.flatten(1).norm(dim=1).clamp_min(1e-12))
        rows.append({"dataset": dataset_name, "model": name, "n": n,
                     "plain_ms_per_image": round(1000 * best[False] / n, 3),
                     "folded_ms_per_image": round(1000 * best[True] / n, 3),
                     "speedup": round(best[False] / best[True], 2),
                     "max_logit_difference": float(f"{(folded_logits - plain_logits).abs().max():.2g}"),
                     "median_relative_gradient_difference": float(f"{relative.median():.2g}"),
                     "torch_threads": torch.get_num_threads()})
    return rows
