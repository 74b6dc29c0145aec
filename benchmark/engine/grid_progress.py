"""Progress across a whole grid (cells done / running / failed, elapsed, an estimate of the rest) and the summary at
its end. The bar is tqdm's (elapsed and remaining time are its own) and ``--quiet`` silences it like every bar."""
from __future__ import annotations

import time
from collections import Counter
from typing import Iterable

from .grid import CellResult
from .progress import progress


class GridProgress:
    """Executors report each cell they start and finish; the bar shows how many run and how many failed."""

    def __init__(self, total: int) -> None:
        self.started = time.perf_counter()
        self.running = 0
        self.counts: Counter[str] = Counter()
        self._bar = progress(total=total, desc="cells", unit="cell", position=0, leave=True)
        self._show()

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
