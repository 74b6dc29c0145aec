"""Figures from the records (matplotlib), written under ``results/figures/``; the leaderboard links every figure there.

- ``<dataset>_<model>_accuracy.png``: a heat map of accuracy per defense and attack, one panel per budget.
- ``<dataset>_<model>_robustness_curve.png``: per defense, accuracy under adaptive PGD against the budget, from the
  adaptive records of :data:`CURVE_ATTACKS` with at least :data:`CURVE_MIN_BUDGETS` budgets, with 95% Wilson
  intervals; the clean accuracy is the point at budget 0.

Both use the records the leaderboard combines (:func:`benchmark.report.instances.split_by_weights`): one set of model
weights per defense.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmark.core.budgets import format_eps
from benchmark.core.registry import natural_key
from benchmark.report.instances import split_by_weights
from benchmark.report.leaderboard import budget_norm
from benchmark.report.stats import wilson_interval
from benchmark.store.paths import FIGURES_SUBDIR
from benchmark.store.records import LoadedRecord, load_all

CURVE_ATTACKS = ("pgd", "pgd-restarts")
CURVE_MIN_BUDGETS = 3


def _save(fig: Any, path: Path) -> Path:
    """Write and close a figure; no software tag, so that the same records give the same bytes."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return path


def _grid(recs: list[LoadedRecord], eps_index: int) -> tuple[list[str], list[str], list[list[float]]]:
    defenses = sorted({r.data["config"]["defense"] for r in recs}, key=natural_key)
    attacks = ["clean"] + sorted({r.data["config"]["attack"] for r in recs}, key=natural_key)
    cell: dict[tuple[str, str], float] = {}
    for r in recs:
        d, out = r.data["config"]["defense"], r.data["outcomes"]
        n = len(out["label"])
        cell[(d, "clean")] = 100 * sum(out["clean_correct"]) / n
        cell[(d, r.data["config"]["attack"])] = 100 * sum(out["adv_correct"][eps_index]) / n
    values = [[cell.get((d, a), float("nan")) for a in attacks] for d in defenses]
    return defenses, attacks, values


def _combined(results_dir: Path) -> list[LoadedRecord]:
    return split_by_weights(load_all(results_dir))[0]


def accuracy_heatmaps(results_dir: Path) -> list[Path]:
    """One figure per (data set, model, budgets) of oblivious records with L-infinity budgets (an attack in another
    norm, pgd-l2, would otherwise overwrite the file with a figure of its own budgets); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str, tuple[float, ...]], list[LoadedRecord]] = {}
    for r in _combined(results_dir):
        c = r.data["config"]
        if c["threat"] == "oblivious" and budget_norm(r) == "linf":
            groups.setdefault((c["dataset"], c["model"], tuple(c["eps"])), []).append(r)
    written = []
    for (dataset, model, eps), recs in sorted(groups.items()):
        fig, axes = plt.subplots(1, len(eps), figsize=(7 * len(eps), 0.5 * 8 + 2), squeeze=False)
        for i, e in enumerate(eps):
            defenses, attacks, values = _grid(recs, i)
            ax = axes[0][i]
            ax.imshow(values, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
            ax.set_xticks(range(len(attacks)), attacks, rotation=60, ha="right")
            ax.set_yticks(range(len(defenses)), defenses)
            for y, row in enumerate(values):
                for x, v in enumerate(row):
                    if v == v:  # not NaN
                        ax.text(x, y, f"{v:.0f}", ha="center", va="center", fontsize=8)
            ax.set_title(f"{dataset} / {model}: accuracy (%) at eps {format_eps(e)}")
        written.append(_save(fig, Path(results_dir) / FIGURES_SUBDIR / f"{dataset}_{model}_accuracy.png"))
    return written


def _curve_records(records: list[LoadedRecord]) -> dict[tuple[str, str], dict[tuple[str, str], LoadedRecord]]:
    """Per (data set, model), per (defense, attack): the adaptive curve record with the most budgets (then the
    largest n, then the path, so that the choice is deterministic)."""
    best: dict[tuple[str, str], dict[tuple[str, str], LoadedRecord]] = {}
    for r in sorted(records, key=lambda r: str(r.path)):
        c = r.data["config"]
        if c["threat"] != "adaptive" or c["attack"] not in CURVE_ATTACKS or budget_norm(r) != "linf":
            continue
        if len(c["eps"]) < CURVE_MIN_BUDGETS:
            continue
        mine = best.setdefault((c["dataset"], c["model"]), {})
        key = (c["defense"], c["attack"])
        old = mine.get(key)
        if old is None or (len(c["eps"]), c["n"]) > (len(old.data["config"]["eps"]), old.data["config"]["n"]):
            mine[key] = r
    return best


def robustness_curves(results_dir: Path) -> list[Path]:
    """One figure per (data set, model) with adaptive curve records; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for (dataset, model), curves in sorted(_curve_records(_combined(results_dir)).items()):
        fig, ax = plt.subplots(figsize=(10, 5))
        # twenty colours, then markers and line styles too: every curve stays tellable apart
        colours, markers, lines = plt.get_cmap("tab20").colors, "osD^vP", ("-", "--", ":")
        for i, ((defense, attack), r) in enumerate(sorted(curves.items(), key=lambda item: natural_key(item[0][0]))):
            out, n = r.data["outcomes"], r.data["config"]["n"]
            counts = [sum(out["clean_correct"])] + [sum(row) for row in out["adv_correct"]]
            xs = [0.0] + [255 * float(e) for e in r.data["config"]["eps"]]
            order = sorted(range(len(xs)), key=xs.__getitem__)
            xs, counts = [xs[i] for i in order], [counts[i] for i in order]
            ys = [100 * k / n for k in counts]
            bounds = [wilson_interval(k, n) for k in counts]
            err = [[y - 100 * lo for y, (lo, _) in zip(ys, bounds)], [100 * hi - y for y, (_, hi) in zip(ys, bounds)]]
            ax.errorbar(xs, ys, yerr=err, marker=markers[i % len(markers)], linestyle=lines[i // 20 % len(lines)],
                        color=colours[i % 20], capsize=3, label=f"{defense} ({attack}, n={n})")
        ax.set_xlabel("budget ε (L∞, in 1/255)")
        ax.set_ylabel("accuracy under adaptive attack (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.set_title(f"{dataset} / {model}: robustness curves (adaptive, 95% Wilson intervals)")
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the axes, never over a curve
        written.append(_save(fig, Path(results_dir) / FIGURES_SUBDIR / f"{dataset}_{model}_robustness_curve.png"))
    return written
