"""DefenseBench: a comparative benchmark of defenses against adversarial examples.

Measure a model from Python, and write plugins, with what is importable from here::

    from benchmark import evaluate
    results = evaluate(my_model, defense="feature-squeezing", dataset="mnist5k", attacks="paper")

    from benchmark import Attack, Defense, register_attack, register_defense

Attributes load lazily, so that ``bench --help`` (which imports this package) never imports torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "evaluate": "benchmark.api.evaluate",
    "Results": "benchmark.api.results",
    "Option": "benchmark.core.options",
    "Attack": "benchmark.core.attack",
    "Defense": "benchmark.core.defense",
    "ComposedDefense": "benchmark.core.defense",
    "build_defense": "benchmark.core.defense",
    "load_dataset": "benchmark.data.dataset",
    "ModelStore": "benchmark.store.model_store",
    "DefenseContext": "benchmark.core.defense",
    "DataSource": "benchmark.data.dataset",
    "Dataset": "benchmark.data.dataset",
    "Split": "benchmark.data.dataset",
    "Norm": "benchmark.core.vocab",
    "AttackKind": "benchmark.core.vocab",
    "Threat": "benchmark.core.vocab",
    "BenchError": "benchmark.core.errors",
    "register_attack": "benchmark.core.registry",
    "register_defense": "benchmark.core.registry",
    "register_model": "benchmark.core.registry",
    "register_dataset": "benchmark.core.registry",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
