"""What :func:`benchmark.api.evaluate.evaluate` returns: the records of a run and views of them.

An example counts as robust at a budget only if the defended pipeline classifies it correctly when clean and under the
attack (the leaderboard's definition; plain adversarial accuracy would credit a defense for examples it gets wrong
anyway). The headline is the per-example worst case over every attack of the run, per budget, with its 95% Wilson
interval, as on the leaderboard.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from benchmark.core.budgets import format_eps
from benchmark.core.errors import BenchError
from benchmark.engine.grid import CellResult
from benchmark.report.headline import Headline, headlines
from benchmark.report.stats import wilson_interval
from benchmark.store import records
from benchmark.store.records import LoadedRecord


@dataclass(frozen=True)
class Cell:
    """One evaluated (defense, attack) cell: its status and, when it has a record, its per-example outcomes."""

    defense: str
    attack: str
    threat: str
    status: str  # done, skipped (its record existed), failed, busy (another run holds it)
    message: str
    eps: tuple[float, ...]
    norm: str  # of the budgets: linf, or the attack's own norm (l2 for pgd-l2)
    clean_correct: tuple[int, ...]
    adv_correct: tuple[tuple[int, ...], ...]  # per budget, per example (the defended pipeline under the attack)
    record: dict[str, Any] | None

    @property
    def n(self) -> int:
        return len(self.clean_correct)

    def robust(self, budget: int) -> list[bool]:
        """Per example: right when clean and under the attack at budget number ``budget``."""
        return [bool(c and a) for c, a in zip(self.clean_correct, self.adv_correct[budget])]

    def robust_accuracy(self) -> list[float]:
        return [sum(self.robust(b)) / max(self.n, 1) for b in range(len(self.eps))]


@dataclass(frozen=True)
class Budget:
    """One defense at one budget of the headline."""

    eps: float
    clean: float
    worst: float  # robust under every attack of the run (and every threat model)
    interval: tuple[float, float]  # 95% Wilson interval of ``worst``
    per_threat: dict[str, float]  # per threat model that ran this budget
    n: int


@dataclass(frozen=True)
class DefenseHeadline:
    defense: str
    budgets: tuple[Budget, ...]
    flags: tuple[str, ...]  # sanity-check findings (empty: none)


def _cell(result: CellResult) -> Cell:
    rec = result.record
    if rec is None:
        return Cell(result.defense, result.attack, "", result.status, result.message, (), "linf", (), (), None)
    attack = rec.get("attack") or {}
    norm = attack.get("norm", "linf") if attack.get("kind") == "fixed-eps" else "linf"
    out = rec["outcomes"]
    return Cell(result.defense, result.attack, rec["config"]["threat"], result.status, result.message,
                tuple(float(e) for e in rec["config"]["eps"]), norm, tuple(out["clean_correct"]),
                tuple(tuple(a) for a in out["adv_correct"]), rec)


class Results:
    """The cells of one evaluation, in grid order (defense by defense, attack by attack)."""

    def __init__(self, cells: Sequence[CellResult], eps: Sequence[float]) -> None:
        self.cells = [_cell(r) for r in cells]
        self.eps = tuple(eps)

    @property
    def records(self) -> list[dict[str, Any]]:
        """The records of the cells that have one, exactly as ``bench run`` writes them."""
        return [c.record for c in self.cells if c.record is not None]

    @property
    def failed(self) -> list[Cell]:
        return [c for c in self.cells if c.status == "failed"]

    @property
    def headline(self) -> list[DefenseHeadline]:
        """Per defense, per budget of the run: clean accuracy, the worst case over every attack with its 95%
        interval, the worst case per threat model, and the sanity checks' findings; strongest defense first."""
        loaded = [LoadedRecord(Path(r["id"]), r) for r in self.records]
        if not loaded:
            return []
        return [self._headline(h) for h in headlines(loaded, self.eps)]

    def _headline(self, h: Headline) -> DefenseHeadline:
        n = h.overall.n
        budgets = tuple(
            Budget(eps=e, clean=h.overall.clean / max(n, 1), worst=h.overall.worst[i] / max(n, 1),
                   interval=wilson_interval(h.overall.worst[i], n),
                   per_threat={t: c.worst[i] / max(c.n, 1) for t, c in h.per_threat.items()
                               if c.worst[i] is not None}, n=n)
            for i, e in enumerate(self.eps))
        return DefenseHeadline(h.defense, budgets, h.flags)

    def save(self, results_dir: str | Path) -> list[Path]:
        """Write every record under ``results_dir`` (as ``bench run --results-dir`` would); the paths written."""
        return [records.save(Path(results_dir), r) for r in self.records]

    def to_frame(self) -> Any:
        """A pandas DataFrame, one row per defense x attack x budget x threat model (needs the ``pandas`` extra)."""
        try:
            import pandas as pd
        except ImportError:
            raise BenchError('to_frame() needs pandas: pip install "defensebench[pandas]"') from None
        rows = []
        for c in self.cells:
            if c.record is None:
                rows.append({"defense": c.defense, "attack": c.attack, "threat": c.threat, "status": c.status,
                             "message": c.message})
                continue
            cfg = c.record["config"]
            draws = c.record["outcomes"].get("draws_correct")  # a randomised pipeline evaluated over several draws
            per_draw = int(c.record["defense"].get("eval_draws", 1))
            for b, e in enumerate(c.eps):
                adv = sum(c.adv_correct[b]) / max(c.n, 1)
                mean = sum(draws["adv"][b]) / (per_draw * max(c.n, 1)) if draws else adv
                rows.append({"dataset": cfg["dataset"], "model": cfg["model"], "defense": c.defense,
                             "attack": c.attack, "threat": c.threat, "eps": e, "norm": c.norm, "n": c.n,
                             "clean_accuracy": sum(c.clean_correct) / max(c.n, 1),
                             "robust_accuracy": sum(c.robust(b)) / max(c.n, 1), "adversarial_accuracy": adv,
                             "adversarial_accuracy_mean_over_draws": mean,
                             "status": c.status, "record_id": c.record["id"]})
        return pd.DataFrame(rows)

    def table(self) -> str:
        """The cells, then per defense the worst case over the run's attacks at each budget (what ``bench run``
        prints)."""
        from tabulate import tabulate

        rows = []
        for c in self.cells:
            if c.record is None:
                rows.append([c.defense, c.attack, c.status, "", "", c.message])
                continue
            robust = "  ".join(f"{format_eps(e, c.norm)}: {100 * a:.1f}" for e, a in zip(c.eps, c.robust_accuracy()))
            clean = 100 * sum(c.clean_correct) / max(c.n, 1)
            rows.append([c.defense, c.attack, c.status, f"{clean:.1f}", robust, f"n={c.n}"])
        text = tabulate(rows, headers=["defense", "attack", "status", "clean %",
                                       "robust % per budget (right when clean and attacked)", ""], tablefmt="simple")
        worst = []
        for h in self.headline:
            for b in h.budgets:
                lo, hi = b.interval
                worst.append([h.defense, format_eps(b.eps), f"{100 * b.clean:.1f}", f"{100 * b.worst:.1f}",
                              f"{100 * lo:.0f}-{100 * hi:.0f}", b.n])
        if worst:
            text += "\n\nworst case over these attacks, per budget (L-inf; 95% Wilson interval)\n"
            text += tabulate(worst, headers=["defense", "budget", "clean %", "worst %", "interval %", "n"],
                             tablefmt="simple")
        return text

    def __repr__(self) -> str:
        done = sum(c.record is not None for c in self.cells)
        return f"<Results: {len(self.cells)} cells, {done} with records, budgets {list(self.eps)}>"

    def __str__(self) -> str:
        return self.table()
