"""The Ray executor (``bench run --executor ray``): each cell a Ray task; this process only plans and writes records.

Tasks come in three kinds, each depending on the one before through Ray's object store:

1. models: one task per classifier group (defenses that share a training configuration) trains or loads the
   classifier, the defenses' own models (PixelDefend's PixelCNN...) and, under transfer, the substitute, in its
   worker's store, and returns their checkpoint files (:mod:`benchmark.store.modelpack`);
2. adversarial inputs: under oblivious and transfer, one task per (group, attack) that more than one cell uses, as the
   local executor computes them once for every defense of a group;
3. cells: one task each; it unpacks the checkpoints into its worker's store, evaluates the cell with
   :func:`benchmark.engine.cells.evaluate_cell` (the local executor's function) and returns the record, which the driver
   writes (workers need no shared file system).

A task asks for a GPU when the cluster has any (``--gpus-per-cell``), else for one CPU. A worker that dies during a
task is retried by Ray (``--cell-retries``), then the cell is reported as failed with Ray's error and the rest of the
grid goes on. A killed driver loses no finished record: rerunning resumes like a local run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from collections import Counter
from typing import Any

import torch

from benchmark.core.device import resolve_device
from benchmark.core.errors import BenchError, CellFailed
from benchmark.core.progress import is_quiet, set_quiet
from benchmark.core.vocab import Threat
from benchmark.engine.cells import SharedAdversarial, Workbench, evaluate_cell
from benchmark.engine.executors import RecordKeeper
from benchmark.engine.grid import Cell, CellResult, Grid, RunPlan
from benchmark.engine.grid_progress import GridProgress
from benchmark.store.model_store import MODELS_SUBDIR, ModelStore
from benchmark.store.modelpack import ModelPack, RecordingStore, unpack

log = logging.getLogger(__name__)

INSTALL_HINT = '--executor ray needs Ray, an optional extra: pip install -e ".[ray]" (or pip install ray)'


# -- tasks (run in Ray workers) ------------------------------------------------------------------------------------

def _workbench(plan: RunPlan, store: ModelStore) -> Workbench:
    set_quiet(True)  # no progress bars in workers: the driver shows the grid's
    return Workbench(plan, resolve_device(plan.device), store)


def build_models(plan: RunPlan, defenses: list[str]) -> ModelPack:
    """Task: every checkpoint the cells of ``defenses`` (one classifier group) need, packed."""
    store = RecordingStore(shipped=plan.results_dir / MODELS_SUBDIR)  # the driver's shipped weights, if it sees them
    bench = _workbench(plan, store)
    for defense in defenses:
        try:
            bench.prepare(defense)
        except CellFailed:
            pass  # the defense's cells report it
    return store.pack()


def _worker_bench(plan: RunPlan, models: ModelPack) -> Workbench:
    store = ModelStore()
    unpack(store, models)
    return _workbench(plan, store)


def shared_adversarial(plan: RunPlan, defense: str, attack: str, models: ModelPack
                       ) -> tuple[str, SharedAdversarial | CellFailed]:
    """Task: the adversarial inputs of ``attack`` that every cell of ``defense``'s group shares."""
    return _worker_bench(plan, models).shareable_adversarial(defense, attack)


def evaluate_cell_task(plan: RunPlan, defense: str, attack: str, models: ModelPack,
                       shared: tuple[str, SharedAdversarial | CellFailed] | None) -> dict[str, Any]:
    """Task: one cell, as a plain dict (a :class:`CellResult` with its record)."""
    bench = _worker_bench(plan, models)
    if shared is not None:
        bench.share(shared)
    return dataclasses.asdict(evaluate_cell(bench, defense, attack))


# -- the driver ----------------------------------------------------------------------------------------------------

