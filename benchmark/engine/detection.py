"""Detecting adversarial inputs by their PixelCNN likelihood (the PixelDefend paper, "Detecting adversarial examples").

Oblivious adversarial inputs (crafted on the undefended classifier, exactly as ``bench run`` does, so that its cached
adversarial inputs are reused) and the clean test points are scored by their bits per dimension (BPD) under the data
set's PixelCNN. Per attack and budget, the ROC AUC tells how well BPD separates clean (label 0) from adversarial
(label 1) inputs. Every clean test point is a negative; an adversarial input counts as a positive only if it differs
from its clean image: a minimal attack that failed returns the clean image itself, which is not an adversarial input
and would only pull the AUC towards 0.5. How many were used is recorded.

One record per data set and classifier, ``results/detection/<dataset>/<model>.json`` (JSON, written atomically):

``config``       dataset, model, n, seed, eps (sorted), attacks (every attack the record holds), pixelcnn_size
``test_points_sha256``  hash of the exact test points
``classifier``   store key and clean test accuracy of the attacked (undefended) classifier
``pixelcnn``     store key, test BPD and the reference BPDs of training images (for the paper's p-values)
``models``       the weights measured, ``"<kind>/<key>": SHA-256`` of the classifier and the PixelCNN (see
                 :mod:`benchmark.report.instances`); shipped to ``results/models/`` with the record
``clean``        per-example BPD of the clean test points (rounded to 5 decimals) and their mean
``cells``        per attack, one entry per budget (aligned with ``config.eps``): ``auc`` (null without adversarial
                 inputs), ``used`` (adversarial inputs that differ from their clean image), ``mean_bpd`` of those, and
                 ``bpd``: per example, the adversarial input's BPD, or null where it was left out
``provenance``   versions, git commit, device, time: the only part that changes between identical runs

A rerun with other attacks merges its cells into the record; a rerun whose configuration differs is refused rather
than silently dropping the record's cells; a rerun on other model weights (or of a record that does not name its
weights) measures every attack again and replaces the record. Figures (:func:`detection_figures`) are drawn from
records alone.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from benchmark.core.budgets import format_eps
from benchmark.core.errors import BenchError
from benchmark.core.registry import natural_key
from benchmark.store.fileio import atomic_write_text

if TYPE_CHECKING:  # torch stays out of module import: the leaderboard reads detection records without it
    import torch

log = logging.getLogger(__name__)

SCHEMA = 1
DETECTION_SUBDIR = "detection"
FIGURE_KINDS = ("bpd_violin", "pvalues", "roc")
DIGITS = 5


@dataclass(frozen=True)
class DetectPlan:
    dataset: str = "mnist5k"
    model: str = "resnet"
    attacks: tuple[str, ...] = ("fgsm",)
    eps: tuple[float, ...] | None = None  # None: the data set's defaults, as in `bench run`
    n: int | None = 100
    seed: int = 0
    device: str = "auto"
    results_dir: Path = Path("results")
    batch_size: int = 250  # part of the adversarial cache key: keep `bench run`'s default to reuse its inputs
    data_root: str | None = None
    download: bool = False
    pixelcnn_size: str = "small"


@dataclass(frozen=True)
class LoadedDetection:
    path: Path
    data: dict[str, Any]


# -- the numbers --------------------------------------------------------------------------------------------------
def changed(clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Per example, whether the adversarial input differs from its clean image in any pixel."""
    return (adv != clean).flatten(1).any(1)


def detection_auc(clean_scores: Sequence[float], adv_scores: Sequence[float]) -> float | None:
    """ROC AUC of telling clean (0) from adversarial (1) inputs, higher score meaning adversarial; None when either
    side is empty (the AUC is undefined)."""
    from sklearn.metrics import roc_auc_score

    if not clean_scores or not adv_scores:
        return None
    labels = [0] * len(clean_scores) + [1] * len(adv_scores)
    return float(roc_auc_score(labels, [*clean_scores, *adv_scores]))


def detection_cell(clean_bpd: Sequence[float], adv_bpd: Sequence[float], used: Sequence[bool]) -> dict[str, Any]:
    """The record's entry for one attack and budget: AUC over every clean input and the used adversarial ones."""
    kept = [round(float(b), DIGITS) if u else None for b, u in zip(adv_bpd, used)]
    scores = [b for b in kept if b is not None]
    auc = detection_auc([round(float(b), DIGITS) for b in clean_bpd], scores)
    return {"auc": None if auc is None else round(auc, DIGITS), "used": len(scores),
            "mean_bpd": round(math.fsum(scores) / len(scores), DIGITS) if scores else None, "bpd": kept}


