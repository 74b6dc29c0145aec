"""Weights that come from outside the model store: a user's own ``nn.Module``, or a file trained elsewhere.

A classifier is named in records by the SHA-256 of its weights, as the store names its checkpoints: the bytes of its
state dict serialised by safetensors (what the store writes), so a module and the ``.safetensors`` file saved from it
with ``safetensors.torch.save_file`` have the same name. A ``.pt`` state dict is named by its file's SHA-256. Loading a
file never runs code from it: safetensors holds tensors only, and ``.pt`` files load with ``weights_only=True``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from benchmark.core.errors import BenchError
from benchmark.store.hashing import file_sha256

SUFFIXES = (".safetensors", ".pt", ".pth")


def state_sha256(module: nn.Module) -> str:
    """SHA-256 of ``module``'s state dict as safetensors serialises it (tensors on the CPU, contiguous)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    return hashlib.sha256(save(state)).hexdigest()


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file; one line when it is missing, of another kind or not readable."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"weights file {path} does not exist; give a .safetensors file or a .pt state dict")
    if path.suffix not in SUFFIXES:
        raise BenchError(f"weights file {path} is neither .safetensors nor .pt/.pth; save the state dict with "
                         "safetensors.torch.save_file (or torch.save(model.state_dict(), ...))")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file, a pickle of objects, another format: never run, always refused
        raise BenchError(f"cannot read weights file {path} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                         "give a .safetensors file or a .pt state dict (a dict of tensors)") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BenchError(f"weights file {path} does not hold a state dict (a dict of tensor names to tensors)")
    return state


def load_weights(module: nn.Module, path: Path, arch: str) -> str:
    """Fill ``module`` (a registered architecture ``arch``) from ``path``; returns the file's SHA-256. Names or
    shapes that do not match are refused in one line that says what was expected."""
    state = read_state(path)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} tensors {arch} does not have (first: {unexpected[0]})")
        raise BenchError(f"weights file {path} does not fit model {arch!r} on this data set: {'; '.join(parts)}")
    wrong = [k for k in expected if expected[k] != given[k]]
    if wrong:
        k = wrong[0]
        raise BenchError(f"weights file {path} does not fit model {arch!r} on this data set: {k} has shape "
                         f"{list(given[k])}, expected {list(expected[k])} ({len(wrong)} tensors differ)")
    module.load_state_dict(state)
    return file_sha256(path)
