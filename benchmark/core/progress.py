"""Progress bars for long work (tqdm), silenced by ``--quiet``. Library code logs; only bars and the CLI print."""
from __future__ import annotations

import os
from typing import Any, Iterable

_quiet = os.environ.get("BENCH_QUIET", "").strip().lower() in ("1", "true", "yes")


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any):
    """A tqdm bar on stderr that ``--quiet`` turns off."""
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=_quiet, **kwargs)
