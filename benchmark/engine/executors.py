"""Executors run the cells of a grid: ``local`` (in this process, one after the other) or ``ray``
(:mod:`benchmark.ray_executor`). Both compute a cell with :func:`benchmark.cells.evaluate_cell`, and both leave the
records to a :class:`RecordKeeper` in this process, which claims each cell (:mod:`benchmark.locks`), skips one that
another run finished meanwhile, writes each record atomically the moment its cell finishes and ships the checkpoints
it measured beside it.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Protocol

import torch

from . import cells, records
from .cells import Workbench
from .device import resolve_device
from .grid import Cell, CellResult, Grid, RunPlan
from .grid_progress import GridProgress
from .locks import CellClaims
from .store import MODELS_SUBDIR

log = logging.getLogger(__name__)


BUSY = "another bench run is evaluating it"


class Executor(Protocol):
    def driver_device(self, plan: RunPlan) -> torch.device:
        """The device of this process's workbench (checked before any work starts)."""

    def run_cells(self, grid: Grid, bench: Workbench, keeper: RecordKeeper, tracker: GridProgress
                  ) -> dict[Cell, CellResult]:
        """Evaluate ``grid.todo``; one result per cell."""


class RecordKeeper:
    """The results directory's side of a run: claims, the last check for a finished record, atomic writes."""

    def __init__(self, grid: Grid, bench: Workbench) -> None:
        self.grid, self.bench = grid, bench
        self.claims = CellClaims(grid.plan.results_dir)

    def claim(self, cell: Cell) -> CellResult | None:
        """None when this process now owns the cell and must evaluate it; else why not (as the cell's result)."""
        if not self.claims.try_claim(self.grid.record_id(cell)):
            return CellResult(*cell, "busy", message=BUSY)
        old = records.load_one(self.grid.plan.results_dir, self.grid.config(cell))
        if old is not None and self.bench.why_stale(old, *cell) is None:
            self.release(cell)  # another run wrote it after this one planned the grid
            return CellResult(*cell, "skipped", message="record exists (written by another run)")
        return None

    def keep(self, result: CellResult) -> CellResult:
        """Write a finished cell's record, then let go of its claim."""
        try:
            if result.status == "done":
                assert result.record is not None
                records.save(self.grid.plan.results_dir, result.record)
                self.ship_models([result.record])
        finally:
            self.release(result.cell)
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
