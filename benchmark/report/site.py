"""The leaderboard as a static site (``bench leaderboard`` writes it beside leaderboard.md; ``--html DIR`` elsewhere).

A pure, deterministic function of the records, like leaderboard.md (:mod:`benchmark.report.leaderboard`), rendered
with Jinja2 templates as RobustBench renders its pages:

- ``index.html``: per data set and classifier, the headline table, sortable by any column and searchable;
- ``<dataset>_<model>.html``: the details table (every defense x threat model x attack), the detection tables, the
  PixelCNN-likelihood detection section and the figures;
- ``<dataset>_<model>/<defense>.html``: one defense: its headline per budget and threat model, every attack at
  every budget with the paper's number beside ours, the records (linked), the weights, the sanity checks and its
  figures (robustness curve, purified examples, detection);
- ``other-weights.html``: records of other model weights than the ones the leaderboard combines;
- ``full.md``: every table in one Markdown page (GitHub renders Markdown, not these HTML pages).

Links to records and figures are relative to each page, so the site works from the file system and any web server.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from benchmark.core.budgets import format_eps
from benchmark.core.registry import natural_key
from benchmark.engine.detection import FIGURE_KINDS, LoadedDetection, auc_text, figure_name, load_detections
from benchmark.report import leaderboard as lb
from benchmark.report.headline import headline_eps
from benchmark.report.instances import split_by_weights
from benchmark.report.stats import wilson_interval
from benchmark.store.fileio import atomic_write_text
from benchmark.store.paths import FIGURES_SUBDIR
from benchmark.store.records import LoadedRecord, load_all


@dataclass(frozen=True)
class Figure:
    name: str
    src: str  # relative to the page


def _env() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(loader=PackageLoader("benchmark.report", "templates"), autoescape=select_autoescape(["html"]),
                       undefined=StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


def _rel(target: Path, page: str, site: Path) -> str:
    """``target`` as a POSIX path relative to the folder of ``page`` (a path inside ``site``)."""
    start = os.path.abspath((site / page).parent)
    return Path(os.path.relpath(os.path.abspath(target), start)).as_posix()


def _in_site(path: str) -> str:
    """A leaderboard-relative site path (``leaderboard/x.html``) as a path inside the site folder (``x.html``)."""
    return path.split("/", 1)[1]


def _figures(names: Sequence[str], page: str, site: Path, results_dir: Path) -> list[Figure]:
    folder = Path(results_dir) / FIGURES_SUBDIR
    return [Figure(n, _rel(folder / n, page, site)) for n in names if (folder / n).is_file()]


def _section_figures(dataset: str, model: str, sections: Sequence[tuple[str, str]], names: Sequence[str]
                     ) -> list[str]:
    """The figures named after this section's data set, less those of another of its classifiers."""
    datasets = sorted({d for d, _ in sections})
    others = [m for d, m in sections if d == dataset and m != model]
    return sorted(n for n in names if lb._figure_dataset(n, datasets) == dataset
                  and not any(n[len(dataset) + 1:].startswith(f"{m}_") for m in others))


def _percent_text(counts: Sequence[int], n: int) -> str:
    return lb._joined(lb._percent(k, n) for k in counts)


