"""The leaderboard's "Models" table: every trained model shipped under ``results/models/`` with what its training
measured (a classifier's test accuracy, a PixelCNN's test bits per dimension, a GAN's accuracy behind its projection),
the published figure it stands beside where there is one, and trainings shipped unfinished (``partial.*``: resumable).

The published figures: the PixelDefend paper's clean accuracies of its normally trained networks (Tables 1 and 2,
:mod:`benchmark.report.paper`) and PixelCNN++'s 2.92 bits/dim on CIFAR-10's test set (Salimans et al., "PixelCNN++",
ICLR 2017, https://arxiv.org/abs/1701.05517), the model PixelDefend purifies with.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmark.report import paper
from benchmark.store.checkpoint import PARTIAL_SPEC

PIXELCNN_PLUS_PLUS = {"cifar10": 2.92}  # test bits/dim, Salimans et al. 2017
KINDS = ("classifier", "pixelcnn", "gan", "prm")


def _training_defense(spec: dict[str, Any]) -> str:
    defense = spec.get("training_defense")
    if not defense:
        return "normal"
    method = str(defense.get("method", "?"))
    if "sigma" in defense:
        return f"{method}, sigma {round(defense['sigma'] * 255)}/255"
    return method


def _published(kind: str, spec: dict[str, Any]) -> str:
    dataset = spec.get("dataset", "")
    if kind == "pixelcnn" and dataset in PIXELCNN_PLUS_PLUS:
        return f"PixelCNN++: {PIXELCNN_PLUS_PLUS[dataset]} bits/dim"
    if kind == "classifier" and not spec.get("training_defense"):
        for row in paper.paper_rows():
            same = (row.dataset, row.model, row.defense) == (dataset, spec.get("arch"), "none")
            if same and row.eps != paper.UNBOUNDED:
                return f"{row.cells[paper.CLEAN][0]}%, {row.source}"
    return "–"


def _measured(kind: str, metrics: dict[str, Any]) -> str:
    if kind == "classifier" and "test_accuracy" in metrics:
        text = f"test accuracy {100 * metrics['test_accuracy']:.1f}%"
    elif kind == "pixelcnn" and "test_bpd" in metrics:
        text = f"test {metrics['test_bpd']:.3f} bits/dim"
    elif kind == "gan" and "projected_accuracy" in metrics:
        text = (f"classifier {100 * metrics['clean_accuracy']:.0f}% on images, "
                f"{100 * metrics['projected_accuracy']:.0f}% on their projections")
    elif kind == "prm" and "val_accuracy" in metrics:
        text = f"validation accuracy {100 * metrics['val_accuracy']:.1f}%"
    else:
        return "–"
    seconds = metrics.get("train_seconds")
    return text + (f"; trained in {seconds / 3600:.1f} h" if seconds else "")


def _schedule(spec: dict[str, Any]) -> str:
    train = spec.get("train") or {}
    if "epochs" not in train:
        return "–"
    return f"{train['epochs']} epoch{'s' if train['epochs'] != 1 else ''}"


def model_rows(results_dir: Path) -> list[list[str]]:
    """One row per shipped model, then one per unfinished training; by kind, data set and name."""
    rows: list[tuple[tuple[Any, ...], list[str]]] = []
    for kind in KINDS:
        for folder in sorted((results_dir / "models" / kind).glob("*/")):
            meta_file, partial = folder / "meta.json", folder / "partial.json"
            if meta_file.is_file():
                meta = json.loads(meta_file.read_text(encoding="utf-8"))
                spec, metrics = meta.get("spec", {}), meta.get("metrics", {})
                name = spec.get("arch", kind) + (f" ({_training_defense(spec)})" if kind == "classifier" else "")
                cells = [kind, spec.get("dataset", "?"), name, folder.name[:10], _measured(kind, metrics),
                         _published(kind, spec), _schedule(spec)]
            elif partial.is_file():
                done = json.loads(partial.read_text(encoding="utf-8")).get("epoch", 0)
                spec_file = folder / PARTIAL_SPEC
                spec = json.loads(spec_file.read_text(encoding="utf-8"))["spec"] if spec_file.is_file() else {}
                name = spec.get("arch", "?") + (f" ({_training_defense(spec)})" if kind == "classifier" and spec
                                                 else "")
                cells = [kind, spec.get("dataset", "?"), name, folder.name[:10],
                         f"unfinished: {done} of {_schedule(spec)} done (resumable)", _published(kind, spec),
                         _schedule(spec)]
            else:
                continue
            rows.append(((KINDS.index(kind), cells[1], cells[2], cells[3]), cells))
    return [cells for _, cells in sorted(rows)]