def p_values_of(bpd: Sequence[float], reference_bpd: Sequence[float]) -> list[float]:
    """The paper's p-values of ``bpd`` against the record's reference (see :func:`benchmark.training.pixelcnn.p_values`)."""
    import torch

    from benchmark.training.pixelcnn import p_values

    return p_values(torch.tensor(list(bpd), dtype=torch.float64),
                    torch.tensor(list(reference_bpd), dtype=torch.float64)).tolist()


# -- records ------------------------------------------------------------------------------------------------------
def detection_dir(results_dir: Path) -> Path:
    return Path(results_dir) / DETECTION_SUBDIR


def detection_path(results_dir: Path, dataset: str, model: str) -> Path:
    return detection_dir(results_dir) / dataset / f"{model}.json"


def load_detections(results_dir: Path) -> list[LoadedDetection]:
    """Every detection record under ``results_dir``, sorted by path; an unreadable one is a BenchError naming it."""
    root = detection_dir(results_dir)
    found = []
    for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
        try:
            data = json.loads(path.read_text())
            if data.get("schema") != SCHEMA or not isinstance(data.get("cells"), dict):
                raise ValueError(f"not a detection record of schema {SCHEMA}")
        except (ValueError, OSError) as exc:
            raise BenchError(f"detection record {path} does not parse ({exc}); fix or delete it") from None
        found.append(LoadedDetection(path, data))
    return found


def _same_run(config: dict[str, Any], test_hash: str, old: dict[str, Any]) -> list[str]:
    """What differs between an existing record and this run (other than the attacks)."""
    diffs = [f"{k} {old['config'].get(k)!r} (now {v!r})" for k, v in config.items()
             if k != "attacks" and old["config"].get(k) != v]
    if old.get("test_points_sha256") != test_hash:
        diffs.append("other test points")
    return diffs


def _load_existing(path: Path, config: dict[str, Any], test_hash: str, models: dict[str, str]
                   ) -> dict[str, Any] | None:
    """The cells of the existing record, to be extended; None when there is none or it measured other weights (then
    every cell is measured again, as `bench run` does)."""
    if not path.exists():
        return None
    try:
        old = json.loads(path.read_text())
        old_cells = old["cells"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"existing detection record {path} does not parse ({exc}); delete it") from None
    if old.get("models") != models:
        log.warning("%s measured %s; measuring every attack again", path,
                    "other model weights" if old.get("models") else "weights it does not name")
        return None
    diffs = _same_run(config, test_hash, old)
    if diffs:
        raise BenchError(f"{path} holds a detection run with {', '.join(diffs)}; merging would mix runs: delete it "
                         "or choose another --results-dir")
    return old_cells


def save_detection(results_dir: Path, record: dict[str, Any]) -> Path:
    c = record["config"]
    path = detection_path(results_dir, c["dataset"], c["model"])
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return path


# -- the run ------------------------------------------------------------------------------------------------------
def _bpd(model: Any, x: torch.Tensor, device: torch.device, batch_size: int, bar: Any) -> list[float]:
    from benchmark.training.pixelcnn import bits_per_dim

    out: list[float] = []
    for start in range(0, len(x), batch_size):
        out += bits_per_dim(model, x[start : start + batch_size], device, batch_size).tolist()
        bar.update(min(batch_size, len(x) - start))
    return out


