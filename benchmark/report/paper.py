"""Published numbers to compare with: PixelDefend (Song et al., ICLR 2018, https://arxiv.org/abs/1710.10766) and the
robust manifold defense's slides (Ilyas et al. 2017, https://arxiv.org/abs/1712.09196).

Tables 1 (Fashion-MNIST) and 2 (CIFAR-10) ship as CSV files in ``benchmark/report/reference/`` (each keeps its citation
header). This module reads them and renames their rows and columns into the benchmark's vocabulary:

- data set: Table 1 -> ``fashion-mnist``, Table 2 -> ``cifar10``;
- network: ``ResNet`` -> ``resnet``, ``VGG`` -> ``vgg`` (a blank cell continues the row above);
- training: ``Normal`` -> ``none``, ``Adversarial FGSM + PixelDefend`` -> ``adv-fgsm+pixeldefend``, ... (:data:`DEFENSES`);
- columns: ``clean``, ``rand`` -> ``uniform-noise``, ``fgsm``, ``bim``, ``deepfool``, ``cw`` -> ``cw-linf``, and
  ``strongest`` -> :data:`WORST_CASE`.

Cells are accuracies in percent, one per budget (``eps_attack``). The paper attacks the undefended network and then
applies the defense, which is the ``oblivious`` threat model: its numbers sit beside oblivious rows only.

The slides' MNIST table (``invert_and_classify_mnist.csv``) is laid out the other way round: one row per attack, one
column per defense (``no_defense`` -> ``none``, ``invert_and_classify``). Its FGSM rows at eps 0.05, 0.1 and 0.2
become the ``fgsm`` cell of ``mnist`` rows at those budgets. Its Carlini-Wagner L2 and L0 rows are unbounded
minimal attacks, one number each: they become the ``cw`` and ``cw-l0`` cells of a second row per defense at the
budget 1 (:data:`UNBOUNDED`: in L-infinity on [0, 1] images every input is within 1 of every other, so clipping to it
changes nothing), beside our records run with ``--eps 1``. Its Carlini-Wagner L-infinity row is left out: it is a
minimal attack too, and our ``cw-linf`` is a fixed-budget one, which at budget 1 is unconstrained rather than
minimal. The slides name no classifier; they are matched with our ResNet-style one, and give no worst case.

The PixelDefend reproduction poster (``pixeldefend_reproduction_resnet18.csv``: ResNet18, 500 CIFAR-10 test images)
gives PixelDefend's accuracy after attacks run until they fool the undefended network on every image, no budget: one
row, ``pixeldefend`` on CIFAR-10's ResNet-style classifier at budget 1 (:data:`UNBOUNDED`), its attacks renamed
(``gaussian_blur`` -> ``gaussian-blur``, ...; ``fgsm`` run to success is ``fgsm-sweep``); its ``bim`` cell is
"unknown" on the poster and is left out.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Mapping

from benchmark.core.budgets import format_eps
from benchmark.core.errors import BenchError

CLEAN = "clean"
WORST_CASE = "worst case"
THREAT = "oblivious"

MODELS = {"ResNet": "resnet", "VGG": "vgg"}
DEFENSES = {
    "Normal": "none",
    "Adversarial FGSM": "adv-fgsm",
    "Adversarial BIM": "adv-bim",
    "Label Smoothing": "label-smoothing",
    "Feature Squeezing": "feature-squeezing",
    "Adversarial FGSM + Feature Squeezing": "adv-fgsm+feature-squeezing",
    "Normal + PixelDefend": "pixeldefend",
    "Adversarial FGSM + PixelDefend": "adv-fgsm+pixeldefend",
    "Adversarial FGSM + Adaptive PixelDefend": "adv-fgsm+adaptive-pixeldefend",
}
COLUMNS = {
    "clean": CLEAN,
    "rand": "uniform-noise",
    "fgsm": "fgsm",
    "bim": "bim",
    "deepfool": "deepfool",
    "cw": "cw-linf",
    "strongest": WORST_CASE,
}


@dataclass(frozen=True)
class PaperTable:
    dataset: str
    file: str
    label: str  # how the leaderboard cites it
    eps: tuple[float, ...]  # eps_attack of the cells, in [0, 1] pixel space


TABLES = (
    PaperTable("fashion-mnist", "pixeldefend_table1_fashion_mnist.csv", "Song et al. 2018 (Table 1)",
               (8 / 255, 25 / 255)),
    PaperTable("cifar10", "pixeldefend_table2_cifar10.csv", "Song et al. 2018 (Table 2)",
               (2 / 255, 8 / 255, 16 / 255)),
)


SLIDES = PaperTable("mnist", "invert_and_classify_mnist.csv", "Ilyas et al. 2017 (slides)", (0.05, 0.1, 0.2))
SLIDES_DEFENSES = {"no_defense": "none", "invert_and_classify": "invert-and-classify"}
SLIDES_MODEL = "resnet"
UNBOUNDED = (1.0,)
SLIDES_UNBOUNDED_ATTACKS = {"carlini_wagner_l2": "cw", "carlini_wagner_l0": "cw-l0"}


REPRODUCTION = PaperTable("cifar10", "pixeldefend_reproduction_resnet18.csv", "reproduction poster (ResNet18)",
                          UNBOUNDED)
REPRODUCTION_ATTACKS = {"fgsm": "fgsm-sweep", "fgm": "fgm", "deepfool": "deepfool", "gaussian_blur": "gaussian-blur",
                        "saliency_map": "saliency-map", "uniform_noise": "uniform-noise",
                        "salt_and_pepper": "salt-and-pepper", "lbfgs": "lbfgs",
                        "contrast_reduction": "contrast-reduction"}


@dataclass(frozen=True)
class PaperRow:
    """One published row in our vocabulary. ``cells`` maps ``clean``, attack names and :data:`WORST_CASE` (where the
    source gives one) to accuracies in percent, one per budget of ``eps``."""

    source: str
    dataset: str
    model: str
    defense: str
    eps: tuple[float, ...]
    cells: Mapping[str, tuple[int, ...]]

    @property
    def worst_case(self) -> tuple[int, ...] | None:
        """The source's own worst case per budget, None where it gives none (the slides)."""
        return self.cells.get(WORST_CASE)


