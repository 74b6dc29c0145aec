"""The model store: trained networks keyed by (data set, architecture, training config, seed).

A checkpoint is a folder ``<cache>/models/<kind>/<key>/`` with ``weights.safetensors`` (tensors only: loading runs no
code from the file) and ``meta.json`` (the spec it was built from, its measured metrics, the weights' SHA-256).
A checkpoint whose hash or format does not check out is reported and rebuilt, never used.

The weights' SHA-256 names the model *instance*: the same spec retrained elsewhere (another CPU, another thread count)
gives other weights and other numbers. :meth:`ModelStore.recording` collects the instances a piece of work used, so
that a record can say which models it measured.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from filelock import FileLock
from torch import nn

from .fileio import atomic_write_text
from .hashing import canonical_json, config_hash, file_sha256
from .paths import cache_dir

log = logging.getLogger(__name__)

WEIGHTS = "weights.safetensors"
META = "meta.json"


class ModelStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir() / "models"
        self._recorders: list[dict[str, str]] = []

    @contextmanager
    def recording(self) -> Iterator[dict[str, str]]:
        """Inside the block, every checkpoint :meth:`get_or_build` hands out is noted in the yielded dict as
        ``"<kind>/<key>": weights SHA-256`` (blocks may nest; each sees what was handed out while it was open)."""
        seen: dict[str, str] = {}
        self._recorders.append(seen)
        try:
            yield seen
        finally:
            self._recorders.remove(seen)

    def _note(self, meta: dict[str, Any]) -> dict[str, Any]:
        for seen in self._recorders:
            seen[instance_name(meta)] = meta["weights_sha256"]
        return meta

    def folder(self, kind: str, spec: dict[str, Any]) -> Path:
        return self.root / kind / config_hash(spec)

    def load(self, kind: str, spec: dict[str, Any], module: nn.Module) -> dict[str, Any] | None:
        """Fill ``module`` from the checkpoint of ``spec``; its metadata, or None when absent or corrupted."""
        from safetensors.torch import load_file

        folder = self.folder(kind, spec)
        weights, meta_path = folder / WEIGHTS, folder / META
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if canonical_json(meta["spec"]) != canonical_json(spec):
                raise ValueError("its spec does not match its key")
            if file_sha256(weights) != meta["weights_sha256"]:
                raise ValueError("its weights do not match their recorded SHA-256")
            state = load_file(str(weights))
            expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
            if {k: tuple(v.shape) for k, v in state.items()} != expected:  # check before touching the module
                raise ValueError("its tensors do not fit the model (names or shapes differ)")
            module.load_state_dict(state)
        except Exception as exc:  # corrupted: say so, then let the caller rebuild
            log.warning("checkpoint %s is corrupted (%s); rebuilding it", folder, exc)
            return None
        return meta

    def save(self, kind: str, spec: dict[str, Any], module: nn.Module, metrics: dict[str, Any]) -> dict[str, Any]:
        from safetensors.torch import save_file

        folder = self.folder(kind, spec)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".weights.", suffix=".tmp")
        os.close(fd)
        save_file(state, tmp)
        os.replace(tmp, folder / WEIGHTS)
        meta = {
            "kind": kind,
            "key": config_hash(spec),
            "spec": spec,
            "metrics": metrics,
            "weights_sha256": file_sha256(folder / WEIGHTS),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "torch": torch.__version__,
        }
        atomic_write_text(folder / META, json.dumps(meta, indent=2, sort_keys=True))
        return meta

    def get_frozen(self, kind: str, spec: dict[str, Any], seed: int, make: Callable[[], nn.Module],
                   build: Callable[[nn.Module], dict[str, Any]], device: torch.device
                   ) -> tuple[nn.Module, dict[str, Any]]:
        """:meth:`get_or_build` on a module made by ``make()`` under ``seed`` (its initial weights depend on the seed
        only, not on the process's history), then frozen in eval mode on ``device``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = make()
        meta = self.get_or_build(kind, spec, module, build)
        module.to(device).eval()
        for p in module.parameters():
            p.requires_grad_(False)
        return module, meta

    def get_or_build(
        self,
        kind: str,
        spec: dict[str, Any],
        module: nn.Module,
        build: Callable[[nn.Module], dict[str, Any]],
    ) -> dict[str, Any]:
        """Load ``spec`` into ``module``, or train it with ``build(module) -> metrics`` and save it.

        A file lock makes concurrent processes wait for one builder instead of training the same model twice.
        """
        folder = self.folder(kind, spec)
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / ".lock")):  # loaded under the lock: another process may be writing it
            meta = self.load(kind, spec, module)
            if meta is None:
                meta = self.save(kind, spec, module, build(module))
            return self._note(meta)


def instance_name(meta: dict[str, Any]) -> str:
    """``"<kind>/<key>"``: which checkpoint of the store ``meta`` describes."""
    return f"{meta['kind']}/{meta['key']}"
