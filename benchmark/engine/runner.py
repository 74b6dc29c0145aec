"""Running a grid of evaluation cells (defense x attack) and writing one record per cell.

A cell whose record exists is skipped, so an interrupted run resumes where it stopped, unless the record measured
another version of the attack or other model weights (then the cell runs again and its record is replaced); each record
is written atomically the moment its cell finishes, so Ctrl-C or a kill never loses a finished cell. A record that
cannot be written (a full disk) stops the grid with :class:`~benchmark.core.errors.WriteFailed`, which carries the
results of the cells that finished. Classifiers are built once per training configuration and adversarial inputs once
per (attacked model, attack) (see :mod:`benchmark.engine.cells`). Where the cells run is the executor's business
(:mod:`benchmark.engine.executors`): in this process by default, or as Ray tasks (:mod:`benchmark.engine.ray_executor`);
a cell's record is the same under either.
"""
from __future__ import annotations

import logging
from typing import Any

from benchmark.core.attack import Attack
from benchmark.core.defense import Defense
from benchmark.core.errors import RECORDS_WRITTEN, BenchError, WriteFailed
from benchmark.core.registry import ATTACKS, MODELS
from benchmark.core.vocab import Threat
from benchmark.data.dataset import check_dataset_name
from benchmark.engine.cells import (  # noqa: F401  (re-exported)
    Workbench,
    build_record,
    defended_correct,
    defended_predictions,
)
from benchmark.engine.executors import Executor, LocalExecutor, RecordKeeper
from benchmark.engine.grid import (  # noqa: F401
    Cell,
    CellResult,
    Grid,
    RunPlan,
    cell_config,
    ensure_writable,
)
from benchmark.engine.grid_progress import GridProgress
from benchmark.engine.provenance import git_commit
from benchmark.engine.threats import substitute_for
from benchmark.store import records
from benchmark.store.model_store import MODELS_SUBDIR, ModelStore
from benchmark.training.zoo import UserModel

log = logging.getLogger(__name__)


def _resolve(plan: RunPlan, defenses: dict[str, Defense], attacks: dict[str, Attack], user_model: UserModel | None
             ) -> tuple[dict[str, Defense], dict[str, Attack]]:
    """Check every name before any work starts (a typo must not surface an hour into a run); the instances of
    ``plan``'s defenses and attacks, built from the registries where ``defenses`` and ``attacks`` lack them."""
    from benchmark.core.defense import build_defense

    check_dataset_name(plan.dataset)
    if user_model is None:
        MODELS.get(plan.model)
    if plan.threat == Threat.TRANSFER:
        MODELS.get(substitute_for(plan.model, plan.seed)[0])
    for name in ("eot_samples", "eval_draws"):
        value = getattr(plan.threat_options, name)
        if value < 1:
            raise BenchError(f"--{name.replace('_', '-')} {value} must be a positive integer")
    if plan.batch_size < 1:
        raise BenchError(f"--batch-size {plan.batch_size} must be a positive integer")
    built = {name: defenses.get(name) or build_defense(name) for name in plan.defenses}
    if user_model is not None:
        trainers = [name for name, d in built.items() if d.trains_classifier]
        if trainers:
            raise BenchError(f"{', '.join(trainers)} train the classifier, so they cannot defend your own weights "
                             f"({user_model.name}); leave them out or evaluate a registered model")
    return built, {name: attacks.get(name) or ATTACKS.build(name) for name in plan.attacks}


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
                skipped[(d, a)] = CellResult(d, a, "skipped", record=old, message="record exists")
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


def run(plan: RunPlan, store: ModelStore | None = None, executor: Executor | None = None,
        defenses: dict[str, Defense] | None = None, attacks: dict[str, Attack] | None = None,
        user_model: UserModel | None = None) -> list[CellResult]:
    """Evaluate every (defense, attack) cell of ``plan``; returns one result per cell, in grid order.

    ``defenses`` and ``attacks`` are instances to use for some of the plan's names (the user's own objects), the rest
    come from the registries; ``user_model`` replaces the project's training of ``plan.model``."""
    defenses, attacks = _resolve(plan, defenses or {}, attacks or {}, user_model)
    git_commit()  # pin the commit of the code this process loaded, before anyone commits during a long run
    executor = executor or LocalExecutor()
    device = executor.driver_device(plan)
    ensure_writable(plan.results_dir)
    bench = Workbench(plan, device, store or ModelStore(shipped=plan.results_dir / MODELS_SUBDIR), defenses, attacks,
                      user_model=user_model)
    grid, results, standing = plan_grid(bench)
    keeper = RecordKeeper(grid, bench)
    keeper.ship_models(standing)  # records written before their weights were shipped get them now (once per model)
    tracker = GridProgress(total=len(grid.todo))
    try:
        results.update(executor.run_cells(grid, bench, keeper, tracker))
    except WriteFailed as exc:  # a full disk: the grid stops with the cells that finished (the CLI prints them)
        results.update(keeper.finished)
        exc.cells = [results[(d, a)] for d in plan.defenses for a in plan.attacks if (d, a) in results]
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM under `bench run`: say how many records were kept
        setattr(exc, RECORDS_WRITTEN, keeper.written)
        raise
    finally:
        keeper.release_all()
        tracker.close()
    return [results[(d, a)] for d in plan.defenses for a in plan.attacks]
