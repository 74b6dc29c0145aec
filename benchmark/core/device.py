"""``--device auto|cpu|cuda``: auto takes CUDA when present; nothing requires it."""
from __future__ import annotations

import torch

from benchmark.core.errors import BenchError


def resolve_device(name: str = "auto") -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BenchError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise BenchError(f"unknown device {name!r}; use auto, cpu or cuda")