def detect(plan: DetectPlan, store: Any = None) -> tuple[dict[str, Any], Path]:
    """Score clean and adversarial inputs of every selected attack; merge into the record and save it.

    Returns the whole (merged) record and its path.
    """
    from benchmark.core.defense import build_defense
    from benchmark.core.device import resolve_device
    from benchmark.core.progress import progress
    from benchmark.core.registry import ATTACKS, DATASETS, MODELS
    from benchmark.core.vocab import Threat
    from benchmark.data.dataset import load_dataset
    from benchmark.engine.adversarial import generate
    from benchmark.engine.cells import adversarial_key
    from benchmark.engine.provenance import git_commit, versions
    from benchmark.store.model_store import MODELS_SUBDIR, ModelStore, instances
    from benchmark.training.pixelcnn import get_pixelcnn, pixelcnn_config
    from benchmark.training.zoo import get_classifier

    # every name is checked before any work starts
    DATASETS.get(plan.dataset)
    MODELS.get(plan.model)
    attacks = {name: ATTACKS.build(name) for name in plan.attacks}
    pixelcnn_config(plan.dataset, plan.pixelcnn_size)
    if plan.batch_size < 1:
        raise BenchError(f"--batch-size {plan.batch_size} must be a positive integer")
    dataset = load_dataset(plan.dataset, plan.data_root, plan.download)
    points = dataset.test_points(plan.n)  # the runner's points: the first n of the test order
    eps = plan.eps or dataset.default_eps
    for name in [n for n, a in attacks.items() if tuple(a.budgets(eps)) != tuple(eps)]:
        # one record holds one budget list: an attack in another norm (pgd-l2) does not fit it
        log.warning("%s runs at its own budgets, not %s; left out of the detection record", name,
                    ", ".join(format_eps(e) for e in eps))
        del attacks[name]
    for name in [n for n, a in attacks.items() if a.needs_generator]:
        # detection scores the undefended classifier's adversarial inputs: there is no GAN defense to attack
        log.warning("%s attacks a GAN projection defense under --threat adaptive; left out of the detection record",
                    name)
        del attacks[name]
    test_hash = points.sha256()
    config = {"dataset": plan.dataset, "model": plan.model, "n": len(points), "seed": plan.seed,
              "eps": [float(e) for e in eps], "attacks": [], "pixelcnn_size": plan.pixelcnn_size}
    path = detection_path(plan.results_dir, plan.dataset, plan.model)
    git_commit()  # pin the commit of the loaded code, as the runner does
    started = time.time()

    device = resolve_device(plan.device)
    store = store or ModelStore(shipped=plan.results_dir / MODELS_SUBDIR)
    classifier, cmeta = get_classifier(dataset, plan.model, build_defense("none"), plan.seed, device, store)
    pixelcnn, pmeta = get_pixelcnn(dataset, device, store, plan.seed, plan.pixelcnn_size)
    models = instances(cmeta, pmeta)
    cells: dict[str, Any] = _load_existing(path, config, test_hash, models) or {}

    bar = progress(total=len(points) * (1 + len(attacks) * len(eps)), desc="pixelcnn bits/dim", unit="img",
                   position=0, leave=True)
    clean_bpd = _bpd(pixelcnn, points.x, device, plan.batch_size, bar)
    for name, attack in attacks.items():
        # bench run's key under the oblivious threat: its cached adversarial inputs are reused
        cache_key = adversarial_key(cmeta, name, attack, eps, test_hash, plan.seed, plan.batch_size, Threat.OBLIVIOUS)
        adv = generate(attack, classifier, points.x, points.y, eps, plan.seed, plan.batch_size, device, cache_key)
        per_eps = []
        for x_adv in adv.per_eps:
            used = changed(points.x, x_adv).tolist()
            per_eps.append(detection_cell(clean_bpd, _bpd(pixelcnn, x_adv, device, plan.batch_size, bar), used))
        cells[name] = per_eps
    bar.close()

    clean = [round(b, DIGITS) for b in clean_bpd]
    config["attacks"] = sorted(cells, key=natural_key)
    record = {
        "schema": SCHEMA,
        "config": config,
        "test_points_sha256": test_hash,
        "classifier": {"key": cmeta["key"], "test_accuracy": cmeta["metrics"]["test_accuracy"]},
        "pixelcnn": {"key": pmeta["key"], "test_bpd": round(pmeta["metrics"]["test_bpd"], DIGITS),
                     "reference_bpd": pmeta["metrics"]["reference_bpd"]},
        "models": models,
        "clean": {"bpd": clean, "mean_bpd": round(math.fsum(clean) / len(clean), DIGITS)},
        "cells": cells,
        "provenance": {"versions": versions(), "git_commit": git_commit(), "device": str(device),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                       "seconds": round(time.time() - started, 1)},
    }
    saved = save_detection(plan.results_dir, record)
    for problem in store.ship(models, plan.results_dir / MODELS_SUBDIR):  # the weights travel with the record
        log.warning("%s; not shipped with the detection record", problem)
    return record, saved


def summary_rows(record: dict[str, Any]) -> list[list[str]]:
    """Rows (attack, AUC per budget, used per budget, mean BPD per budget) for the CLI's table."""
    rows = [["clean", "", str(record["config"]["n"]), f"{record['clean']['mean_bpd']:.3f}"]]
    for name in record["config"]["attacks"]:
        cells = record["cells"][name]
        rows.append([name, auc_text(cells), "/".join(str(c["used"]) for c in cells),
                     "/".join("–" if c["mean_bpd"] is None else f"{c['mean_bpd']:.3f}" for c in cells)])
    return rows


