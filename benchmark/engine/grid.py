"""The grid of a run: its plan, its cells (defense x attack), each cell's config and result.

Kept apart from the runner so that the per-cell computation (:mod:`benchmark.engine.cells`), the executors
(:mod:`benchmark.engine.executors`, :mod:`benchmark.engine.ray_executor`) and the runner can all use it without
importing each other.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from benchmark.core.errors import BenchError
from benchmark.core.vocab import Threat
from benchmark.engine.threats import ThreatOptions, config_options
from benchmark.store import records

if TYPE_CHECKING:
    from benchmark.core.attack import Attack
    from benchmark.core.defense import Defense


@dataclass(frozen=True)
class RunPlan:
    dataset: str = "mnist5k"
    model: str = "resnet"
    defenses: tuple[str, ...] = ("none",)
    attacks: tuple[str, ...] = ("fgsm",)
    eps: tuple[float, ...] | None = None  # None: the data set's defaults (the paper's budgets)
    n: int | None = 100
    threat: Threat = Threat.OBLIVIOUS
    threat_options: ThreatOptions = ThreatOptions()
    seed: int = 0
    device: str = "auto"
    results_dir: Path = Path("results")
    batch_size: int = 250
    data_root: str | None = None
    download: bool = False


Cell = tuple[str, str]  # (defense, attack)


@dataclass
class CellResult:
    defense: str
    attack: str
    status: str  # "done", "skipped" (record existed), "failed" or "busy" (another run holds its claim)
    record: dict[str, Any] | None = None
    message: str = ""

    @property
    def cell(self) -> Cell:
        return (self.defense, self.attack)


@dataclass(frozen=True)
class Grid:
    """What a run has to do: the cells to evaluate (``todo``, in the order the local executor runs them, cells that
    share a classifier and an attack next to each other) and their records' config."""

    plan: RunPlan
    todo: list[Cell]
    eps: tuple[float, ...]  # the data set's (or the plan's) budgets; an attack may take a subset
    n: int
    attack_eps: dict[str, tuple[float, ...]] = field(default_factory=dict)  # per attack: its own budgets

    def config(self, cell: Cell) -> dict[str, Any]:
        defense, attack = cell
        return cell_config(self.plan, defense, attack, self.attack_eps[attack], self.n)

    def record_id(self, cell: Cell) -> str:
        return records.record_id(self.config(cell))


def cell_config(plan: RunPlan, defense: str, attack: str, eps: tuple[float, ...], n: int) -> dict[str, Any]:
    """The cell's config; ``eps`` are the attack's own budgets (:meth:`Attack.budgets`)."""
    return records.normalise_config({
        "dataset": plan.dataset, "model": plan.model, "defense": defense, "attack": attack,
        "threat": plan.threat.value, "eps": list(eps), "n": n, "seed": plan.seed,
        records.THREAT_OPTIONS: config_options(plan.threat, plan.model, plan.seed, plan.threat_options),
    })


def ensure_writable(results_dir: Path) -> None:
    try:
        records.records_dir(results_dir).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=records.records_dir(results_dir), prefix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BenchError(f"results directory {results_dir} is not writable ({exc.strerror}); "
                         "choose another with --results-dir") from None


def _as_recorded(value: Any) -> Any:
    """``value`` as a record holds it after the JSON round trip (tuples become lists), so it compares equal to it."""
    return json.loads(json.dumps(value))


def _differing(have: dict[str, Any], want: dict[str, Any], keys: Iterable[str]) -> list[str]:
    """The ``keys`` whose values differ between what a record has and what the cell would now write, sorted."""
    return sorted(k for k in keys if have.get(k) != want.get(k))


def models_changed(record: dict[str, Any], models: dict[str, str]) -> str | None:
    """Why ``record`` does not describe the pipeline made of ``models`` (``"<kind>/<key>": weights SHA-256``), or
    None. The same training config retrained on another machine gives other weights and other numbers, so a record
    counts only for the weights it measured."""
    have = record.get("models")
    if have is None:
        return "its record predates model fingerprints, so which weights it measured is unknown"
    diff = _differing(have, models, {*have, *models})
    if diff:
        return f"its record measured other model weights ({', '.join(diff)})"
    return None


def attack_changed(record: dict[str, Any], attack: Attack) -> str | None:
    """Why ``record`` no longer describes what ``attack`` does now (its implementation or one of its options
    changed since it was written), or None. Record ids hash the cell, not the attack's settings, so that tuning an
    attack re-runs its cells instead of leaving numbers from the old attack on the leaderboard."""
    want = _as_recorded({"implementation": attack.library, "options": attack.options()})
    have = record.get("attack") or {}
    have_options = have.get("options") or {}
    if have.get("implementation") != want["implementation"]:
        return f"the attack's implementation changed ({have.get('implementation')} -> {want['implementation']})"
    diff = _differing(have_options, want["options"], want["options"])
    if diff:
        return f"the attack's options changed ({', '.join(diff)})"
    return None


def defense_changed(record: dict[str, Any], defense: Defense) -> str | None:
    """Why ``record`` no longer describes what the prepared ``defense`` does (one of its options changed since it was
    written, e.g. a tuned iteration count), or None. Like an attack's settings, a defense's are not in the record id,
    so without this check a retuned defense would keep the old setting's numbers on the leaderboard. Compared both
    ways: a record holds exactly the defense's options (an attack's record also holds the adaptive wrapper's)."""
    want = _as_recorded(defense.options())
    have = (record.get("defense") or {}).get("options") or {}
    diff = _differing(have, want, {*have, *want})
    if diff:
        return f"the defense's options changed ({', '.join(diff)})"
    return None


def why_stale(record: dict[str, Any], attack: Attack, models: dict[str, str], defense: Defense) -> str | None:
    """Why an existing record must be measured again (another version of the attack, other model weights, other
    settings of the defense), or None when it stands. ``defense`` must be prepared, since preparing settles options
    such as a tuned count: :meth:`benchmark.engine.cells.Workbench.why_stale` sees to that."""
    return attack_changed(record, attack) or models_changed(record, models) or defense_changed(record, defense)
