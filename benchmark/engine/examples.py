"""``bench examples``: clean and adversarial images, each also after the defense, with the classifier's label and
confidence (the reproduction poster's Figure 3 for PixelDefend; for the GAN projection and the deep image prior, what
they make of clean and adversarial inputs alike; any purifying defense works).

The attack is the oblivious one (crafted on the classifier, as in the paper's tables); the harness checks every
adversarial image as in ``bench run``. Written to ``results/figures/<dataset>_<model>_<defense>_<attack>_examples.png``.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from benchmark.core.budgets import format_eps
from benchmark.core.defense import DefenseContext, build_defense
from benchmark.core.device import resolve_device
from benchmark.core.errors import BenchError
from benchmark.core.registry import ATTACKS
from benchmark.data.dataset import load_dataset
from benchmark.engine.adversarial import generate
from benchmark.store.model_store import ModelStore
from benchmark.training.zoo import get_classifier


def _labelled(classifier: torch.nn.Module, x: torch.Tensor, names: list[str]) -> list[str]:
    with torch.no_grad():
        p = F.softmax(classifier(x), 1)
    conf, pred = p.max(1)
    return [f"{names[i]} ({100 * c:.0f}%)" for i, c in zip(pred.tolist(), conf.tolist())]


def examples_figure(dataset: str, model: str, defense_name: str, attack_name: str, eps: float, n: int = 8,
                    seed: int = 0, device: str = "auto", figures: Path = Path("results/figures"),
                    data_root: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dev = resolve_device(device)
    data = load_dataset(dataset, data_root)
    defense = build_defense(defense_name)
    if not defense.purifies:
        raise BenchError(f"defense {defense_name!r} does not transform its input; pick one that purifies")
    store = ModelStore()
    classifier, _ = get_classifier(data, model, defense, seed, dev, store)
    defense.prepare(DefenseContext(data, classifier, dev, store, seed))
    points = data.test_points(n)
    attack = ATTACKS.build(attack_name)
    adv = generate(attack, classifier, points.x, points.y, (eps,), seed, n, dev).per_eps[0].to(dev)
    clean = points.x.to(dev)
    torch.manual_seed(seed)
    purified_clean = defense.purify(clean)
    purified = defense.purify(adv)
    names = [data.class_name(c) for c in range(data.num_classes)]
    attacked = f"{attack_name} {format_eps(eps)}"
    rows = [("clean", clean), (f"{defense_name}\n(clean)", purified_clean), (attacked, adv),
            (f"{defense_name}\n({attacked})", purified)]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n, 1.85 * len(rows) + 0.05), squeeze=False)
    for r, (label, images) in enumerate(rows):
        titles = _labelled(classifier, images, names)
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(images[c].cpu().permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(titles[c], fontsize=8)
        axes[r][0].set_ylabel(label, fontsize=9)
    fig.suptitle(f"{dataset} / {model}: true labels {', '.join(names[i] for i in points.y.tolist())}", fontsize=9)
    fig.tight_layout()
    out = Path(figures) / f"{dataset}_{model}_{defense_name}_{attack_name}_examples.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return out