def _defense_page(dataset: str, model: str, defense: str, rows: list[lb.Row], eps: tuple[float, ...] | None,
                  figure_names: Sequence[str], site: Path, results_dir: Path, env: Any) -> str:
    page = _in_site(lb.site_page(dataset, model, defense))
    mine = [row for row in rows if row.key.defense == defense]
    records = [r for row in mine for r in row.records]
    headline, threats, checks = [], [], "no records at the headline budgets"
    if eps is not None:
        heads = [h for h in lb.headlines(records, eps) if h.defense == defense]
        if heads:
            h = heads[0]
            threats = [t for t in ("oblivious", "adaptive", "transfer") if t in h.per_threat]
            for i, e in enumerate(eps):
                lo, hi = wilson_interval(h.overall.worst[i], h.overall.n)
                headline.append({
                    "eps": format_eps(e), "clean": lb._percent(h.overall.clean, h.overall.n),
                    "worst": lb._percent(h.overall.worst[i], h.overall.n), "interval": f"{100 * lo:.0f}–{100 * hi:.0f}",
                    "per_threat": {t: lb._percent(c.worst[i], c.n) for t, c in h.per_threat.items()
                                   if c.worst[i] is not None},
                    "n": h.overall.n})
            checks = lb._checks_cell(h)
    cells = []
    for row in mine:
        published = lb._paper_match(dataset, model, row)
        for rec in row.records:
            attack = lb._attack(rec)
            theirs = published.cells.get(attack) if published is not None else None
            cells.append({
                "threat": row.threat_label, "attack": attack, "eps": lb._eps_text(row.key.eps, row.key.norm),
                "accuracy": _percent_text(lb._counts(lb._outcomes(rec)["adv_correct"]), row.key.n),
                "paper": lb._joined(theirs) if theirs else lb.DASH, "n": row.key.n,
                "seconds": _seconds_text(_record_seconds(rec)),
                "record": _rel(rec.path, page, site), "record_name": rec.path.name})
    weights = sorted(((mine[0].records[0].data.get("models") or {}).items())) if mine else []
    detects = any("detects" in str((r.data.get("defense") or {}).get("traits", "")) for r in records)
    names = [f"{dataset}_{model}_robustness_curve.png", f"{dataset}_{model}_accuracy.png"]
    names += sorted(n for n in figure_names if n.startswith(f"{dataset}_{model}_{defense}_") and
                    n.endswith("_examples.png"))
    if detects:
        names += [figure_name(dataset, model, kind) for kind in FIGURE_KINDS]
    return env.get_template("defense.html").render(
        title=f"{defense} · {dataset} / {model}", root=_rel(site / "index.html", page, site).rsplit("index.html")[0],
        defense=defense, dataset=dataset, model=model, headline=headline, threats=threats, checks=checks,
        cells=cells, costs=_costs(mine), weights=weights, figures=_figures(names, page, site, results_dir))


def _record_seconds(rec: LoadedRecord) -> float | None:
    """Wall time the record took: its attack and the defense's work on the adversarial inputs (None: not recorded)."""
    prov = rec.data.get("provenance") or {}
    if prov.get("attack_seconds") is None:
        return None
    return float(prov["attack_seconds"]) + float(prov.get("defense_seconds") or 0.0)


def _seconds_text(seconds: float | None) -> str:
    return lb.DASH if seconds is None else f"{seconds:,.0f}"


@dataclass
class _Cost:
    seconds: float = 0.0
    records: int = 0
    made_on: set[str] = field(default_factory=set)


def _costs(rows: Sequence[lb.Row]) -> list[dict[str, str]]:
    """Total measured seconds per threat model and n, with the devices and torch threads that made them: what it
    costs to rerun the row's attacks (and, scaled by n, to tighten its interval)."""
    totals: dict[tuple[str, int], _Cost] = {}
    for row in rows:
        for rec in row.records:
            seconds = _record_seconds(rec)
            if seconds is None:
                continue
            prov = rec.data.get("provenance") or {}
            cost = totals.setdefault((row.threat_label, row.key.n), _Cost())
            cost.seconds += seconds
            cost.records += 1
            cost.made_on.add(f"{prov.get('device', '?')}, {prov.get('torch_threads', '?')} torch thread(s)")
    return [{"threat": threat, "n": str(n), "records": str(c.records), "seconds": _seconds_text(c.seconds),
             "per_point": f"{c.seconds / n:,.1f}", "made_on": "; ".join(sorted(c.made_on))}
            for (threat, n), c in sorted(totals.items())]


def _likelihood(det: LoadedDetection) -> dict[str, str]:
    data = det.data
    c, pixelcnn = data["config"], data["pixelcnn"]
    rows = []
    for name in sorted(c["attacks"], key=natural_key):
        cells = data["cells"][name]
        rows.append([name, auc_text(cells), lb._joined(cell["used"] for cell in cells),
                     "/".join(lb.DASH if cell["mean_bpd"] is None else f"{cell['mean_bpd']:.3f}" for cell in cells),
                     str(c["n"]), str(c["seed"])])
    note = (f"From bench detect. Oblivious adversarial inputs and the clean test points are scored by their bits per "
            f"dimension under a PixelCNN ({c['pixelcnn_size']}, {pixelcnn['key']}, test bits/dim "
            f"{pixelcnn['test_bpd']:.3f}); the clean points average {data['clean']['mean_bpd']:.3f}. AUC is the ROC "
            f"AUC of telling clean from adversarial inputs by bits/dim (1.00 perfect, 0.50 chance), per budget ε: "
            f"{lb._eps_text(c['eps'])}; \"used\" counts the adversarial inputs that differ from their clean image.")
    return {"note": note, "table": lb._table(["attack", "AUC", "adversarial used", "mean bits/dim", "n", "seed"], rows,
                                             "html")}


