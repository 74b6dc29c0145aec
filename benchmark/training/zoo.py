"""Classifiers from the store: built (trained) once per (data set, architecture, training config, seed), then reused."""
from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from benchmark.core.defense import Defense
from benchmark.core.errors import BenchError
from benchmark.core.registry import MODELS
from benchmark.data.dataset import Dataset
from benchmark.store.model_store import ModelStore
from benchmark.training.classifier import TrainConfig, accuracy, default_train_config, train_classifier

log = logging.getLogger(__name__)


def classifier_spec(dataset: Dataset, arch: str, defense: Defense, seed: int) -> dict[str, Any]:
    """The store key of a classifier: everything its weights depend on."""
    return {
        "dataset": dataset.name,
        "shape": list(dataset.shape),
        "arch": arch,
        "training_defense": defense.training_config(dataset),
        "train": train_config(dataset, defense).as_dict(),
        "seed": seed,
    }


def train_config(dataset: Dataset, defense: Defense) -> TrainConfig:
    """The data set's training schedule, with the epochs a training-time defense asks for (``adv-fgsm(epochs=10)``)."""
    cfg = default_train_config(dataset.name)
    epochs = (defense.training_config(dataset) or {}).get("epochs")
    return cfg if epochs is None else replace(cfg, epochs=epochs)


def build_classifier(dataset: Dataset, arch: str) -> nn.Module:
    entry = MODELS.get(arch)
    if entry.describe().get("kind") != "classifier":
        raise BenchError(f"model {arch!r} is a {entry.describe().get('kind')}, not a classifier; "
                         f"classifiers: {', '.join(classifier_names())}")
    return entry.factory(dataset.shape, dataset.num_classes)


def classifier_names() -> list[str]:
    return [e.name for e in MODELS.entries() if e.describe().get("kind") == "classifier"]


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """The frozen ``model`` with each batch norm folded into the convolution before it (same function, fewer layers).

    In eval mode a batch norm is an affine map per channel, so it merges into the preceding convolution's weights and
    bias: a forward and backward pass of the ResNet-style network is about 1.5 times faster on CPU (``bench perf
    network``), and every attack step is such a pass. torch.fx finds the pairs in the traced graph, so a convolution
    whose output also goes elsewhere is left alone. A model that torch.fx cannot trace (data-dependent control flow
    in a plugin's network) is returned unchanged: folding is an optimisation, never a requirement.
    """
    from torch.fx.experimental.optimization import fuse

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    try:
        folded = fuse(model)
    except Exception as error:  # tracing fails in many ways (TraceError, TypeError, ...) on untraceable code
        log.debug("batch norm not folded into %s: %s", type(model).__name__, error)
        return model
    return folded.eval().requires_grad_(False)


@dataclass(frozen=True)
class UserModel:
    """A classifier whose weights come from the user (an ``nn.Module``, or a registered architecture filled from a
    weights file): records name it ``name`` and its weights ``sha256``."""

    module: nn.Module
    name: str  # user_model_name()
    sha256: str

    @classmethod
    def of(cls, module: nn.Module, arch: str | None = None, sha256: str | None = None) -> "UserModel":
        from benchmark.store.weights import state_sha256

        sha = sha256 or state_sha256(module)
        return cls(module, user_model_name(module, sha, arch), sha)


def user_model_name(module: nn.Module, sha256: str, arch: str | None = None) -> str:
    """How records name a classifier whose weights come from the user: its architecture (the registered name of its
    class, else the class name in lower case) and the first 8 hex digits of its weights' SHA-256, ``resnet@1a2b3c4d``.
    The weights are part of the name so that records of the user's network never replace those of the project's own
    training of the same architecture."""
    registered = [e.name for e in MODELS.entries() if e.factory is type(module)]
    own = re.sub(r"[^a-z0-9._-]+", "-", type(module).__name__.lower()).strip("-")
    arch = arch or (registered[0] if registered else own)
    return f"{arch or 'model'}@{sha256[:8]}"


def user_classifier(module: nn.Module, dataset: Dataset, name: str, sha256: str, device: torch.device,
                    store: ModelStore, fold: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """A classifier with the user's weights (``module`` is copied, never changed), ready as :func:`get_classifier`
    returns the project's: frozen, in eval mode, on ``device``. It enters the store under its weights' SHA-256 with
    its measured test accuracy, so its records can ship it and a rerun finds it."""
    spec = {"dataset": dataset.name, "shape": list(dataset.shape), "arch": name, "training_defense": None,
            "weights_sha256": sha256}
    model = copy.deepcopy(module).to(device)

    def measure(m: nn.Module) -> dict[str, Any]:
        log.info("measuring %s on the test split of %s", name, dataset.name)
        return {"test_accuracy": accuracy(m, dataset.test, device), "val_accuracy": accuracy(m, dataset.val, device),
                "source": "user weights"}

    meta = store.get_or_build("classifier", spec, model, measure)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if fold:
        model = fold_batch_norm(model)
    return model, meta


def get_classifier(
    dataset: Dataset, arch: str, defense: Defense, seed: int, device: torch.device, store: ModelStore,
    fold: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained classifier for this data set, architecture and training-time defense, in eval mode on ``device``
    (with its batch norms folded into its convolutions unless ``fold`` is false)."""
    spec = classifier_spec(dataset, arch, defense, seed)
    training = defense.training_config(dataset)
    label = f"train {arch} on {dataset.name}" + (f" ({defense.name})" if training else "")

    def build(module: nn.Module) -> dict[str, Any]:
        log.info("no cached classifier for %s; training it now", label)
        cfg = train_config(dataset, defense)

        def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return defense.training_loss(model, x, y, training)

        return train_classifier(module, dataset, cfg, loss, device, seed, desc=label,
                                folder=store.folder("classifier", spec))

    model, meta = store.get_frozen("classifier", spec, seed, lambda: build_classifier(dataset, arch), build, device)
    if fold:
        model = fold_batch_norm(model)
    if device.type == "cpu":
        # channels-last weights make oneDNN's input-gradient convolutions about a quarter faster on CPU (every gradient
        # attack's backward pass); outputs agree with the default layout to float rounding
        model = model.to(memory_format=torch.channels_last)
    return model, meta