# Ray's own settings (environment variables its processes read at start) for a cluster started on this machine:
# loopback only, and patient. A raylet gives a starting worker 60 s to register and its agents less: on a busy
# machine a worker that imports torch misses that, is restarted and misses it again. Users' own values win.
LOCAL_CLUSTER_ENV = {
    # listen on loopback only (Ray reads this when it is imported); a cluster joined with --address keeps Ray's own
    # choice of address, which the other nodes must reach
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_worker_register_timeout_seconds": "600",
    "RAY_agent_register_timeout_ms": "600000",
}


def local_cluster_env() -> None:
    """Set :data:`LOCAL_CLUSTER_ENV` (where not set) before Ray is imported and its processes are started here."""
    for name, value in LOCAL_CLUSTER_ENV.items():
        os.environ.setdefault(name, value)


def _import_ray(local_cluster: bool) -> Any:
    if local_cluster:
        local_cluster_env()
    try:
        import ray
    except ImportError:
        raise BenchError(INSTALL_HINT) from None
    return ray


def describe_failure(exc: BaseException) -> str:
    """One line for a cell whose task raised or whose worker died for good."""
    cause = getattr(exc, "cause", None)  # RayTaskError: the exception raised inside the task
    shown = cause if isinstance(cause, BaseException) else exc
    text = str(shown).strip().splitlines()
    return f"{type(shown).__name__}: {text[0] if text else ''}".rstrip(": ")