def render_site(records: list[LoadedRecord], detections: Sequence[LoadedDetection], results_dir: Path, site: Path
                ) -> dict[str, str]:
    """Every page of the site: path inside ``site`` -> HTML text."""
    env = _env()
    folder = Path(results_dir) / FIGURES_SUBDIR
    figure_names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) \
        if folder.is_dir() else []
    combined, aside = split_by_weights(records)
    sections = lb._sections(combined)
    adaptive = lb._adaptive_defenses(combined)
    pages: dict[str, str] = {}
    index_sections = []
    for (dataset, model), rows in sections.items():
        eps = headline_eps([r for row in rows for r in row.records])
        section = _in_site(lb.section_page(dataset, model))
        per_row_eps = len({(row.key.eps, row.key.norm) for row in rows}) > 1
        if eps is not None:
            headers, body, heads = lb.headline_rows(dataset, model, rows, eps)
            index_sections.append({
                "dataset": dataset, "model": model, "anchor": lb.slug(f"{dataset}_{model}"), "page": section,
                "eps": lb._eps_text(eps), "headers": headers,
                "rows": [{"cells": cells, "page": _in_site(lb.site_page(dataset, model, h.defense))}
                         for cells, h in zip(body, heads)]})
        details, _, _ = lb._main_table(dataset, model, rows, adaptive, per_row_eps, fmt="html")
        mine = [d for d in detections if (d.data["config"]["dataset"], d.data["config"]["model"]) == (dataset, model)]
        likelihood_figures = {figure_name(dataset, model, kind) for kind in FIGURE_KINDS} if mine else set()
        names = _section_figures(dataset, model, list(sections), figure_names)
        pages[section] = env.get_template("section.html").render(
            title=f"{dataset} / {model}", root="", dataset=dataset, model=model, details=details,
            eps_note="budgets in the table" if per_row_eps else f"ε {lb._eps_text(rows[0].key.eps, rows[0].key.norm)}",
            detection=lb._detection_table(rows, per_row_eps, "html"), likelihood=[_likelihood(d) for d in mine],
            figures=_figures(sorted(set(names) | likelihood_figures), section, site, results_dir))
        for defense in sorted({row.key.defense for row in rows}, key=natural_key):
            pages[_in_site(lb.site_page(dataset, model, defense))] = _defense_page(
                dataset, model, defense, rows, eps, figure_names, site, results_dir, env)
    if aside:
        other = []
        for (dataset, model), rows in lb._sections(aside).items():
            per_row_eps = len({(row.key.eps, row.key.norm) for row in rows}) > 1
            table, _, _ = lb._main_table(dataset, model, rows, lb._adaptive_defenses(aside), per_row_eps,
                                         show_weights=True, fmt="html")
            other.append({"title": f"{dataset} / {model}", "table": table})
        pages["other-weights.html"] = env.get_template("other_weights.html").render(
            title="Other model weights", root="", sections=other)
    for static in ("style.css", "table.js"):  # shared by every page
        pages[static] = env.loader.get_source(env, static)[0]
    pages["full.md"] = lb.render_full(records, lb.figure_links(results_dir, site / "full.md"), detections)
    pages["index.html"] = env.get_template("index.html").render(
        title="Leaderboard", root="", sections=index_sections, other_weights=bool(aside))
    return dict(sorted(pages.items()))


def expected_site(results_dir: Path, site: Path) -> dict[str, str]:
    return render_site(load_all(results_dir), load_detections(results_dir), Path(results_dir), Path(site))


def write_site(results_dir: Path, site: Path) -> int:
    """Write the site under ``site`` (pages that no longer exist are removed); how many files changed."""
    site = Path(site)
    pages = expected_site(results_dir, site)
    changed = 0
    for name, html in pages.items():
        path = site / name
        if not path.is_file() or path.read_text(encoding="utf-8") != html:
            atomic_write_text(path, html)
            changed += 1
    for path in sorted(site.rglob("*.html")) if site.is_dir() else []:
        if path.relative_to(site).as_posix() not in pages:
            path.unlink()
            changed += 1
    return changed


def check_site(results_dir: Path, site: Path) -> list[str]:
    """Pages of ``site`` that are missing, stale or left over."""
    site = Path(site)
    pages = expected_site(results_dir, site)
    problems = []
    for name, html in pages.items():
        path = site / name
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif path.read_text(encoding="utf-8") != html:
            problems.append(f"{path} is stale")
    for path in sorted(site.rglob("*.html")) if site.is_dir() else []:
        if path.relative_to(site).as_posix() not in pages:
            problems.append(f"{path} is left over")
    return problems