def auc_text(cells: Sequence[dict[str, Any]]) -> str:
    """AUC per budget as ``0.97/1.00`` ("–" where it is undefined)."""
    return "/".join("–" if c["auc"] is None else f"{c['auc']:.2f}" for c in cells)


# -- figures ------------------------------------------------------------------------------------------------------
def figure_name(dataset: str, model: str, kind: str) -> str:
    return f"{dataset}_{model}_{kind}.png"


def _series(data: dict[str, Any], b: int) -> list[tuple[str, list[float]]]:
    """(label, BPDs) at budget index ``b``: clean first, then every attack (used inputs only), natural order."""
    out = [("clean", list(data["clean"]["bpd"]))]
    for name in data["config"]["attacks"]:
        out.append((name, [v for v in data["cells"][name][b]["bpd"] if v is not None]))
    return out


def _violin(ax: Any, series: list[tuple[str, list[float]]], title: str) -> None:
    present = [(label, values) for label, values in series if values]  # violinplot cannot draw an empty series
    positions = list(range(1, len(present) + 1))
    parts = ax.violinplot([v for _, v in present], positions=positions, showmedians=True)
    for body, (label, _) in zip(parts["bodies"], present):
        body.set_facecolor("tab:blue" if label == "clean" else "tab:red")
    ax.set_xticks(positions, [f"{label}\n(n={len(v)})" for label, v in present], rotation=45, ha="right")
    ax.set_ylabel("bits per dimension")
    ax.set_title(title)


def draw_detection_figures(data: dict[str, Any], folder: Path) -> list[Path]:
    """The three figures of one detection record, into ``folder``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = data["config"]
    dataset, model, eps, attacks = c["dataset"], c["model"], c["eps"], c["attacks"]
    folder.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig: Any, kind: str) -> None:
        fig.tight_layout()
        out = folder / figure_name(dataset, model, kind)
        fig.savefig(out, dpi=90, metadata={"Software": None})  # no version stamp: same record, same bytes
        plt.close(fig)
        written.append(out)

    width = max(5.0, 0.9 * (len(attacks) + 1) + 1.5)
    fig, axes = plt.subplots(1, len(eps), figsize=(width * len(eps), 4.5), squeeze=False)
    for b, e in enumerate(eps):
        _violin(axes[0][b], _series(data, b), f"{dataset} / {model}: bits/dim at eps {format_eps(e)}")
    save(fig, "bpd_violin")

    # p-values: one row per budget, clean first; clean inputs should give a roughly uniform histogram
    ref = data["pixelcnn"]["reference_bpd"]
    fig, axes = plt.subplots(len(eps), len(attacks) + 1, figsize=(2.6 * (len(attacks) + 1), 2.3 * len(eps)),
                             squeeze=False, sharex=True)
    for b, e in enumerate(eps):
        for j, (label, values) in enumerate(_series(data, b)):
            ax = axes[b][j]
            if values:
                ax.hist(p_values_of(values, ref), bins=20, range=(0, 1), color="tab:blue" if j == 0 else "tab:red")
            ax.set_title(f"{label} ({format_eps(e)})" if j else f"clean (n={len(values)})", fontsize=9)
            ax.tick_params(labelsize=7)
    fig.suptitle(f"{dataset} / {model}: PixelCNN p-values")
    save(fig, "pvalues")

    from sklearn.metrics import roc_curve

    fig, axes = plt.subplots(1, len(eps), figsize=(5 * len(eps), 4.5), squeeze=False)
    clean = data["clean"]["bpd"]
    for b, e in enumerate(eps):
        ax = axes[0][b]
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        for name in attacks:
            cell = data["cells"][name][b]
            adv = [v for v in cell["bpd"] if v is not None]
            if not adv:
                continue
            fpr, tpr, _ = roc_curve([0] * len(clean) + [1] * len(adv), [*clean, *adv])
            ax.plot(fpr, tpr, label=f"{name} (AUC {cell['auc']:.2f}, n={len(adv)})")
        ax.set_xlabel("false positive rate (clean flagged)")
        ax.set_ylabel("true positive rate (adversarial flagged)")
        ax.set_title(f"{dataset} / {model}: ROC by bits/dim at eps {format_eps(e)}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")
    save(fig, "roc")
    return written


def detection_figures(results_dir: Path) -> list[Path]:
    """Redraw the figures of every detection record under ``results_dir`` into ``results_dir/figures``."""
    from benchmark.store.paths import FIGURES_SUBDIR

    written = []
    for rec in load_detections(results_dir):
        written += draw_detection_figures(rec.data, Path(results_dir) / FIGURES_SUBDIR)
    return written