class RayExecutor:
    """Runs cells as Ray tasks on the cluster at ``address`` (None: a cluster of ``num_cpus`` CPUs started here, on
    loopback, for this run only)."""

    def __init__(self, address: str | None = None, gpus_per_cell: float | None = None, retries: int = 2,
                 worker_cache: str | None = None, num_cpus: int | None = None) -> None:
        self.ray = _import_ray(address is None)  # before any work: a missing extra is a one-line error
        if retries < 0:
            raise BenchError(f"--cell-retries {retries} must be 0 or more")
        self.address, self.gpus_per_cell, self.retries = address, gpus_per_cell, retries
        self.worker_cache, self.num_cpus = worker_cache, num_cpus

    def driver_device(self, plan: RunPlan) -> torch.device:
        # the driver computes nothing: each task resolves --device on its own worker. Only the name is checked here.
        name = (plan.device or "auto").lower()
        if name not in ("auto", "cpu") and not name.startswith("cuda"):
            resolve_device(name)  # raises the usual one-line error
        return torch.device("cpu")

    # -- connection --------------------------------------------------------------------------------------------------
    def connect(self) -> bool:
        """Join (or start) the cluster; True when this run connected and must disconnect."""
        ray = self.ray
        if ray.is_initialized():
            return False
        env = {"BENCH_QUIET": "1", "OMP_NUM_THREADS": "1"}  # a task asks for one CPU: one torch thread
        if self.worker_cache:
            env["BENCH_CACHE"] = str(self.worker_cache)
        quiet = is_quiet()
        kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": not quiet,
                                  "logging_level": logging.ERROR if quiet else logging.WARNING}
        if self.address is None:
            kwargs.update(num_cpus=self.num_cpus or os.cpu_count(), include_dashboard=False)
        try:
            ray.init(address=self.address, **kwargs)
        except Exception as exc:  # Ray raises plain Exception too (a node that did not start in time)
            if self.address is None:
                raise BenchError(f"could not start a Ray cluster on this machine ({describe_failure(exc)})") from None
            raise BenchError(f"cannot connect to the Ray cluster at {self.address} ({describe_failure(exc)}); "
                             "check --address (or leave it out to start a cluster on this machine)") from None
        return True

    def _resources(self) -> tuple[dict[str, float], int]:
        """What each task asks for, and how many cells the cluster can run at once."""
        total = self.ray.cluster_resources()
        gpus = float(total.get("GPU", 0))
        per_cell = self.gpus_per_cell if self.gpus_per_cell is not None else (1.0 if gpus else 0.0)
        if per_cell > 0 and gpus == 0:
            raise BenchError(f"--gpus-per-cell {per_cell:g}: the Ray cluster has no GPUs; use --gpus-per-cell 0")
        if per_cell > gpus:
            raise BenchError(f"--gpus-per-cell {per_cell:g}: the Ray cluster has only {gpus:g} GPU(s)")
        slots = int(gpus // per_cell) if per_cell else int(total.get("CPU", 1))
        return {"num_cpus": 1, "num_gpus": per_cell}, max(slots, 1)

    # -- the grid ----------------------------------------------------------------------------------------------------
    def run_cells(self, grid: Grid, bench: Workbench, keeper: RecordKeeper, tracker: GridProgress
                  ) -> dict[Cell, CellResult]:
        results: dict[Cell, CellResult] = {}
        mine: list[Cell] = []
        for cell in grid.todo:
            early = keeper.claim(cell)
            if early is None:
                mine.append(cell)
            else:
                results[cell] = early
                tracker.finish(early, was_running=False)
        if not mine:
            return results
        # Ray's driver prints notices (a worker died...) on stdout, which is the results table's: they go to stderr,
        # or nowhere under --quiet (a cell that fails for good is reported anyway)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull if is_quiet() else sys.stderr):
            return self._run(grid, bench, keeper, tracker, mine, results)

    def _run(self, grid: Grid, bench: Workbench, keeper: RecordKeeper, tracker: GridProgress, mine: list[Cell],
             results: dict[Cell, CellResult]) -> dict[Cell, CellResult]:
        connected = self.connect()
        try:
            resources, slots = self._resources()
            pending = self._submit(grid.plan, mine, bench, resources)
            tracker.set_running(min(len(pending), slots))
            while pending:
                ready, _ = self.ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    cell = pending.pop(ref)
                    results[cell] = keeper.keep(self._result(cell, ref))
                    tracker.finish(results[cell], was_running=False)
                tracker.set_running(min(len(pending), slots))
        finally:
            if connected:
                self.ray.shutdown()  # ends this job: its unfinished tasks are cancelled
        return results

    def _submit(self, plan: RunPlan, cells: list[Cell], bench: Workbench, resources: dict[str, float]
                ) -> dict[Any, Cell]:
        ray = self.ray
        options = {**resources, "max_retries": self.retries}
        models_task = ray.remote(build_models)
        adversarial_task = ray.remote(shared_adversarial)
        cell_task = ray.remote(evaluate_cell_task)

        groups: dict[str, list[str]] = {}
        for defense, _ in cells:
            members = groups.setdefault(bench.classifier_key(defense), [])
            if defense not in members:
                members.append(defense)
        models = {key: models_task.options(name=f"models {'+'.join(members)}", **options).remote(plan, members)
                  for key, members in groups.items()}

        users = Counter((bench.classifier_key(d), a) for d, a in cells)
        shared: dict[tuple[str, str], Any] = {}
        if plan.threat != Threat.ADAPTIVE:  # adaptive inputs are per defense: nothing to share
            for (key, attack), count in users.items():
                if count > 1:
                    first = next(d for d, a in cells if a == attack and bench.classifier_key(d) == key)
                    shared[(key, attack)] = adversarial_task.options(name=f"adversarial {attack}", **options).remote(
                        plan, first, attack, models[key])

        pending: dict[Any, Cell] = {}
        for defense, attack in cells:
            key = bench.classifier_key(defense)
            ref = cell_task.options(name=f"cell {defense} x {attack}", **options).remote(
                plan, defense, attack, models[key], shared.get((key, attack)))
            pending[ref] = (defense, attack)
        return pending

    def _result(self, cell: Cell, ref: Any) -> CellResult:
        try:
            return CellResult(**self.ray.get(ref))
        except self.ray.exceptions.RayError as exc:
            retried = f" (after {self.retries} retries)" if self._worker_died(exc) else ""
            return CellResult(*cell, "failed", message=describe_failure(exc) + retried)

    def _worker_died(self, exc: BaseException) -> bool:
        errors = self.ray.exceptions
        died = tuple(getattr(errors, name) for name in ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError")
                     if hasattr(errors, name))
        return isinstance(exc, died) or isinstance(getattr(exc, "cause", None), died)

