"""Progress across a whole grid (cells done / running / failed, elapsed, an estimate of the rest) and the summary at
its end. The bar is tqdm's (elapsed and remaining time are its own) and ``--quiet`` silences it like every bar."""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Iterable

from benchmark.core.progress import progress
from benchmark.engine.grid import CellResult


class GridProgress:
    """Executors report each cell they start and finish; the bar shows how many run and how many failed."""

    def __init__(self, total: int, tick_seconds: float = 1.0) -> None:
        self.started = time.perf_counter()
        self.running = 0
        self.counts: Counter[str] = Counter()
        self._bar = progress(total=total, desc="cells", unit="cell", position=0, leave=True)
        self._show()
        # tqdm redraws only when told: without a clock of its own the bar's elapsed time stands still for as long as
        # one cell runs (minutes, for a slow attack)
        self._stop = threading.Event()
        self._clock = None
        if not self._bar.disable:
            self._clock = threading.Thread(target=self._tick, args=(tick_seconds,), name="grid-clock", daemon=True)
            self._clock.start()

    def _tick(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            self._bar.refresh()

    def start(self, cells: int = 1) -> None:
        self.running += cells
        self._show()

    def set_running(self, cells: int) -> None:
        """Ray: how many of the submitted cells can be running now (at most the cluster's slots)."""
        self.running = cells
        self._show()

    def finish(self, result: CellResult, was_running: bool = True) -> None:
        self.running -= int(was_running)
        self.counts[result.status] += 1
        self._bar.update(1)
        self._show()

    def _show(self) -> None:
        self._bar.set_postfix_str(f"running {self.running}, failed {self.counts['failed']}", refresh=False)

    def close(self) -> None:
        self._stop.set()
        if self._clock is not None:
            self._clock.join()
        self._bar.close()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def summary_line(results: Iterable[CellResult], seconds: float) -> str:
    """``8 cells: 6 done, 1 skipped, 1 failed in 12.3 s`` (statuses in a fixed order, absent ones left out)."""
    results = list(results)
    counts = Counter(r.status for r in results)
    parts = [f"{counts[s]} {s}" for s in ("done", "skipped", "busy", "failed") if counts[s]]
    return f"{len(results)} cells: {', '.join(parts) or 'none'} in {seconds:.1f} s"
