"""Checkpoints as bytes, so that models built by one Ray task reach the others through Ray's object store.

A :class:`RecordingStore` is a model store that remembers every checkpoint folder it was asked for; its :meth:`pack`
is those folders' files (weights and metadata) keyed by their path inside the store. :func:`unpack` writes a pack into
another store (a worker on another node, or the same folder when nodes share a file system: then it writes nothing).
The store checks each checkpoint's SHA-256 when it loads it, so a damaged pack is rebuilt, never used.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from filelock import FileLock

from benchmark.store.model_store import (
    META,
    SHIPPED,
    WEIGHTS,
    ModelStore,
    write_checkpoint,
)

ModelPack = dict[str, dict[str, bytes]]  # "<kind>/<key>" -> {file name: contents}


class RecordingStore(ModelStore):
    """A model store that remembers the checkpoints it was asked for (loaded or built)."""

    def __init__(self, root: Path | None = None, shipped: Path | None = SHIPPED) -> None:
        super().__init__(root, shipped)
        self.used: dict[str, None] = {}  # an ordered set

    def folder(self, kind: str, spec: dict[str, Any]) -> Path:
        path = super().folder(kind, spec)
        self.used[path.relative_to(self.root).as_posix()] = None
        return path

    def pack(self) -> ModelPack:
        """The files of every checkpoint used so far that exists (one that failed to build is left out)."""
        out: ModelPack = {}
        for rel in self.used:
            folder = self.root / rel
            if (folder / META).is_file() and (folder / WEIGHTS).is_file():
                out[rel] = {name: (folder / name).read_bytes() for name in (WEIGHTS, META)}
        return out


def unpack(store: ModelStore, pack: ModelPack) -> None:
    """Write the checkpoints of ``pack`` into ``store`` unless it holds them already (weights first, metadata last:
    a checkpoint without metadata counts as absent), under the store's lock of each folder."""
    for rel, files in pack.items():
        parts = PurePosixPath(rel).parts
        if len(parts) != 2 or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"not a checkpoint folder: {rel!r}")
        folder = store.root.joinpath(*parts)
        if (folder / META).is_file() and (folder / META).read_bytes() == files[META]:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / ".lock")):
            write_checkpoint(folder, files[WEIGHTS], files[META])
