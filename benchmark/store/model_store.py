"""The model store: trained networks keyed by (data set, architecture, training config, seed).

A checkpoint is a folder ``<cache>/models/<kind>/<key>/`` with ``weights.safetensors`` (tensors only: loading runs no
code from the file) and ``meta.json`` (the spec it was built from, its measured metrics, the weights' SHA-256).
A checkpoint whose hash or format does not check out is reported and rebuilt, never used.

The weights' SHA-256 names the model *instance*: the same spec retrained elsewhere (another CPU, another thread count)
gives other weights and other numbers. :meth:`ModelStore.recording` collects the instances a piece of work used, so
that a record can say which models it measured.

The weights a record measured travel with it: :meth:`ModelStore.ship` copies a checkpoint into the results folder
(``results/models/<kind>/<key>/``, committed with the records), and a store whose cache lacks a checkpoint restores it
from there (checked like any other) before it would train one. Another machine then measures the same weights.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from filelock import FileLock
from torch import nn

from .fileio import atomic_write_bytes, atomic_write_text
from .hashing import canonical_json, config_hash, file_sha256
from .paths import cache_dir

log = logging.getLogger(__name__)

WEIGHTS = "weights.safetensors"
META = "meta.json"
MODELS_SUBDIR = "models"  # of a results folder: the checkpoints its records measured
SHIPPED = Path("results") / MODELS_SUBDIR  # relative to the working folder, like `bench run`'s default results folder


class ModelStore:
    def __init__(self, root: Path | None = None, shipped: Path | None = SHIPPED) -> None:
        """``root``: the cache's model folder; ``shipped``: where checkpoints that records measured are kept, to be
        restored from when the cache lacks them (None: nowhere)."""
        self.root = Path(root) if root is not None else cache_dir() / "models"
        self.shipped = Path(shipped) if shipped is not None else None
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
            seen.update(instances(meta))
        return meta

    def folder(self, kind: str, spec: dict[str, Any]) -> Path:
        return self.root / kind / config_hash(spec)

    def load(self, kind: str, spec: dict[str, Any], module: nn.Module) -> dict[str, Any] | None:
        """Fill ``module`` from the checkpoint of ``spec``; its metadata, or None when absent or corrupted."""
        from safetensors.torch import load_file

        folder = self.folder(kind, spec)
        weights, meta_path = folder / WEIGHTS, folder / META
        if not meta_path.exists() and not self._restore(folder):
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

    def _restore(self, folder: Path) -> bool:
        """Copy the shipped checkpoint of ``folder`` into the cache, if there is one (weights first, metadata last: a
        checkpoint without metadata counts as absent); :meth:`load` then checks it like any other."""
        if self.shipped is None:
            return False
        source = self.shipped / folder.relative_to(self.root)
        if not (source / META).is_file() or not (source / WEIGHTS).is_file():
            return False
        log.info("restoring checkpoint %s from %s", folder.relative_to(self.root).as_posix(), self.shipped)
        write_checkpoint(folder, (source / WEIGHTS).read_bytes(), (source / META).read_bytes())
        return True

    def ship(self, names: Iterable[str], dest: Path) -> list[str]:
        """Copy checkpoints ``names`` ("<kind>/<key>") from the cache to ``dest/<kind>/<key>/``; why any of them is
        not there now. Shipped weights are never replaced: records measured them."""
        problems = []
        for name in dict.fromkeys(names):
            source, target = self.root / name, Path(dest) / name
            if not (source / META).is_file() or not (source / WEIGHTS).is_file():
                problems.append(f"checkpoint {name} is not in this machine's cache ({self.root})")
            elif not (target / META).is_file():
                write_checkpoint(target, (source / WEIGHTS).read_bytes(), (source / META).read_bytes())
            elif json.loads((target / META).read_text())["weights_sha256"] != \
                    json.loads((source / META).read_text())["weights_sha256"]:
                problems.append(f"{target} holds other weights of {name}, which earlier records measured")
        return problems

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


def instances(*metas: dict[str, Any]) -> dict[str, str]:
    """The model instances ``metas`` describe, as a record names them: ``"<kind>/<key>": weights SHA-256``."""
    return {instance_name(m): m["weights_sha256"] for m in sorted(metas, key=instance_name)}


def write_checkpoint(folder: Path, weights: bytes, meta: bytes) -> None:
    """Write a checkpoint's two files, weights first and metadata last: one without metadata counts as absent, so a
    reader never sees half of it."""
    atomic_write_bytes(folder / WEIGHTS, weights)
    atomic_write_bytes(folder / META, meta)
