"""``leaderboard.md``: a pure, deterministic function of the result records (see docs/design.md, "Results and the leaderboard").

Rules:

- One section per (data set, classifier model), sorted by name. It opens with the headline table
  (:mod:`benchmark.report.headline`): one row per defense and seed, the per-example worst case over all its records at the
  section's headline budgets, every threat model included, with each threat model's own worst case, the paper's
  worst case, and the sanity checks' findings (:mod:`benchmark.engine.sanity`); sorted like the details rows. A defense
  without an adaptive record (only oblivious or transfer ones) is marked (†).
- The details table follows: one row per group of records that share defense, threat model and its options, n, seed,
  budgets (values and norm), test points (``test_points_sha256``) and model weights: records that differ in any of
  them are never merged. Budgets are L-infinity except those of a fixed-eps attack in another norm
  (pgd-l2), which are shown with their norm ("L2 1.5, 3"); a row counts as incomplete (‡) only against the attacks
  of rows with budgets in the same norm. Rows are sorted by worst-case accuracy (largest budget first, highest
  first), ties by name.
- Columns: defense, threat, clean accuracy (the defended pipeline on clean inputs, from the row's first record by
  attack name), one column per attack present in the section (natural sort; "–" where the row lacks it), the worst
  case with its 95% Wilson interval, the mean defense time per image, n and seed. Attack cells give the accuracy on
  adversarial inputs in integer percent (rounded half up) per budget, joined by "/" as in the paper.
- Worst case, per example: an example is robust at budget b only if the defended pipeline classifies it correctly
  when clean and under every attack of the row at b. It is not the minimum of the columns, and can be lower.
- Budgets go in the section heading when every row shares them, else in a column.
- An oblivious or transfer row of a defense that has no adaptive record on the same data set and classifier is
  marked (†),
  unless the defense has no inference-time part (adversarial training, label smoothing): the oblivious attacker then
  attacks the whole pipeline, so its records count as adaptive too (headline column "adaptive" included).
- Under an oblivious row whose (data set, model, defense) and budgets match a published row of the PixelDefend paper
  (:mod:`benchmark.report.paper`), that row follows, "↳ Song et al. 2018 (Table n)", with "–" where the paper has no number.
- Records whose defense detects (``outcomes.detected`` not null) also get a detection table: detection rate per
  budget and the false-positive rate on clean inputs.
- Figures under ``results/figures/`` whose names start with the data set's name are linked at the end of its sections.
- Detection records (``results/detection/``, written by ``bench detect``; :mod:`benchmark.engine.detection`) add one section
  per (data set, model) after the others, "Detection by PixelCNN likelihood": one row per attack (natural sort) with
  the ROC AUC per budget (two decimals, "/"-joined), the adversarial inputs used per budget, their mean bits/dim, n
  and seed, then links to its three figures (which the data set's general figure list then leaves out).
- Records of different model weights (``models``, :mod:`benchmark.report.instances`) are never combined: per defense, the
  sections use the weights with the most records, named in the headline's "weights" column (the first characters of
  ``weights_id``); the others follow at the end, "Other model weights", in details tables of their own whose threat
  column names the weights.
- No timestamps, no dict-order dependence: the same records give byte-identical text.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import quote

from tabulate import tabulate

from benchmark.core.budgets import format_eps
from benchmark.core.errors import BenchError
from benchmark.core.registry import natural_key
from benchmark.engine.detection import (
    DETECTION_SUBDIR,
    FIGURE_KINDS,
    LoadedDetection,
    auc_text,
    figure_name,
    load_detections,
)
from benchmark.report import paper
from benchmark.report.models import model_rows
from benchmark.report.headline import (
    Combined,
    Headline,
    headline_eps,
    headlines,
    white_box_when_oblivious,
)
from benchmark.report.instances import split_by_weights, weights_id
from benchmark.report.stats import wilson_interval
from benchmark.store.fileio import atomic_write_text
from benchmark.store.paths import FIGURES_SUBDIR
from benchmark.store.records import LoadedRecord, load_all

DASH = "–"
SITE = "leaderboard"  # the generated site's folder, beside leaderboard.md: details, figures, one page per defense
OBLIVIOUS_MARK = "†"
INCOMPLETE_MARK = "‡"
COMMAND = "bench leaderboard"
WEIGHTS_SHOWN = 10  # characters of a weights hash in the headline: enough to tell them apart, "unrecorded" whole

def header(fixed: Sequence[str], minimal: Sequence[str]) -> str:
    """The leaderboard's opening text; ``fixed`` and ``minimal`` name the fixed-budget and the minimal-perturbation
    attacks present in the records."""
    return f"""# DefenseBench leaderboard

