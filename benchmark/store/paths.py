"""Where the project keeps things on disk: its cache (models, adversarial examples) and the data root."""
from __future__ import annotations

import os
from pathlib import Path

FIGURES_SUBDIR = "figures"  # of a results folder: the figures the leaderboard links


def cache_dir() -> Path:
    """``BENCH_CACHE`` or ``~/.cache/defensebench``: trained models and cached adversarial examples."""
    return Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "defensebench").expanduser()


def data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--data-root``, else ``BENCH_DATA``, else ``<cache>/data``: where torchvision-layout data sets live."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("BENCH_DATA")
    return Path(env).expanduser() if env else cache_dir() / "data"
