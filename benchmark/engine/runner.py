"""Running a grid of evaluation cells (defense x attack) and writing one record per cell.

A cell whose record exists is skipped, so an interrupted run resumes where it stopped, unless the record measured
another version of the attack or other model weights (then the cell runs again and its record is replaced); each
record is written atomically the moment its cell finishes, so Ctrl-C or a kill never loses a finished cell.
Classifiers are built once per training configuration and adversarial inputs once per (attacked model, attack) (see
:mod:`benchmark.cells`).
Where the cells run is the executor's business (:mod:`benchmark.executors`): in this process by default, or as Ray
tasks (:mod:`benchmark.ray_executor`); a cell's record is the same under either.
"""
from __future__ import annotations

import logging
from typing import Any

from . import records
from .cells import Workbench, build_record, defended_correct, defended_predictions  # noqa: F401  (re-exported)
from .errors import BenchError
from .executors import Executor, LocalExecutor, RecordKeeper
from .grid import Cell, CellResult, Grid, RunPlan, cell_config, ensure_writable  # noqa: F401
from .grid_progress import GridProgress
from .provenance import git_commit
from .registry import ATTACKS, DATASETS, MODELS
from .store import MODELS_SUBDIR, ModelStore
from .threats import substitute_for
from .vocab import Threat

log = logging.getLogger(__name__)


def _resolve(plan: RunPlan) -> tuple[dict, dict]:
    """Check every name before any work starts: a typo must not surface an hour into a run."""
    from .defense import build_defense

    DATASETS.get(plan.dataset)
    MODELS.get(plan.model)
    if plan.threat == Threat.TRANSFER:
        MODELS.get(substitute_for(plan.model, plan.seed)[0])
    for name in ("eot_samples", "eval_draws"):
        value = getattr(plan.threat_options, name)
        if value < 1:
            raise BenchError(f"--{name.replace('_', '-')} {value} must be a positive integer")
    defenses = {name: build_defense(name) for name in plan.defenses}
    attacks = {name: ATTACKS.get(name).factory() for name in plan.attacks}
    if plan.batch_size < 1:
        raise BenchError(f"--batch-size {plan.batch_size} must be a positive integer")
    return defenses, attacks


def plan_grid(bench: Workbench) -> tuple[Grid, dict[Cell, CellResult], list[dict[str, Any]]]:
    """The cells still to evaluate, the skipped ones and the records that let them be skipped (they exist and still
    describe the attack and the model weights). Cells that share a classifier (defenses with one training
    configuration) and then an attack come next to each other, so that one process builds each classifier and each
    set of adversarial inputs once."""
    plan = bench.plan
    n = len(bench.points)
    attack_eps = {a: bench.attack(a).budgets(bench.eps) for a in plan.attacks}
    skipped: dict[Cell, CellResult] = {}
    standing: list[dict[str, Any]] = []
    todo: list[Cell] = []
    for d in plan.defenses:
        for a in plan.attacks:
            old = records.load_one(plan.results_dir, cell_config(plan, d, a, attack_eps[a], n))
            changed = None if old is None else bench.why_stale(old, d, a)
            if old is not None and changed is None:
                skipped[(d, a)] = CellResult(d, a, "skipped", message="record exists")
                standing.append(old)
            else:
                if changed:
                    log.warning("%s x %s: %s; running the cell again", d, a, changed)
                todo.append((d, a))
    groups: dict[str, int] = {}
    for d, _ in todo:
        groups.setdefault(bench.classifier_key(d), len(groups))
    order = {name: i for i, name in enumerate([*plan.defenses, *plan.attacks])}
    todo.sort(key=lambda c: (groups[bench.classifier_key(c[0])], order[c[1]], order[c[0]]))
    return Grid(plan, todo, bench.eps, n, attack_eps), skipped, standing


def run(plan: RunPlan, store: ModelStore | None = None, executor: Executor | None = None) -> list[CellResult]:
    """Evaluate every (defense, attack) cell of ``plan``; returns one result per cell, in grid order."""
    defenses, attacks = _resolve(plan)
    git_commit()  # pin the commit of the code this process loaded, before anyone commits during a long run
    executor = executor or LocalExecutor()
    device = executor.driver_device(plan)
    ensure_writable(plan.results_dir)
    bench = Workbench(plan, device, store or ModelStore(shipped=plan.results_dir / MODELS_SUBDIR), defenses, attacks)
    grid, results, standing = plan_grid(bench)
    keeper = RecordKeeper(grid, bench)
    keeper.ship_models(standing)  # records written before their weights were shipped get them now (once per model)
    tracker = GridProgress(total=len(grid.todo))
    try:
        results.update(executor.run_cells(grid, bench, keeper, tracker))
    finally:
        keeper.release_all()
        tracker.close()
    return [results[(d, a)] for d in plan.defenses for a in plan.attacks]