Generated by `{COMMAND}` from the records under `results/records/` (never edit it by hand: CI fails when it is
stale). One section per data set and classifier; each defense links to its page in the generated site
(`{SITE}/`), which holds every attack, threat model and budget, the figures, the records and the weights.

How to read a headline row: **worst case** is the per-example worst case over every attack run on the defense under
every threat model: an example counts as robust at a budget only if it is classified correctly when clean and under
every attack, so it can be lower than every other column; its 95% Wilson interval follows. "oblivious",
"adaptive" and "transfer" are each threat model's own worst case: `oblivious` attacks the undefended classifier and
then applies the defense (the PixelDefend paper's protocol), `adaptive` attacks the whole defended pipeline with BPDA
and EOT where needed (the honest number), `transfer` attacks a separately trained substitute. A defense with no
inference-time part (adversarial training, label smoothing) is its classifier, so its oblivious attacks count as
adaptive. {OBLIVIOUS_MARK} marks a defense with no adaptive numbers. "paper" is the PixelDefend paper's own worst
case for that row. "checks" lists what the sanity checks found ("ok": nothing), among them a defense that is less
robust than its base classifier (the row of the same weights with no inference-time part, e.g. `none`) under the
attacks both ran, on their common test points (Croce et al. 2022 found such test-time defenses). "weights" names the trained weights
the row measured (kept under `results/models/`). Budgets are in [0, 1] pixel space; fixed-budget attacks
({_names(fixed)}) run at each budget; minimal-perturbation attacks ({_names(minimal)}) run until they fool the
classifier and are then clipped into the L∞ ball of each budget, as in the paper.
"""


MODEL_HEADERS = ["kind", "data set", "model", "key", "measured", "published", "training"]
MODELS_NOTE = """The trained models under `results/models/<kind>/<key>/` (records name them `<kind>/<key>`), what
their training measured (`bench train`), and the published figure beside it: the PixelDefend paper's clean accuracy
of its normally trained networks, PixelCNN++'s test bits/dim on CIFAR-10 (Salimans et al. 2017). An unfinished
training is shipped as its resumable state: `bench train` with the same settings continues it."""


DETAILS_NOTE = """**Details** (second table of a section): each row is one defense under one threat model, on the same n test
points (seed), budgets ε and attacks. Cells give accuracy in % per budget, in the order listed: "clean" is the
defended pipeline on clean inputs, an attack's column the defended pipeline on that attack's adversarial inputs;
"worst case" is per example over the row's attacks. A randomised pipeline under adaptive attack is evaluated
over several draws (the row's "draws"): its cells count an example only if every draw was right, and give the mean
over draws after it in parentheses, as Croce et al. (2022) report test-time defenses. "↳" rows give published numbers, beside ours where data set,
classifier, defense and budgets match. ‡ marks a worst case over fewer attacks than the section has."""


def _names(names: Sequence[str]) -> str:
    return ", ".join(sorted(names, key=natural_key)) or "none here"


@dataclass(frozen=True, order=True)
class RowKey:
    """What records must share to form one row."""

    defense: str
    threat: str
    n: int
    seed: int
    eps: tuple[float, ...]
    test_points: str
    norm: str = "linf"  # the budgets' norm (see budget_norm)
    threat_options: str = ""  # adaptive: EOT draws per gradient and evaluation draws; transfer: the substitute
    weights: str = ""  # the model weights measured (benchmark.report.instances.weights_id): never merged across


@dataclass(frozen=True)
class Row:
    key: RowKey
    records: tuple[LoadedRecord, ...]  # one per attack, sorted by attack name
    worst: tuple[int, ...]  # robust examples per budget

    @property
    def threat_label(self) -> str:
        """The threat model and, where they matter, its options (a randomised defense's EOT and evaluation draws
        under adaptive attack; the substitute of a transfer attack)."""
        options = json.loads(self.key.threat_options or "{}")
        if "eot_samples" in options:
            randomised = "randomised" in str((self.records[0].data.get("defense") or {}).get("traits", ""))
            label = f"{self.key.threat} (EOT {options['eot_samples']}, {options['eval_draws']} draws)" if randomised \
                else self.key.threat
            return f"{label}, real forward" if options.get("bpda_forward") == "real" else label
        if "substitute" in options:
            return f"{self.key.threat} (from {options['substitute']} seed {options['substitute_seed']})"
        return self.key.threat



# -- reading records ----------------------------------------------------------------------------------------------
def _config(rec: LoadedRecord) -> dict[str, Any]:
    return rec.data["config"]


def _outcomes(rec: LoadedRecord) -> dict[str, Any]:
    return rec.data["outcomes"]


def _attack(rec: LoadedRecord) -> str:
    return str(_config(rec)["attack"])


def _section_key(rec: LoadedRecord) -> tuple[str, str]:
    return str(_config(rec)["dataset"]), str(_config(rec)["model"])


def budget_norm(rec: LoadedRecord) -> str:
    """The norm of a record's budgets: a fixed-eps attack's own; L-infinity for minimal attacks (clipped into it)."""
    attack = rec.data.get("attack") or {}
    return str(attack.get("norm", "linf")) if attack.get("kind") == "fixed-eps" else "linf"


def _row_key(rec: LoadedRecord) -> RowKey:
    c = _config(rec)
    eps = tuple(float(e) for e in c["eps"])  # as stored: the per-budget outcomes follow this order
    return RowKey(str(c["defense"]), str(c["threat"]), int(c["n"]), int(c["seed"]), eps,
                  str(rec.data.get("test_points_sha256", "")), budget_norm(rec), _threat_options(rec),
                  weights_id(rec.data))


def _threat_options(rec: LoadedRecord) -> str:
    options = _config(rec).get("threat_options")
    return json.dumps(options, sort_keys=True) if options else ""


def _record_sort_key(rec: LoadedRecord) -> tuple[Any, ...]:
    return (*_section_key(rec), natural_key(_attack(rec)), str(rec.path))


# -- numbers ------------------------------------------------------------------------------------------------------
def _percent(k: int | float, n: int) -> int:
    """``100 k / n`` rounded half up, exactly (0 when n is 0)."""
    if n == 0:
        return 0
    return math.floor(Fraction(100) * Fraction(k) / n + Fraction(1, 2))


def _joined(values: Iterable[int]) -> str:
    return "/".join(str(v) for v in values)


def _counts(rows: Sequence[Sequence[Any]]) -> tuple[int, ...]:
    return tuple(int(sum(bool(v) for v in row)) for row in rows)


def _worst_case(records: Sequence[LoadedRecord], n_eps: int) -> tuple[int, ...]:
    """Per budget, how many examples are correct when clean and under every attack of ``records``."""
    clean = [all(vals) for vals in zip(*(_outcomes(r)["clean_correct"] for r in records))]
    counts = []
    for b in range(n_eps):
        adv = [all(vals) for vals in zip(*(_outcomes(r)["adv_correct"][b] for r in records))]
        counts.append(sum(c and a for c, a in zip(clean, adv)))
    return tuple(counts)


def _ci_cell(counts: Sequence[int], n: int) -> str:
    """Wilson 95% intervals in %, rounded outwards so that they always contain the shown point estimate."""
    parts = []
    for k in counts:
        lo, hi = wilson_interval(k, n)
        parts.append(f"[{math.floor(round(lo * 100, 9))}{DASH}{math.ceil(round(hi * 100, 9))}]")
    return "/".join(parts)


def _ms_cell(records: Sequence[LoadedRecord]) -> str:
    times = [float(t) for r in records for t in _outcomes(r)["defense_ms"] if t is not None]
    if not times:
        return DASH
    mean = math.fsum(times) / len(times)
    return f"{mean:.2f}" if mean < 100 else f"{mean:.0f}"


# -- grouping -----------------------------------------------------------------------------------------------------
def _make_row(key: RowKey, records: list[LoadedRecord]) -> Row:
    records = sorted(records, key=lambda r: (natural_key(_attack(r)), str(r.path)))
    for a, b in zip(records, records[1:]):
        if _attack(a) == _attack(b):
            raise BenchError(f"two records of the same cell ({_attack(a)}): {a.path} and {b.path}; delete one")
    labels = _outcomes(records[0])["label"]
    for r in records[1:]:
        if _outcomes(r)["label"] != labels:
            raise BenchError(f"{r.path} shares test points with {records[0].path} but not their labels")
    return Row(key, tuple(records), _worst_case(records, len(key.eps)))


def _row_sort_key(row: Row) -> tuple[Any, ...]:
    n = max(row.key.n, 1)
    worst = tuple(-Fraction(k, n) for k in reversed(row.worst))
    k = row.key
    return (worst, natural_key(k.defense), k.threat, k.n, k.seed, k.eps, k.test_points, k.norm, k.threat_options,
            k.weights)


def _sections(records: Iterable[LoadedRecord]) -> dict[tuple[str, str], list[Row]]:
    grouped: dict[tuple[str, str], dict[RowKey, list[LoadedRecord]]] = {}
    for rec in sorted(records, key=_record_sort_key):
        grouped.setdefault(_section_key(rec), {}).setdefault(_row_key(rec), []).append(rec)
    return {
        section: sorted((_make_row(key, recs) for key, recs in rows.items()), key=_row_sort_key)
        for section, rows in sorted(grouped.items())
    }


def _adaptive_defenses(records: Iterable[LoadedRecord]) -> set[tuple[str, str, str]]:
    """(data set, model, defense) evaluated by an attacker who knows the defense (see white_box_when_oblivious)."""
    return {(*_section_key(r), str(_config(r)["defense"])) for r in records
            if _config(r)["threat"] == "adaptive" or white_box_when_oblivious(r)}


# -- tables -------------------------------------------------------------------------------------------------------
def _eps_text(eps: Sequence[float], norm: str = "linf") -> str:
    return ("" if norm == "linf" else f"{norm.upper()} ") + ", ".join(format_eps(e, norm) for e in eps)


def _table(headers: list[str], rows: list[list[str]], fmt: str = "github") -> str:
    """A Markdown table (``fmt="html"``: an HTML one, cells escaped, for the site's pages)."""
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def _attack_cells(row: Row, attacks: Sequence[str]) -> list[str]:
    """Per attack: accuracy per budget; for a pipeline evaluated over several draws, the mean over draws after it."""
    by_attack = {_attack(r): r for r in row.records}
    cells = []
    for name in attacks:
        rec = by_attack.get(name)
        counts = _counts(_outcomes(rec)["adv_correct"]) if rec else None
        cell = _joined(_percent(k, row.key.n) for k in counts) if counts is not None else DASH
        draws = _outcomes(rec).get("draws_correct") if rec else None
        if draws:
            per_draw = int(rec.data["defense"]["eval_draws"])
            cell += " (mean " + _joined(_percent(Fraction(sum(c), per_draw), row.key.n) for c in draws["adv"]) + ")"
        cells.append(cell)
    return cells


def _our_row(row: Row, attacks: Sequence[str], per_row_eps: bool, marked: bool, incomplete: bool, threat: str
             ) -> list[str]:
    k = row.key
    clean = _percent(sum(bool(v) for v in _outcomes(row.records[0])["clean_correct"]), k.n)
    return [
        k.defense + (f" {OBLIVIOUS_MARK}" if marked else ""),
        threat,
        *([_eps_text(k.eps, k.norm)] if per_row_eps else []),
        str(clean),
        *_attack_cells(row, attacks),
        _joined(_percent(c, k.n) for c in row.worst) + (f" {INCOMPLETE_MARK}" if incomplete else ""),
        _ci_cell(row.worst, k.n),
        _ms_cell(row.records),
        str(k.n),
        str(k.seed),
    ]


def _paper_match(dataset: str, model: str, row: Row) -> paper.PaperRow | None:
    if row.key.threat != paper.THREAT:
        return None
    return paper.find(dataset, model, row.key.defense, row.key.eps)


def _paper_row(published: paper.PaperRow, attacks: Sequence[str], per_row_eps: bool) -> list[str]:
    clean = published.cells[paper.CLEAN]
    clean_text = str(clean[0]) if len(set(clean)) == 1 else _joined(clean)
    cells = [_joined(published.cells[a]) if a in published.cells else DASH for a in attacks]
    return [
        f"↳ {published.source}",
        paper.THREAT,
        *([_eps_text(published.eps)] if per_row_eps else []),
        clean_text,
        *cells,
        _joined(published.worst_case) if published.worst_case else DASH,
        DASH, DASH, DASH, DASH,
    ]


def _main_table(dataset: str, model: str, rows: list[Row], adaptive: set[tuple[str, str, str]],
                per_row_eps: bool, show_weights: bool = False, fmt: str = "github") -> tuple[str, bool, bool]:
    attacks = sorted({_attack(r) for row in rows for r in row.records}, key=natural_key)
    headers = ["defense", "threat", *(["budgets"] if per_row_eps else []), "clean", *attacks,
               "worst case", "95% CI", "ms/img", "n", "seed"]
    body: list[list[str]] = []
    any_marked = any_incomplete = False
    same_norm: dict[str, set[str]] = {}
    labels: dict[tuple[Any, ...], int] = {}
    for row in rows:
        same_norm.setdefault(row.key.norm, set()).update(_attack(r) for r in row.records)
        label = (row.key.defense, row.threat_label, row.key.n, row.key.seed, row.key.eps, row.key.norm)
        labels[label] = labels.get(label, 0) + 1
    for row in rows:
        # its worst case misses attacks that other rows with budgets in its norm faced
        incomplete = len(row.records) < len(same_norm[row.key.norm])
        any_incomplete |= incomplete
        marked = row.key.threat != "adaptive" and (dataset, model, row.key.defense) not in adaptive
        any_marked |= marked
        threat = row.threat_label
        if labels[(row.key.defense, threat, row.key.n, row.key.seed, row.key.eps, row.key.norm)] > 1:
            threat = f"{row.key.threat} ({row.key.threat_options})"  # rows that differ only in their options
        if show_weights:
            threat = f"{threat}, weights {row.key.weights}"
        body.append(_our_row(row, attacks, per_row_eps, marked, incomplete, threat))
        published = _paper_match(dataset, model, row)
        if published is not None:
            body.append(_paper_row(published, attacks, per_row_eps))
    return _table(headers, body, fmt), any_marked, any_incomplete


def _threat_cell(combined: Combined | None, n: int, missing: str) -> str:
    if combined is None:
        return missing
    text = _joined(DASH if k is None else _percent(k, combined.n) for k in combined.worst)
    return text if combined.n == n else f"{text} (n={combined.n})"


def _checks_cell(h: Headline) -> str:
    parts = list(h.flags)
    if h.unchecked:
        parts.append(f"unchecked ({h.unchecked} record{'s' if h.unchecked > 1 else ''})")
    return "; ".join(parts) or "ok"


def headline_rows(dataset: str, model: str, rows: list[Row], eps: tuple[float, ...]
                  ) -> tuple[list[str], list[list[str]], list[Headline]]:
    """The headline table of a section: headers, one row of cells per defense (and seed), and the headlines."""
    heads = headlines([r for row in rows for r in row.records], eps)
    seeds = len({h.seed for h in heads}) > 1
    weights = {(row.key.defense, row.key.seed): row.key.weights for row in rows}  # one per defense (split_by_weights)
    body = []
    for h in heads:
        published = paper.find(dataset, model, h.defense, eps)
        claim = _joined(published.worst_case) if published is not None and published.worst_case else DASH
        o = h.overall
        body.append([
            h.defense + (f" {OBLIVIOUS_MARK}" if h.not_adaptive else ""),
            *([str(h.seed)] if seeds else []),
            str(_percent(o.clean, o.n)),
            _threat_cell(h.per_threat.get("oblivious"), o.n, DASH),
            _threat_cell(h.per_threat.get("adaptive"), o.n, "not run"),
            _threat_cell(h.per_threat.get("transfer"), o.n, DASH),
            _joined(_percent(k, o.n) for k in o.worst),
            _ci_cell(o.worst, o.n),
            str(o.n),
            claim,
            _checks_cell(h),
            weights[(h.defense, h.seed)][:WEIGHTS_SHOWN],
        ])
    headers = ["defense", *(["seed"] if seeds else []), "clean", "oblivious", "adaptive", "transfer", "worst case",
               "95% CI", "n", "paper", "checks", "weights"]
    return headers, body, heads


def _headline_table(dataset: str, model: str, rows: list[Row], eps: tuple[float, ...], in_site: bool = False) -> str:
    """The headline in Markdown, each defense linked to its site page (from leaderboard.md, or from a page inside
    the site with ``in_site``)."""
    headers, body, heads = headline_rows(dataset, model, rows, eps)
    for cells, h in zip(body, heads):
        page = site_page(dataset, model, h.defense)
        cells[0] = f"[{cells[0]}]({quote(page.split('/', 1)[1] if in_site else page)})"
        cells[headers.index("worst case")] = f"**{cells[headers.index('worst case')]}**"
    return _table(headers, body)


def _detection_table(rows: list[Row], per_row_eps: bool, fmt: str = "github") -> str | None:
    body: list[tuple[tuple[Any, ...], list[str]]] = []
    for row in rows:
        for rec in row.records:
            out = _outcomes(rec)
            if out.get("detected") is None:
                continue
            k = row.key
            detected = _joined(_percent(c, k.n) for c in _counts(out["detected"]))
            false_pos = str(_percent(sum(bool(v) for v in out["clean_detected"]), k.n))
            sort_key = (natural_key(k.defense), k.threat, natural_key(_attack(rec)), k.n, k.seed, k.eps, k.test_points,
                        k.norm)
            cells = [k.defense, k.threat, _attack(rec), *([_eps_text(k.eps, k.norm)] if per_row_eps else []),
                     detected, false_pos, str(k.n), str(k.seed)]
            body.append((sort_key, cells))
    if not body:
        return None
    headers = ["defense", "threat", "attack", *(["budgets"] if per_row_eps else []),
               "detected (%)", "false positives on clean (%)", "n", "seed"]
    return _table(headers, [cells for _, cells in sorted(body, key=lambda item: item[0])], fmt)


def slug(text: str) -> str:
    """A file-name-safe form of a defense name (compositions and options included): ``jpeg(quality=50)+x`` ->
    ``jpeg_quality_50__x``."""
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)


def section_page(dataset: str, model: str) -> str:
    """The site page of a section, relative to the leaderboard's folder."""
    return f"{SITE}/{slug(dataset)}_{slug(model)}.html"


def site_page(dataset: str, model: str, defense: str) -> str:
    """The site page of one defense in a section, relative to the leaderboard's folder."""
    return f"{SITE}/{slug(dataset)}_{slug(model)}/{slug(defense)}.html"


# -- figures ------------------------------------------------------------------------------------------------------
def _figure_dataset(name: str, datasets: Iterable[str]) -> str | None:
    """The longest data set name that ``name`` starts with, followed by a non-alphanumeric character or nothing."""
    fits = [d for d in datasets if name.startswith(d) and not name[len(d):len(d) + 1].isalnum()]
    return max(fits, key=len) if fits else None


def figure_links(results_dir: Path, output: Path) -> list[str]:
    """Files in ``results_dir/figures`` (sorted) as POSIX paths relative to the folder of ``output``."""
    folder = Path(results_dir) / FIGURES_SUBDIR
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    start = Path(os.path.abspath(Path(output).parent))
    return [Path(os.path.relpath(os.path.abspath(p), start)).as_posix() for p in files]


def _figure_list(files: Sequence[str]) -> str:
    return "Figures:\n\n" + "\n".join(f"- [{f.rsplit('/', 1)[-1]}]({quote(f)})" for f in files)


def _figures_section(dataset: str, model: str, sections: Iterable[tuple[str, str]], figures: Sequence[str]
                     ) -> str | None:
    """The figures of one section: those named after its data set, less those named after another of that data
    set's classifiers ("mnist5k_vgg_..." belongs to mnist5k / vgg only)."""
    sections = list(sections)
    datasets = sorted({d for d, _ in sections})
    others = [m for d, m in sections if d == dataset and m != model]

    def mine(name: str) -> bool:
        rest = name[len(dataset) + 1:]
        return _figure_dataset(name, datasets) == dataset and not any(rest.startswith(f"{m}_") for m in others)

    mine = sorted(f for f in figures if mine(f.rsplit("/", 1)[-1]))
    if not mine:
        return None
    return _figure_list(mine)


# -- detection by PixelCNN likelihood -----------------------------------------------------------------------------
def _detection_figures(det: LoadedDetection) -> set[str]:
    c = det.data["config"]
    return {figure_name(c["dataset"], c["model"], kind) for kind in FIGURE_KINDS}


def _detection_section(det: LoadedDetection, figures: Sequence[str]) -> str:
    data = det.data
    c, pixelcnn = data["config"], data["pixelcnn"]
    dataset, model = c["dataset"], c["model"]
    rows = []
    for name in sorted(c["attacks"], key=natural_key):
        cells = data["cells"][name]
        rows.append([name, auc_text(cells), _joined(cell["used"] for cell in cells),
                     "/".join(DASH if cell["mean_bpd"] is None else f"{cell['mean_bpd']:.3f}" for cell in cells),
                     str(c["n"]), str(c["seed"])])
    parts = [
        f"## Detection by PixelCNN likelihood: {dataset} / {model}",
        f"From `bench detect` (results/{DETECTION_SUBDIR}/{dataset}/{model}.json). Oblivious adversarial inputs, "
        f"crafted on the undefended classifier, and the clean test points are scored by their bits per dimension under a "
        f"PixelCNN ({c['pixelcnn_size']}, `{pixelcnn['key']}`, test bits/dim {pixelcnn['test_bpd']:.3f}); "
        f"the clean points average {data['clean']['mean_bpd']:.3f}. AUC is the ROC AUC of telling clean from "
        f"adversarial inputs by bits/dim (1.00 perfect, 0.50 chance), per budget ε: {_eps_text(c['eps'])}. "
        "Every clean point counts; adversarial inputs identical to their clean image (a failed attack) are left out: "
        "\"used\" counts the rest.",
        _table(["attack", "AUC", "adversarial used", "mean bits/dim", "n", "seed"], rows),
    ]
    names = _detection_figures(det)
    mine = sorted(f for f in figures if f.rsplit("/", 1)[-1] in names)
    if mine:
        parts.append(_figure_list(mine))
    return "\n\n".join(parts)


# -- the document -------------------------------------------------------------------------------------------------
def _section(dataset: str, model: str, rows: list[Row], adaptive: set[tuple[str, str, str]]) -> str:
    """A section of leaderboard.md: the headline table, then a link to the site's page (details, detection,
    figures). ``adaptive``: (data set, model, defense) evaluated by an attacker who knows the defense."""
    parts = [f"## {dataset} / {model}"]
    eps = headline_eps([r for row in rows for r in row.records])
    if eps is not None:
        parts.append(f"Headline at ε {_eps_text(eps)}:")
        parts.append(_headline_table(dataset, model, rows, eps))
    if any(row.key.threat != "adaptive" and (dataset, model, row.key.defense) not in adaptive for row in rows):
        parts.append(f"{OBLIVIOUS_MARK} no adaptive evaluation on {dataset} / {model} (oblivious or transfer attacks "
                     "only): these numbers say nothing about an attacker who knows the defense.")
    parts.append(f"Details (every attack, threat model and budget), detection and figures: "
                 f"[{dataset} / {model}]({quote(section_page(dataset, model))}).")
    return "\n\n".join(parts)


def _aside_section(records: list[LoadedRecord]) -> str:
    """The records of model weights other than those their defense's rows combine (benchmark.report.instances), in details
    tables of their own: each row holds one set of weights, named by its hash ("unrecorded": before fingerprints)."""
    parts = ["## Other model weights (not combined with the rows above)",
             "The same training configuration retrained on another machine gives other weights and other numbers, so "
             "a record counts only with records of the weights it measured. Per defense, the rows above combine the "
             "weights with the most records; these records measured other weights (named by a hash of the record's "
             "`models`; `unrecorded`: written before records named their weights)."]
    adaptive = _adaptive_defenses(records)
    for (dataset, model), rows in _sections(records).items():
        per_row_eps = len({(row.key.eps, row.key.norm) for row in rows}) > 1
        table, _, _ = _main_table(dataset, model, rows, adaptive, per_row_eps, show_weights=True)
        parts += [f"### Other weights ({dataset} / {model})", table]
    return "\n\n".join(parts)


def render(records: list[LoadedRecord], figures: Sequence[str] = (), detections: Sequence[LoadedDetection] = (),
           models: Sequence[Sequence[str]] = ()) -> str:
    """The whole text of ``leaderboard.md`` for ``records`` and detection records ``detections`` (any order): per
    data set and classifier its headline and a link to the site's pages (:mod:`benchmark.report.site`), which hold
    the details, the detection tables, the figures and the records of other model weights; then the table of the
    trained models, ``models`` (rows of :func:`benchmark.report.models.model_rows`)."""
    combined, aside = split_by_weights(records)
    sections = _sections(combined)
    body = ["No records yet: run `bench run` first."]
    if sections:
        adaptive = _adaptive_defenses(combined)
        body = [_section(d, m, rows, adaptive) for (d, m), rows in sections.items()]
    for d in sorted(detections, key=lambda d: (d.data["config"]["dataset"], d.data["config"]["model"])):
        c = d.data["config"]
        body.append(f"Detection by PixelCNN likelihood on {c['dataset']} / {c['model']}: "
                    f"[ROC AUC per attack]({quote(section_page(c['dataset'], c['model']))}#detection).")
    if aside:
        body.append(f"Records of other model weights than the rows above combine: [{SITE}/other-weights.html]"
                    f"({SITE}/other-weights.html).")
    body.append(f"Every table in one Markdown page (details, detection, figures): [{SITE}/full.md]({SITE}/full.md).")
    if models:
        body += ["## Models", MODELS_NOTE, _table(MODEL_HEADERS, [list(row) for row in models])]
    kinds = {_attack(r): (r.data.get("attack") or {}).get("kind") for r in records}
    text = header([a for a, k in kinds.items() if k == "fixed-eps"], [a for a, k in kinds.items() if k == "minimal"])
    return text + "\n" + "\n\n".join(body) + "\n"


def _full_section(dataset: str, model: str, rows: list[Row], adaptive: set[tuple[str, str, str]],
             sections: Iterable[tuple[str, str]], figures: Sequence[str]) -> str:
    budgets = {(row.key.eps, row.key.norm) for row in rows}
    per_row_eps = len(budgets) > 1
    parts = [f"## {dataset} / {model}"]
    if not per_row_eps:
        parts.append(f"Budgets ε: {_eps_text(*next(iter(budgets)))}.")
    eps = headline_eps([r for row in rows for r in row.records])
    if eps is not None:
        parts.append(f"Headline at ε {_eps_text(eps)}:" if per_row_eps else "Headline:")
        parts.append(_headline_table(dataset, model, rows, eps, in_site=True))
    table, any_marked, any_incomplete = _main_table(dataset, model, rows, adaptive, per_row_eps)
    parts.append(f"### Details ({dataset} / {model})")
    parts.append(table)
    if any_marked:
        parts.append(f"{OBLIVIOUS_MARK} no adaptive evaluation of this defense on {dataset} / {model} yet (oblivious "
                     "or transfer attacks only): its numbers say nothing about an attacker who knows the defense.")
    if any_incomplete:
        parts.append(f"{INCOMPLETE_MARK} worst case over fewer attacks than this section has (see the \"{DASH}\" cells): "
                     "an upper bound until the missing cells are run.")
    detection = _detection_table(rows, per_row_eps)
    if detection is not None:
        parts.append(f"### Detection ({dataset} / {model})")
        parts.append(detection)
    links = _figures_section(dataset, model, sections, figures)
    if links is not None:
        parts.append(links)
    return "\n\n".join(parts)


def render_full(records: list[LoadedRecord], figures: Sequence[str] = (), detections: Sequence[LoadedDetection] = ()
                ) -> str:
    """Every table for ``records`` and detection records ``detections`` (any order) in one Markdown page: per section
    the headline, the details, the detection table and the figures, then the detection sections and the records of
    other weights. The site keeps it as ``leaderboard/full.md`` (GitHub shows Markdown, not HTML pages).

    ``figures`` are links to figure files, relative to the leaderboard's folder (see :func:`figure_links`); each is
    listed in the sections of the data set its file name starts with (only in its classifier's section when the name
    goes on with one, "mnist5k_vgg_"), or in its detection section.
    """
    detections = sorted(detections, key=lambda d: (d.data["config"]["dataset"], d.data["config"]["model"],
                                                   str(d.path)))
    linked = set().union(*(_detection_figures(d) for d in detections))
    general = [f for f in figures if f.rsplit("/", 1)[-1] not in linked]  # listed once, in the detection section
    combined, aside = split_by_weights(records)
    sections = _sections(combined)
    body = ["No records yet: run `bench run` first."]
    if sections:
        adaptive = _adaptive_defenses(combined)
        body = [_full_section(d, m, rows, adaptive, sections, general) for (d, m), rows in sections.items()]
    body += [_detection_section(d, figures) for d in detections]
    if aside:
        body.append(_aside_section(aside))
    kinds = {_attack(r): (r.data.get("attack") or {}).get("kind") for r in records}
    text = header([a for a, k in kinds.items() if k == "fixed-eps"], [a for a, k in kinds.items() if k == "minimal"])
    return text + "\n" + DETAILS_NOTE + "\n\n" + "\n\n".join(body) + "\n"


def expected(results_dir: Path, output: Path) -> str:
    """The text :func:`write` would give ``output``; a BenchError naming every record that does not validate."""
    return render(load_all(results_dir), figure_links(results_dir, output), load_detections(results_dir),
                  model_rows(results_dir))


def write(results_dir: Path, output: Path) -> bool:
    """Regenerate ``output`` from the records under ``results_dir``, atomically; whether its text changed."""
    output = Path(output)
    text = expected(results_dir, output)
    if output.is_file() and output.read_bytes() == text.encode("utf-8"):
        return False
    atomic_write_text(output, text)
    return True


def differences(output: Path, text: str) -> list[str]:
    """Why ``output`` is not ``text`` (missing or stale); empty when it is."""
    output = Path(output)
    if not output.is_file():
        return [f"{output.name} is missing: run `{COMMAND}`"]
    if output.read_bytes() != text.encode("utf-8"):
        return [f"{output.name} is stale: run `{COMMAND}`"]
    return []


def check(results_dir: Path, output: Path) -> list[str]:
    """Problems with ``output``: empty when it is exactly what :func:`write` would produce."""
    try:
        text = expected(results_dir, Path(output))
    except BenchError as exc:
        return [str(exc)]
    return differences(Path(output), text)
