"""``bench perf api``: what ``benchmark.evaluate()`` costs over the equivalent ``bench run``, in one process.

``bench run`` is a thin layer over :func:`benchmark.api.evaluate.evaluate`, so the Python API should cost no more than
the command (target: ``ratio`` = evaluate / bench run at most 1.05). Both run the same cells (digits, none against a
few cheap attacks by default) in this process: ``bench run`` through click's ``CliRunner`` on
:data:`benchmark.cli.main` with ``--quiet``, ``evaluate()`` with ``progress=False``. The cache is warm (a private
``BENCH_CACHE``, filled by an untimed first call: the classifier and every adversarial input are loaded, not made), so
what is timed is the work around the attacks, where an overhead would show (``--cache`` names a warm cache to use
instead, e.g. the user's); each call writes into a fresh results folder of its own, so that no cell is skipped. Calls
are interleaved, best of ``repeats`` (:func:`benchmark.perf.timing.best_of`), each started at the same torch thread
count.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from benchmark.perf.timing import best_of, pinned_threads

TARGET_RATIO = 1.05


@contextmanager
def _cache(folder: Path) -> Iterator[None]:
    saved = os.environ.get("BENCH_CACHE")
    os.environ["BENCH_CACHE"] = str(folder)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("BENCH_CACHE", None)
        else:
            os.environ["BENCH_CACHE"] = saved


@contextmanager
def _cli_state() -> Iterator[None]:
    """The CLI points the ``benchmark`` logger at its (captured) stderr and sets the quiet flag: undo both."""
    from benchmark.core.progress import is_quiet, set_quiet

    logger = logging.getLogger("benchmark")
    saved = (logger.handlers[:], logger.level, logger.propagate, is_quiet())
    try:
        yield
    finally:
        logger.handlers[:] = saved[0]
        logger.level, logger.propagate = saved[1], saved[2]
        set_quiet(saved[3])


def api_overhead(dataset: str = "digits", defense: str = "none", attacks: str = "fgsm,bim,pgd", n: int = 360,
                 repeats: int = 5, warmup: int = 1, threads: int | None = None, cache: Path | None = None
                 ) -> dict[str, Any]:
    """One row: best seconds of ``bench run`` and of ``evaluate()`` on the same cells, and their ratio. ``cache``: the
    ``BENCH_CACHE`` to use (default: a private, empty one, filled by the untimed first call)."""
    from click.testing import CliRunner

    from benchmark.api.evaluate import evaluate
    from benchmark.cli import main

    root = Path(tempfile.mkdtemp(prefix="bench-perf-api-"))
    counter = [0]

    def fresh() -> Path:
        counter[0] += 1
        return root / f"results-{counter[0]}"

    args = ["run", "--dataset", dataset, "--defense", defense, "--attack", attacks, "--n", str(n), "--quiet"]
    cells: dict[str, int] = {}

    with pinned_threads(threads) as used:
        def cli() -> None:
            with pinned_threads(used), _cli_state():
                result = CliRunner().invoke(main, [*args, "--results-dir", str(fresh())], catch_exceptions=False)
            if result.exit_code != 0:
                raise RuntimeError(f"bench {' '.join(args)} exited with {result.exit_code}: {result.output[-2000:]}")

        def api() -> None:
            with pinned_threads(used):
                results = evaluate("resnet", defense=defense, dataset=dataset, attacks=attacks, n=n,
                                   results_dir=fresh(), progress=False)
            bad = [c for c in results.cells if c.status != "done"]
            if bad:
                raise RuntimeError(f"evaluate(): {bad[0].defense} x {bad[0].attack} {bad[0].status}: {bad[0].message}")
            cells["count"] = len(results.cells)

        candidates: dict[str, Callable[[], None]] = {"bench run": cli, "evaluate()": api}
        try:
            with _cache(Path(cache) if cache is not None else root / "cache"):
                api()  # untimed: trains or restores the classifier, makes and caches every adversarial input
                best = best_of(candidates, repeats=repeats, warmup=warmup)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    ratio = best["evaluate()"] / best["bench run"]
    return {"job": " ".join(["bench", *args]), "cells": cells["count"], "torch_threads": used,
            "bench_run_s": round(best["bench run"], 3), "evaluate_s": round(best["evaluate()"], 3),
            "ratio": round(ratio, 3), "meets_target": ratio <= TARGET_RATIO}
