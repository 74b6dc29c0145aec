"""``bench perf ray``: a grid of cheap cells on a local Ray cluster of two workers against the same grid run serially.

The grid is one defense (none) against eight attacks on digits, so that no cell reuses another's adversarial inputs
and the serial run has no advantage but the absence of scheduling. Everything runs in a fresh cache (the user's is
left alone): the classifier is trained first, outside every timing; the adversarial cache is emptied before each
grid, so that every run attacks afresh. Timed, in this order:

* ``serial_s``: the local executor, in this process;
* ``cluster_start_s``: starting the Ray cluster (once per session of work, so reported apart);
* ``ray_cold_s``: the first grid on the new cluster (its workers start and import torch: part of the cost);
* ``ray_warm_s``: the same grid again on the warm cluster (into a new results directory);
* ``serial_again_s``: the serial run once more, as a check on how much the machine's load moved meanwhile.

``ratio`` is ``ray_warm_s / serial_s`` (``ratio_cold`` likewise); ``overhead_per_cell_s`` is the worker-seconds each
cell costs beyond its serial time, ``(ray_warm_s * workers - serial_s) / cells``: zero for a perfect scheduler.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmark.perf import timing

ATTACKS = ("fgsm", "fgm", "bim", "pgd", "deepfool", "uniform-noise", "gaussian-blur", "contrast-reduction")


def ray_speedup(attacks: tuple[str, ...] = ATTACKS, n: int = 360, workers: int = 2) -> dict[str, Any]:
    from benchmark.core.progress import set_quiet
    from benchmark.engine.executors import LocalExecutor
    from benchmark.engine.grid import RunPlan
    from benchmark.engine.ray_executor import RayExecutor
    from benchmark.engine.runner import run

    set_quiet(True)
    root = Path(tempfile.mkdtemp(prefix="bench-perf-ray-"))
    saved_cache = os.environ.get("BENCH_CACHE")
    os.environ["BENCH_CACHE"] = str(root / "cache")  # read by this process and inherited by the Ray workers
    plan = RunPlan(dataset="digits", defenses=("none",), attacks=tuple(attacks), n=n, device="cpu")
    executor = RayExecutor(num_cpus=workers)  # also sets Ray up to listen on loopback only
    ray = executor.ray

    def timed(label: str, runner: Any) -> float:
        shutil.rmtree(root / "cache" / "adversarial", ignore_errors=True)  # every run attacks afresh
        seconds, results = timing.timed(lambda: run(replace(plan, results_dir=root / label), executor=runner))
        bad = [r for r in results if r.status != "done"]
        if bad:
            raise RuntimeError(f"{label}: {bad[0].defense} x {bad[0].attack} {bad[0].status}: {bad[0].message}")
        return seconds

    try:
        timed("warm-up", LocalExecutor())  # trains the classifier; loads every module; not reported
        serial = timed("serial", LocalExecutor())
        cluster_start, _ = timing.timed(executor.connect)  # the workers inherit this process's BENCH_CACHE
        cold = timed("ray-cold", executor)
        warm = timed("ray-warm", executor)
        serial_again = timed("serial-again", LocalExecutor())
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if saved_cache is None:
            os.environ.pop("BENCH_CACHE", None)
        else:
            os.environ["BENCH_CACHE"] = saved_cache
        shutil.rmtree(root, ignore_errors=True)
    cells = len(attacks)
    return {
        "grid": f"digits n={n}: none x {','.join(attacks)}", "cells": cells, "workers": workers,
        "serial_s": round(serial, 2), "cluster_start_s": round(cluster_start, 2), "ray_cold_s": round(cold, 2),
        "ray_warm_s": round(warm, 2), "serial_again_s": round(serial_again, 2),
        "ratio": round(warm / serial, 2), "ratio_cold": round(cold / serial, 2),
        "overhead_per_cell_s": round((warm * workers - serial) / cells, 2),
    }
