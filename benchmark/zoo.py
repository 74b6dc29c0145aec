"""Classifiers from the store: built (trained) once per (data set, architecture, training config, seed), then reused."""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from .data import Dataset
from .defense import Defense
from .errors import BenchError
from .registry import MODELS
from .store import ModelStore
from .training import default_train_config, train_classifier

log = logging.getLogger(__name__)


def classifier_spec(dataset: Dataset, arch: str, defense: Defense, seed: int) -> dict[str, Any]:
    """The store key of a classifier: everything its weights depend on."""
    return {
        "dataset": dataset.name,
        "shape": list(dataset.shape),
        "arch": arch,
        "training_defense": defense.training_config(dataset),
        "train": default_train_config(dataset.name).as_dict(),
        "seed": seed,
    }


def build_classifier(dataset: Dataset, arch: str) -> nn.Module:
    entry = MODELS.get(arch)
    if entry.describe().get("kind") != "classifier":
        raise BenchError(f"model {arch!r} is a {entry.describe().get('kind')}, not a classifier; "
                         f"classifiers: {', '.join(classifier_names())}")
    return entry.factory(dataset.shape, dataset.num_classes)


def classifier_names() -> list[str]:
    return [e.name for e in MODELS.entries() if e.describe().get("kind") == "classifier"]


def get_classifier(
    dataset: Dataset, arch: str, defense: Defense, seed: int, device: torch.device, store: ModelStore
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained classifier for this data set, architecture and training-time defense, in eval mode on ``device``."""
    spec = classifier_spec(dataset, arch, defense, seed)
    training = defense.training_config(dataset)
    label = f"train {arch} on {dataset.name}" + (f" ({defense.name})" if training else "")

    def build(module: nn.Module) -> dict[str, Any]:
        log.info("no cached classifier for %s; training it now", label)
        cfg = default_train_config(dataset.name)

        def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return defense.training_loss(model, x, y, training)

        return train_classifier(module, dataset, cfg, loss, device, seed, desc=label,
                                folder=store.folder("classifier", spec))

    model, meta = store.get_frozen("classifier", spec, seed, lambda: build_classifier(dataset, arch), build, device)
    if device.type == "cpu":
        # channels-last weights make oneDNN's input-gradient convolutions about a quarter faster on CPU (every gradient
        # attack's backward pass); outputs agree with the default layout to float rounding
        model = model.to(memory_format=torch.channels_last)
    return model, meta
