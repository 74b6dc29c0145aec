"""Figures from the records (matplotlib): a heat map of accuracy per defense and attack, one panel per budget.

Written under ``results/figures/`` as ``<dataset>_<model>_accuracy.png``; the leaderboard links every figure there.
"""
from __future__ import annotations

from pathlib import Path

from .budgets import format_eps
from .leaderboard import FIGURES_SUBDIR, budget_norm
from .records import LoadedRecord, load_all
from .registry import natural_key


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


def accuracy_heatmaps(results_dir: Path) -> list[Path]:
    """One figure per (data set, model, budgets) of oblivious records with L-infinity budgets (an attack in another
    norm, pgd-l2, would otherwise overwrite the file with a figure of its own budgets); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str, tuple[float, ...]], list[LoadedRecord]] = {}
    for r in load_all(results_dir):
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
        fig.tight_layout()
        out = Path(results_dir) / FIGURES_SUBDIR / f"{dataset}_{model}_accuracy.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=90, metadata={"Software": None})
        plt.close(fig)
        written.append(out)
    return written