def _read_reference(file: str) -> str:
    return resources.files("benchmark").joinpath("report", "reference", file).read_text(encoding="utf-8")


def _parse_cell(text: str, n_eps: int, where: str) -> tuple[int, ...]:
    values = tuple(int(part) for part in text.strip().split("/"))
    if len(values) != n_eps:
        raise BenchError(f"{where}: cell {text!r} has {len(values)} values, expected one per budget ({n_eps})")
    return values


def _csv_rows(file: str) -> list[dict[str, str]]:
    lines = [line for line in _read_reference(file).splitlines() if line.strip() and not line.startswith("#")]
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


def _parse_table(table: PaperTable) -> list[PaperRow]:
    rows: list[PaperRow] = []
    network = ""
    for i, raw in enumerate(_csv_rows(table.file)):
        where = f"{table.file} row {i + 1}"
        network = (raw["network"] or "").strip() or network
        if network not in MODELS or raw["training"] not in DEFENSES:
            raise BenchError(f"{where}: unknown network {network!r} or training {raw['training']!r}")
        cells = {ours: _parse_cell(raw[theirs], len(table.eps), where) for theirs, ours in COLUMNS.items()}
        rows.append(PaperRow(table.label, table.dataset, MODELS[network], DEFENSES[raw["training"]], table.eps, cells))
    return rows


def _parse_slides(table: PaperTable) -> list[PaperRow]:
    by_attack = {raw["attack"]: raw for raw in _csv_rows(table.file)}
    fgsm_rows = [f"fgsm_eps_{e:g}" for e in table.eps]
    missing = [name for name in ["clean", *fgsm_rows, *SLIDES_UNBOUNDED_ATTACKS] if name not in by_attack]
    if missing:
        raise BenchError(f"{table.file}: no row for {', '.join(missing)}")
    rows = []
    for theirs, ours in SLIDES_DEFENSES.items():
        clean = int(by_attack["clean"][theirs])
        cells = {CLEAN: (clean,) * len(table.eps), "fgsm": tuple(int(by_attack[r][theirs]) for r in fgsm_rows)}
        rows.append(PaperRow(table.label, table.dataset, SLIDES_MODEL, ours, table.eps, cells))
        unbounded = {CLEAN: (clean,), **{attack: (int(by_attack[r][theirs]),)
                                         for r, attack in SLIDES_UNBOUNDED_ATTACKS.items()}}
        rows.append(PaperRow(table.label, table.dataset, SLIDES_MODEL, ours, UNBOUNDED, unbounded))
    return rows


def _parse_reproduction(table: PaperTable) -> PaperRow:
    by_attack = {raw["attack"]: raw["pixeldefend_accuracy"].strip() for raw in _csv_rows(table.file)}
    missing = [name for name in [CLEAN, *REPRODUCTION_ATTACKS] if name not in by_attack]
    if missing:
        raise BenchError(f"{table.file}: no row for {', '.join(missing)}")
    cells = {CLEAN: (int(by_attack[CLEAN]),),
             **{ours: (int(by_attack[theirs]),) for theirs, ours in REPRODUCTION_ATTACKS.items()}}
    return PaperRow(table.label, table.dataset, "resnet", "pixeldefend", table.eps, cells)


@lru_cache(maxsize=None)
def paper_rows() -> tuple[PaperRow, ...]:
    """Every published row of Tables 1 and 2, of the slides and of the reproduction poster, in file order."""
    return (*(row for table in TABLES for row in _parse_table(table)), *_parse_slides(SLIDES),
            _parse_reproduction(REPRODUCTION))


def find(dataset: str, model: str, defense: str, eps: tuple[float, ...]) -> PaperRow | None:
    """The published row for (dataset, classifier model, defense) at exactly these budgets, or None where the
    sources have none."""
    for row in paper_rows():
        if (row.dataset, row.model, row.defense) == (dataset, model, defense) and _same_budgets(row.eps, eps):
            return row
    return None


def _same_budgets(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Equal as the leaderboard prints them (8/255 is 0.0314 to four digits)."""
    return [format_eps(e) for e in a] == [format_eps(e) for e in b]
