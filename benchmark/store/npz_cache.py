"""Cached numpy arrays (``.npz``, no pickles): decoded data sets that are slow to rebuild but never precious.

A cached file that does not load (garbage, truncated, pickled contents, missing or malformed arrays) is reported in one
line and rebuilt by the caller; one that cannot be written (a full disk) is reported and the work goes on without it.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from benchmark.store.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def read_cached(path: Path, names: tuple[str, ...], check: Callable[[Arrays], str | None] | None = None
                ) -> Arrays | None:
    """The arrays ``names`` of a cached ``.npz``, or None when it is absent or corrupt (said in one line: the caller
    rebuilds it). Pickled contents are refused, never run. ``check(arrays)`` says what is wrong with arrays that
    load (their shapes or types), or None."""
    if not Path(path).exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in names}
        problem = check(arrays) if check is not None else None
        if problem:
            raise ValueError(problem)
    except Exception as exc:  # numpy raises many kinds (ValueError, BadZipFile, EOFError, KeyError, OSError)
        log.warning("cached data %s is corrupt (%s); rebuilding it", path, _first_line(exc))
        return None
    return arrays


def write_cached(path: Path, arrays: Arrays) -> bool:
    """Write ``arrays`` to ``path`` atomically (a reader never sees half a file); whether it was written (a failed
    write, such as a full disk, is a warning: the arrays are only a cache)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        atomic_write_bytes(Path(path), buffer.getvalue())
    except OSError as exc:
        log.warning("could not write cached data %s (%s); going on without the cache", path,
                    exc.strerror or _first_line(exc))
        return False
    return True
