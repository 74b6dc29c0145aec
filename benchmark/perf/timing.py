"""The one timing helper of every ``bench perf`` command: how a time is taken, and what the machine was doing.

A speed figure means little without the machine it was taken on: results/perf/gan_projection.json once reported a
3.3 GFLOP/s matrix-product "peak" taken under oversubscription (two processes with two threads each on two cores)
while one idle thread reaches about 100. So every saved file carries :func:`machine` (torch threads, the load
averages before and after, OpenMP settings, device, CPU), every time is taken by :func:`best_of` (warm-up calls,
then interleaved rounds, so that load from other processes hurts every candidate alike; the minimum kept), and a FLOP
peak is measured by :func:`matmul_peak` in the same run as the work it is compared with, never carried over.
"""
from __future__ import annotations

import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

Clock = Callable[[], float]


def _device(device: Any) -> Any:
    """``device`` as a torch.device (None: the CPU)."""
    import torch

    if device is None:
        return torch.device("cpu")
    if isinstance(device, str):
        from benchmark.core.device import resolve_device

        return resolve_device(device)
    return device


def _synchronise(device: Any) -> None:
    if device is not None and getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: Any = None, clock: Clock = time.perf_counter) -> tuple[float, Any]:
    """Seconds one call of ``fn`` takes, and what it returned; on CUDA the device is synchronised before the clock
    starts and before it stops (kernels are asynchronous)."""
    dev = _device(device) if device is not None else None
    _synchronise(dev)
    t0 = clock()
    out = fn()
    _synchronise(dev)
    return clock() - t0, out


def best_of(candidates: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 1, device: Any = None,
            clock: Clock = time.perf_counter) -> dict[str, float]:
    """The best (minimum) seconds of each candidate over ``repeats`` interleaved rounds.

    ``warmup`` untimed calls of every candidate come first (caches, lazy imports, allocator pools); then round r
    calls every candidate once, in the order given, so that a change of load during the measurement affects them all
    alike. A candidate's outputs are its own business (close over a dict to keep them)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {repeats}")
    dev = _device(device) if device is not None else None
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
            _synchronise(dev)
    best = {name: float("inf") for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            seconds, _ = timed(fn, dev, clock)
            best[name] = min(best[name], seconds)
    return best


@contextmanager
def pinned_threads(n: int | None) -> Iterator[int]:
    """torch's intra-op threads set to ``n`` inside the block and restored after it; yields the number in use (None
    leaves the setting alone and yields the current one)."""
    import torch

    saved = torch.get_num_threads()
    if n is not None:
        if n < 1:
            raise ValueError(f"threads must be at least 1, not {n}")
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(saved)


def matmul_peak(device: Any = None, size: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of a dense float32 ``size`` x ``size`` matrix product at the current thread count, best of ``repeats``
    after one warm-up call: the attainable rate that a share of the peak is measured against. Take it in the same run,
    under the same threads, as the work it is compared with."""
    import torch

    dev = _device(device)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dev)
    b = torch.randn(size, size, generator=gen).to(dev)
    seconds = best_of({"matmul": lambda: a @ b}, repeats=repeats, warmup=1, device=dev)["matmul"]
    return 2 * size**3 / seconds


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else what the platform module says, else None."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware"):
                return value.strip()
    return platform.processor() or None


def machine(load_before: Sequence[float] | None = None, device: Any = None) -> dict[str, Any]:
    """What a measurement ran on: torch's threads (now), the CPU count, the load averages before the measurement
    (``load_before``, taken by the caller when it started) and now, the OpenMP settings of the environment, the
    device, torch's version and the CPU model."""
    import torch

    dev = _device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return {
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "load_before": list(load_before) if load_before is not None else None,
        "load_after": load_average(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "device": str(dev) if dev.type != "cuda" else f"{dev} ({torch.cuda.get_device_name(dev)})",
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The rows' keys in the order they first appear (a table's columns)."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def report(name: str, rows: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None = None,
           load_before: Sequence[float] | None = None, device: Any = None) -> dict[str, Any]:
    """A saved benchmark: ``{"name", "machine", "rows", "columns", ...extra}``. ``extra`` holds ``command`` (what
    regenerates the file), ``targets`` (column -> target, shown beside the numbers) and any notes. The JSON is written
    with sorted keys (:func:`dumps`), so ``columns`` keeps the order in which a table shows the rows' keys."""
    out: dict[str, Any] = {"name": name, "machine": machine(load_before, device), "rows": [dict(r) for r in rows],
                           "columns": columns(rows)}
    for key, value in (extra or {}).items():
        if key in out:
            raise ValueError(f"report extra {key!r} would overwrite the report's own field")
        out[key] = value
    return out


def dumps(data: Any) -> str:
    """The saved form: sorted keys, one-space indent, a final newline; the same data gives the same bytes."""
    return json.dumps(data, indent=1, sort_keys=True) + "\n"
