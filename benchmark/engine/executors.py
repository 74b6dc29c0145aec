"""Executors run the cells of a grid: ``local`` (in this process, one after the other) or ``ray``
(:mod:`benchmark.engine.ray_executor`). Both compute a cell with :func:`benchmark.engine.cells.evaluate_cell`, and both
leave the records to a :class:`RecordKeeper` in this process, which claims each cell (:mod:`benchmark.store.locks`),
skips one that another run finished meanwhile, writes each record atomically the moment its cell finishes and ships the
checkpoints it measured beside it.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Protocol

import torch

from benchmark.core.device import resolve_device
from benchmark.core.errors import WriteFailed
from benchmark.engine import cells
from benchmark.engine.cells import Workbench
from benchmark.engine.grid import Cell, CellResult, Grid, RunPlan
from benchmark.engine.grid_progress import GridProgress
from benchmark.store import records
from benchmark.store.locks import CellClaims
from benchmark.store.model_store import MODELS_SUBDIR, describe_os_error

log = logging.getLogger(__name__)


BUSY = "another bench run is evaluating it"


class Executor(Protocol):
    def driver_device(self, plan: RunPlan) -> torch.device:
        """The device of this process's workbench (checked before any work starts)."""

    def run_cells(self, grid: Grid, bench: Workbench, keeper: RecordKeeper, tracker: GridProgress
                  ) -> dict[Cell, CellResult]:
        """Evaluate ``grid.todo``; one result per cell."""


class RecordKeeper:
    """The results directory's side of a run: claims, the last check for a finished record, atomic writes.

    It remembers every cell it settled (:attr:`finished`) and counts the records it wrote (:attr:`written`), so that
    a grid stopped by a failed write or an interrupt can say what it kept. A record that cannot be written (a full
    disk) stops the grid with :class:`~benchmark.core.errors.WriteFailed`; weights that cannot be shipped beside
    their records only cost a warning (the records stand; the weights stay in the cache)."""

    def __init__(self, grid: Grid, bench: Workbench) -> None:
        self.grid, self.bench = grid, bench
        self.claims = CellClaims(grid.plan.results_dir)
        self.finished: dict[Cell, CellResult] = {}
        self.written = 0

    def claim(self, cell: Cell) -> CellResult | None:
        """None when this process now owns the cell and must evaluate it; else why not (as the cell's result)."""
        if not self.claims.try_claim(self.grid.record_id(cell)):
            self.finished[cell] = CellResult(*cell, "busy", message=BUSY)
            return self.finished[cell]
        old = records.load_one(self.grid.plan.results_dir, self.grid.config(cell), warn=False)  # planning warned
        if old is not None and self.bench.why_stale(old, *cell) is None:
            self.release(cell)  # another run wrote it after this one planned the grid
            self.finished[cell] = CellResult(*cell, "skipped", record=old,
                                             message="record exists (written by another run)")
            return self.finished[cell]
        return None

    def keep(self, result: CellResult) -> CellResult:
        """Write a finished cell's record, then let go of its claim. A record that cannot be written raises
        WriteFailed (no partial file is left: records are written atomically)."""
        try:
            if result.status == "done":
                assert result.record is not None
                try:
                    records.save(self.grid.plan.results_dir, result.record)
                except OSError as exc:
                    path = records.record_path(self.grid.plan.results_dir, result.record["config"])
                    raise WriteFailed(
                        f"cannot write the record of {result.defense} x {result.attack} to {path} "
                        f"({describe_os_error(exc)}); the grid stopped, the cells finished before are kept "
                        f"({self.written} record(s) written by this run) and rerunning the same command resumes"
                    ) from None
                self.written += 1
                self.ship_models([result.record])
        finally:
            self.release(result.cell)
        self.finished[result.cell] = result
        return result

    def ship_models(self, recs: Iterable[dict[str, Any]]) -> None:
        """Put the checkpoints ``recs`` measured (and their transfer substitutes) beside them in the results folder,
        so that they are kept with them and another machine measures the same weights (see ModelStore.ship)."""
        names: list[str] = []
        for rec in recs:
            names += rec.get("models") or {}
            if rec.get("substitute"):
                names.append(f"classifier/{rec['substitute']['key']}")
        for problem in self.bench.store.ship(names, self.grid.plan.results_dir / MODELS_SUBDIR):
            log.warning("%s; not shipped with its records", problem)

    def release(self, cell: Cell) -> None:
        self.claims.release(self.grid.record_id(cell))

    def release_all(self) -> None:
        self.claims.release_all()


class LocalExecutor:
    """Cells in this process, in grid order, sharing one workbench (classifiers, clean evaluations, adversarial
    inputs are computed once, as the grid's order puts cells that share them next to each other)."""

    def driver_device(self, plan: RunPlan) -> torch.device:
        return resolve_device(plan.device)

    def run_cells(self, grid: Grid, bench: Workbench, keeper: RecordKeeper, tracker: GridProgress
                  ) -> dict[Cell, CellResult]:
        results: dict[Cell, CellResult] = {}
        for cell in grid.todo:
            early = keeper.claim(cell)
            if early is not None:
                results[cell] = early
                tracker.finish(early, was_running=False)
                continue
            tracker.start()
            results[cell] = keeper.keep(cells.evaluate_cell(bench, *cell))  # looked up here: tests wrap it
            tracker.finish(results[cell])
        return results
