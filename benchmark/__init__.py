"""DefenseBench: a comparative benchmark of defenses against adversarial examples.

The public API a plugin author needs is importable from here::

    from benchmark import Attack, Defense, register_attack, register_defense

Attributes load lazily, so that ``bench --help`` (which imports this package) never imports torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Attack": "benchmark.attack",
    "Defense": "benchmark.defense",
    "DefenseContext": "benchmark.defense",
    "DataSource": "benchmark.data",
    "Dataset": "benchmark.data",
    "Split": "benchmark.data",
    "Norm": "benchmark.vocab",
    "AttackKind": "benchmark.vocab",
    "Threat": "benchmark.vocab",
    "BenchError": "benchmark.errors",
    "register_attack": "benchmark.registry",
    "register_defense": "benchmark.registry",
    "register_model": "benchmark.registry",
    "register_dataset": "benchmark.registry",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
