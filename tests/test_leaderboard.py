"""The leaderboard generator, the paper's tables and the Wilson interval, on small synthetic records."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import pytest

from benchmark.core.errors import BenchError
from benchmark.report import leaderboard, paper
from benchmark.report.instances import split_by_weights, weights_id
from benchmark.report.stats import wilson_interval
from benchmark.store import records

FASHION_EPS = (8 / 255, 25 / 255)


def make_record(attack: str, adv_correct: Sequence[Sequence[int]], *, clean_correct: Sequence[int] | None = None,
                dataset: str = "fashion-mnist", model: str = "resnet", defense: str = "none",
                threat: str = "oblivious", eps: Sequence[float] = FASHION_EPS, seed: int = 0,
                defense_ms: float = 0.5, detected: Sequence[Sequence[int]] | None = None,
                clean_detected: Sequence[int] | None = None, norm: str = "linf",
                threat_options: dict[str, Any] | None = None, traits: str = "purifies",
                checks: dict[str, Any] | None = None, needs_gradients: bool | None = None,
                runs_black_box: bool | None = None) -> dict[str, Any]:
    """A record that passes ``records.validate``: n is the length of each per-budget list of ``adv_correct``."""
    n = len(adv_correct[0])
    assert len(adv_correct) == len(eps)
    config = records.normalise_config(dict(dataset=dataset, model=model, defense=defense, attack=attack,
                                           threat=threat, eps=list(eps), n=n, seed=seed,
                                           threat_options=threat_options))
    clean = list(clean_correct) if clean_correct is not None else [1] * n
    extra = {"checks": checks} if checks is not None else {}
    return {**extra,
        "schema": records.SCHEMA,
        "id": records.record_id(config),
        "config": config,
        "attack": {"norm": norm, "kind": "fixed-eps", "implementation": "test", "options": {},
                   "needs_gradients": needs_gradients,
                   **({} if runs_black_box is None else {"runs_black_box": runs_black_box})},
        "defense": {"traits": traits, "options": {}},
        "classifier": {"key": "k", "clean_accuracy": 1.0, "training_defense": "none"},
        "test_points_sha256": f"points-{dataset}-{n}-{seed}",
        "outcomes": {
            "label": [i % 10 for i in range(n)],
            "clean_correct": clean,
            "adv_correct": [list(row) for row in adv_correct],
            "undefended_adv_correct": [list(row) for row in adv_correct],
            "defense_ms": [defense_ms] * n,
            "unbounded": None,
            "detected": [list(row) for row in detected] if detected is not None else None,
            "clean_detected": list(clean_detected) if clean_detected is not None else None,
        },
        "summary": {},
        "provenance": {},
    }


def fooled(n: int, indices: Sequence[int]) -> list[int]:
    """Per-example correctness with the examples at ``indices`` fooled."""
    return [0 if i in indices else 1 for i in range(n)]


def save_all(results: Path, recs: Sequence[dict[str, Any]]) -> None:
    for rec in recs:
        records.save(results, rec)


def render_dir(results: Path) -> str:
    return leaderboard.render_full(records.load_all(results))


def table_rows(text: str, table: str = "details") -> list[dict[str, str]]:
    """Every data row of every markdown table in ``text``, as {header: cell}: of the details tables (one row per
    defense and threat model), the headline tables (one row per defense) or "all"."""
    rows: list[dict[str, str]] = []
    headers: list[str] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            headers = None
            continue
        # a cell's Markdown link shows its text (the headline links each defense to its page)
        cells = [re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", c.strip()) for c in line.strip("|").split("|")]
        if headers is None:
            headers = cells
        elif not set("".join(cells)) <= set("-:"):
            rows.append(dict(zip(headers, cells)))
    if table == "details":
        return [r for r in rows if "threat" in r]
    if table == "headline":
        return [r for r in rows if "checks" in r]
    return rows


def section_of(text: str, heading: str = "fashion-mnist / resnet") -> str:
    """The text of one section (from its heading to the next section's)."""
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def row_for(text: str, defense: str, threat: str = "oblivious") -> dict[str, str]:
    """The fashion-mnist / resnet row of ``defense`` under ``threat``."""
    found = [r for r in table_rows(section_of(text)) if r["defense"].split(" ")[0] == defense and r.get("threat") == threat
             and "clean" in r]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def grid() -> list[dict[str, Any]]:
    n = 10
    return [
        make_record("fgsm", [fooled(n, [0, 1]), fooled(n, [0, 1, 2])]),
        make_record("bim", [fooled(n, [3]), fooled(n, [3, 4, 5])]),
        make_record("fgsm", [fooled(n, []), fooled(n, [9])], defense="adv-fgsm"),
        make_record("fgsm", [fooled(n, [0]), fooled(n, [1])], defense="adv-fgsm", threat="adaptive"),
        make_record("fgsm", [fooled(n, [5])], dataset="cifar10", eps=(8 / 255,)),
    ]


# -- determinism --------------------------------------------------------------------------------------------------
def test_render_is_deterministic_and_independent_of_order(tmp_path: Path, grid: list[dict[str, Any]]) -> None:
    save_all(tmp_path / "a", grid)
    save_all(tmp_path / "b", list(reversed(grid)))
    loaded = records.load_all(tmp_path / "a")
    text = leaderboard.render_full(loaded)
    assert text == leaderboard.render_full(loaded)
    assert text == leaderboard.render_full(list(reversed(loaded)))
    assert text == render_dir(tmp_path / "b")
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert not re.search(r"\d{4}-\d{2}-\d{2}", text)  # no dates


def test_sections_sorted_and_header_explains(tmp_path: Path, grid: list[dict[str, Any]]) -> None:
    save_all(tmp_path, grid)
    text = render_dir(tmp_path)
    assert "`bench leaderboard`" in text and "by hand" in text and "per-example worst case" in text
    assert text.index("## cifar10 / resnet") < text.index("## fashion-mnist / resnet")
    assert "Budgets ε: 8/255, 25/255." in text


def test_empty_results(tmp_path: Path) -> None:
    text = render_dir(tmp_path)
    assert "No records yet" in text and text == render_dir(tmp_path)


# -- the numbers --------------------------------------------------------------------------------------------------
def test_worst_case_is_per_example_not_min_of_columns(tmp_path: Path, grid: list[dict[str, Any]]) -> None:
    save_all(tmp_path, grid)
    row = row_for(render_dir(tmp_path), "none")
    assert row["fgsm"] == "80/70" and row["bim"] == "90/70"
    assert row["worst case"] == "70/40"  # disjoint examples fooled: lower than either column
    assert row["clean"] == "100" and row["n"] == "10" and row["seed"] == "0"


def test_clean_misclassification_is_not_robust(tmp_path: Path) -> None:
    n = 4
    rec = make_record("fgsm", [[1] * n, [1] * n], clean_correct=[0, 1, 1, 1])
    save_all(tmp_path, [rec])
    row = row_for(render_dir(tmp_path), "none")
    assert row["clean"] == "75" and row["fgsm"] == "100/100"
    assert row["worst case"] == "75/75"


def test_ci_contains_point_estimate(tmp_path: Path, grid: list[dict[str, Any]]) -> None:
    save_all(tmp_path, grid)
    for row in table_rows(render_dir(tmp_path)):
        if row.get("95% CI", "–") == "–":
            continue
        points = [int(v) for v in row["worst case"].rstrip(" ‡").split("/")]
        bounds = re.findall(r"\[(\d+)–(\d+)\]", row["95% CI"])
        assert len(bounds) == len(points)
        for p, (lo, hi) in zip(points, bounds):
            assert int(lo) <= p <= int(hi)


@pytest.mark.parametrize("n", [1, 2, 7, 10, 50, 333])
def test_wilson_interval_contains_estimate(n: int) -> None:
    for k in range(n + 1):
        lo, hi = wilson_interval(k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0
    lo, hi = wilson_interval(80, 100)
    assert lo == pytest.approx(0.7112, abs=1e-4) and hi == pytest.approx(0.8666, abs=1e-4)


def test_mean_defense_time(tmp_path: Path) -> None:
    save_all(tmp_path, [make_record("fgsm", [[1, 1], [1, 1]], defense_ms=0.1),
                        make_record("bim", [[1, 1], [1, 1]], defense_ms=0.2)])
    assert row_for(render_dir(tmp_path), "none")["ms/img"] == "0.15"


def test_rows_sorted_by_worst_case(tmp_path: Path, grid: list[dict[str, Any]]) -> None:
    save_all(tmp_path, grid)
    text = render_dir(tmp_path)
    defenses = [r["defense"] for r in table_rows(section_of(text)) if not r["defense"].startswith("↳")]
    assert defenses[0].startswith("adv-fgsm") and defenses[-1].startswith("none")


# -- rows never merged across n or seed ------------------------------------------------------------------------
def test_different_n_or_seed_are_separate_rows(tmp_path: Path) -> None:
    save_all(tmp_path, [
        make_record("fgsm", [fooled(10, [0]), fooled(10, [0])]),
        make_record("bim", [fooled(10, [1]), fooled(10, [1])], seed=1),
        make_record("cw-linf", [fooled(20, [2]), fooled(20, [2])]),
    ])
    rows = [r for r in table_rows(render_dir(tmp_path)) if r["defense"].split(" ")[0] == "none"]
    assert len(rows) == 3
    by_attack = {(r["n"], r["seed"]): r for r in rows}
    assert by_attack[("10", "0")]["fgsm"] == "90/90" and by_attack[("10", "0")]["bim"] == "–"
    assert by_attack[("10", "1")]["bim"] == "90/90" and by_attack[("10", "1")]["fgsm"] == "–"
    assert by_attack[("20", "0")]["cw-linf"] == "95/95"


def test_different_budgets_are_shown_per_row(tmp_path: Path) -> None:
    save_all(tmp_path, [make_record("fgsm", [fooled(4, [0]), fooled(4, [0])]),
                        make_record("fgsm", [fooled(4, [1])], eps=(8 / 255,), defense="adv-fgsm")])
    rows = [r for r in table_rows(render_dir(tmp_path)) if not r["defense"].startswith("↳")]
    assert {r["budgets"] for r in rows} == {"8/255", "8/255, 25/255"}


# -- threat models and the paper --------------------------------------------------------------------------------
def test_oblivious_only_marker(tmp_path: Path, grid: list[dict[str, Any]]) -> None:
    save_all(tmp_path, grid)
    text = render_dir(tmp_path)
    assert row_for(text, "none")["defense"] == "none †"
    assert row_for(text, "adv-fgsm")["defense"] == "adv-fgsm"  # an adaptive record exists
    assert "† no adaptive evaluation" in text


def test_transfer_attacks_do_not_lift_the_marker(tmp_path: Path) -> None:
    """A transfer attacker does not know the defense either: only an adaptive record removes the mark."""
    records = [make_record("fgsm", [fooled(10, [0]), fooled(10, [0, 1])], defense="jpeg"),
               make_record("fgsm", [fooled(10, [2]), fooled(10, [2, 3])], defense="jpeg", threat="transfer",
                           threat_options={"substitute": "vgg", "substitute_seed": 1})]
    save_all(tmp_path, records)
    text = render_dir(tmp_path)
    assert headline_row(text, "jpeg")["defense"] == "jpeg †"
    assert [r["defense"] for r in table_rows(section_of(text), "details")] == ["jpeg †", "jpeg †"]
    save_all(tmp_path, [make_record("pgd", [fooled(10, [4]), fooled(10, [4])], defense="jpeg", threat="adaptive",
                                    threat_options={"eot_samples": 10, "eval_draws": 5})])
    assert headline_row(render_dir(tmp_path), "jpeg")["defense"] == "jpeg"


def test_a_defense_without_an_inference_part_is_attacked_white_box_under_every_threat(tmp_path: Path) -> None:
    save_all(tmp_path, [
        make_record("fgsm", [fooled(10, [0]), fooled(10, [0, 1])], defense="adv-fgsm", traits="trains-classifier"),
        make_record("fgsm", [fooled(10, [2]), fooled(10, [2, 3])], defense="jpeg", traits="purifies"),
    ])
    text = render_dir(tmp_path)
    trained, purifier = headline_row(text, "adv-fgsm"), headline_row(text, "jpeg")
    assert trained["defense"] == "adv-fgsm" and trained["adaptive"] == "90/80"  # its oblivious attacks were white-box
    assert purifier["defense"] == "jpeg †" and purifier["adaptive"] == "not run"
    assert row_for(text, "adv-fgsm")["defense"] == "adv-fgsm" and row_for(text, "jpeg")["defense"] == "jpeg †"


def test_paper_row_beside_matching_oblivious_row(tmp_path: Path, grid: list[dict[str, Any]]) -> None:
    save_all(tmp_path, grid)
    rows = table_rows(section_of(render_dir(tmp_path)))
    i = next(i for i, r in enumerate(rows) if r["defense"] == "none †")
    published = rows[i + 1]
    assert published["defense"] == "↳ Song et al. 2018 (Table 1)" and published["threat"] == "oblivious"
    assert published["clean"] == "93" and published["fgsm"] == "38/24" and published["bim"] == "0/0"
    assert published["worst case"] == "0/0" and published["95% CI"] == "–" and published["n"] == "–"
    # beside the oblivious adv-fgsm row, not the adaptive one
    above = {(rows[j - 1]["defense"], rows[j - 1]["threat"]) for j, r in enumerate(rows) if r["defense"][0] == "↳"}
    assert above == {("none †", "oblivious"), ("adv-fgsm", "oblivious")}


def test_slides_row_has_no_worst_case_to_claim(tmp_path: Path) -> None:
    save_all(tmp_path, [make_record("fgsm", [fooled(10, [0])] * 3, dataset="mnist", defense="invert-and-classify",
                                    eps=(0.05, 0.1, 0.2))])
    text = render_dir(tmp_path)
    rows = table_rows(section_of(text, "mnist / resnet"))
    published = rows[[r["defense"].split(" ")[0] for r in rows].index("invert-and-classify") + 1]
    assert published["defense"] == "↳ Ilyas et al. 2017 (slides)" and published["fgsm"] == "82/80/73"
    assert published["clean"] == "84" and published["worst case"] == "–"
    headline = table_rows(section_of(text, "mnist / resnet"), "headline")[0]
    assert headline["paper"] == "–"


def test_unbounded_slides_row_sits_beside_records_run_at_budget_1(tmp_path: Path) -> None:
    save_all(tmp_path, [make_record("cw-l0", [fooled(10, [0, 1])], dataset="mnist", defense="invert-and-classify",
                                    eps=(1.0,))])
    rows = table_rows(section_of(render_dir(tmp_path), "mnist / resnet"))
    published = rows[[r["defense"].split(" ")[0] for r in rows].index("invert-and-classify") + 1]
    assert published["defense"] == "↳ Ilyas et al. 2017 (slides)"
    assert published["cw-l0"] == "65" and published["clean"] == "84"


def test_no_paper_row_when_budgets_differ(tmp_path: Path) -> None:
    save_all(tmp_path, [make_record("fgsm", [fooled(4, [0])], eps=(8 / 255,))])
    assert "↳" not in section_of(render_dir(tmp_path))


def test_paper_tables_map_to_our_names() -> None:
    rows = paper.paper_rows()
    # Tables 1 and 2 (22 rows), the robust manifold slides (2 defenses x 2 budget sets), the reproduction poster (1)
    assert len(rows) == 27
    row = paper.find("cifar10", "vgg", "pixeldefend", (2 / 255, 8 / 255, 16 / 255))
    assert row is not None and row.source.endswith("(Table 2)") and len(row.eps) == 3
    assert row.cells["cw-linf"] == (81, 79, 79) and row.cells[paper.WORST_CASE] == (80, 61, 48)
    table1 = (8 / 255, 25 / 255)
    blank_network = paper.find("fashion-mnist", "resnet", "adv-fgsm+adaptive-pixeldefend", table1)
    assert blank_network is not None and blank_network.cells["uniform-noise"] == (91, 91)
    assert paper.find("fashion-mnist", "vgg", "adv-bim", table1) is None
    assert paper.find("fashion-mnist", "resnet", "pixeldefend", (8 / 255,)) is None  # other budgets: no match
    slides = paper.find("mnist", "resnet", "invert-and-classify", (0.05, 0.1, 0.2))
    assert slides is not None and slides.source.endswith("(slides)")
    assert slides.cells == {paper.CLEAN: (84, 84, 84), "fgsm": (82, 80, 73)}
    assert paper.find("mnist", "resnet", "none", (0.05, 0.1, 0.2)).cells["fgsm"] == (1, 0, 0)
    # the unbounded minimal CW attacks: one number each, at budget 1 (clipping to it changes nothing)
    unbounded = paper.find("mnist", "resnet", "invert-and-classify", paper.UNBOUNDED)
    assert unbounded is not None and unbounded.cells == {paper.CLEAN: (84,), "cw": (77,), "cw-l0": (65,)}
    assert paper.find("mnist", "resnet", "none", (1.0,)).cells["cw-l0"] == (0,)
    # the reproduction poster: attacks run to success on the undefended ResNet, then PixelDefend; its bim is unknown
    poster = paper.find("cifar10", "resnet", "pixeldefend", paper.UNBOUNDED)
    assert poster is not None and poster.source.startswith("reproduction poster")
    assert poster.cells[paper.CLEAN] == (82,) and poster.cells["fgsm-sweep"] == (64,)
    assert poster.cells["contrast-reduction"] == (87,) and "bim" not in poster.cells and poster.worst_case is None


# -- detection and figures ----------------------------------------------------------------------------------------
def test_detection_table(tmp_path: Path) -> None:
    rec = make_record("fgsm", [fooled(4, []), fooled(4, [])], defense="pixeldefend",
                      detected=[[1, 0, 0, 0], [1, 1, 1, 0]], clean_detected=[0, 0, 0, 1])
    save_all(tmp_path, [rec])
    text = render_dir(tmp_path)
    assert "### Detection (fashion-mnist / resnet)" in text
    row = [r for r in table_rows(text) if "detected (%)" in r][0]
    assert row["detected (%)"] == "25/75" and row["false positives on clean (%)"] == "25"


def test_figures_linked_relative_to_output(tmp_path: Path) -> None:
    results = tmp_path / "results"
    save_all(results, [make_record("fgsm", [fooled(4, []), fooled(4, [])])])
    figures = results / "figures"
    figures.mkdir()
    for name in ("fashion-mnist_roc.png", "fashion-mnist_bpd.png", "mnist_roc.png"):
        (figures / name).write_bytes(b"png")
    output = tmp_path / "leaderboard.md"
    text = leaderboard.render_full(records.load_all(results), leaderboard.figure_links(results, output))
    assert "- [fashion-mnist_bpd.png](results/figures/fashion-mnist_bpd.png)" in text
    assert text.index("fashion-mnist_bpd.png") < text.index("fashion-mnist_roc.png")
    assert "mnist_roc.png" not in text.replace("fashion-mnist_roc.png", "")


def test_a_figure_named_after_a_classifier_is_linked_from_its_section_only(tmp_path: Path) -> None:
    results = tmp_path / "results"
    save_all(results, [make_record("fgsm", [fooled(4, []), fooled(4, [])], model=m) for m in ("resnet", "vgg")])
    (results / "figures").mkdir()
    for name in ("fashion-mnist_resnet_curve.png", "fashion-mnist_samples.png"):
        (results / "figures" / name).write_bytes(b"png")
    text = leaderboard.render_full(records.load_all(results), leaderboard.figure_links(results, tmp_path / "x.md"))
    resnet, vgg = section_of(text, "fashion-mnist / resnet"), section_of(text, "fashion-mnist / vgg")
    assert "fashion-mnist_resnet_curve.png" in resnet and "fashion-mnist_resnet_curve.png" not in vgg
    assert "fashion-mnist_samples.png" in resnet and "fashion-mnist_samples.png" in vgg


# -- write and check ----------------------------------------------------------------------------------------------
def test_check_after_write_edit_and_new_record(tmp_path: Path, grid: list[dict[str, Any]]) -> None:
    results, output = tmp_path / "results", tmp_path / "leaderboard.md"
    save_all(results, grid[:3])
    assert leaderboard.check(results, output) == [f"{output.name} is missing: run `bench leaderboard`"]
    assert leaderboard.write(results, output) is True
    assert leaderboard.check(results, output) == []
    assert leaderboard.write(results, output) is False

    output.write_text(output.read_text(encoding="utf-8") + "hand edit\n", encoding="utf-8")
    problems = leaderboard.check(results, output)
    assert len(problems) == 1 and "stale" in problems[0]
    leaderboard.write(results, output)
    assert leaderboard.check(results, output) == []

    records.save(results, grid[3])
    assert "stale" in leaderboard.check(results, output)[0]
    assert leaderboard.write(results, output) is True
    assert leaderboard.check(results, output) == []


def test_invalid_record_raises_naming_file(tmp_path: Path, grid: list[dict[str, Any]]) -> None:
    path = records.save(tmp_path, grid[0])
    data = json.loads(path.read_text())
    data["outcomes"]["clean_correct"] = data["outcomes"]["clean_correct"][:-1]
    path.write_text(json.dumps(data))
    with pytest.raises(BenchError, match=re.escape(path.name)):
        records.load_all(tmp_path)
    problems = leaderboard.check(tmp_path, tmp_path / "leaderboard.md")
    assert len(problems) == 1 and path.name in problems[0]



def test_row_missing_attacks_is_marked_as_an_upper_bound(tmp_path: Path) -> None:
    # "none" faced two attacks, "other" only one: its worst case is flagged as an upper bound, the complete row is not
    n = 10
    save_all(tmp_path, [make_record("fgsm", [fooled(n, [0]), fooled(n, [0, 1])]),
                        make_record("bim", [fooled(n, [2]), fooled(n, [2, 3])]),
                        make_record("fgsm", [fooled(n, [0]), fooled(n, [0, 1])], defense="other")])
    text = render_dir(tmp_path)
    worst = {row["defense"]: row["worst case"] for row in table_rows(text) if row.get("threat") == "oblivious"}
    assert leaderboard.INCOMPLETE_MARK in worst["other †"]
    assert leaderboard.INCOMPLETE_MARK not in worst["none †"]
    assert "upper bound" in text


def test_threat_models_and_l2_budgets_get_rows_of_their_own(tmp_path: Path) -> None:
    n = 10
    save_all(tmp_path, [
        make_record("fgsm", [fooled(n, []), fooled(n, [0])]),
        make_record("pgd", [fooled(n, []), fooled(n, [0, 1])]),
        make_record("fgsm", [fooled(n, [0]), fooled(n, [0, 1, 2])], threat="adaptive"),
        make_record("pgd", [fooled(n, [0]), fooled(n, [0, 1, 2, 3])], threat="adaptive"),
        make_record("fgsm", [fooled(n, []), fooled(n, [])], threat="transfer"),
        make_record("pgd", [fooled(n, []), fooled(n, [5])], threat="transfer"),
        make_record("pgd-l2", [fooled(n, [0]), fooled(n, [0, 1, 2, 3, 4])], eps=(1.5, 3.0), norm="l2"),
        # the same budget values as the L-infinity rows but in L2: still a row of its own
        make_record("pgd-l2", [fooled(n, [7]), fooled(n, [7, 8])], eps=FASHION_EPS, norm="l2", threat="adaptive"),
    ])
    rows = [r for r in table_rows(section_of(render_dir(tmp_path))) if not r["defense"].startswith("↳")]
    by_key = {(r["defense"].split(" ")[0], r["threat"], r["budgets"]): r for r in rows}
    assert set(by_key) == {("none", "oblivious", "8/255, 25/255"), ("none", "adaptive", "8/255, 25/255"),
                           ("none", "transfer", "8/255, 25/255"), ("none", "oblivious", "L2 1.5, 3"),
                           ("none", "adaptive", "L2 0.03137, 0.09804")}
    assert by_key[("none", "adaptive", "8/255, 25/255")]["worst case"] == "90/60"
    assert by_key[("none", "transfer", "8/255, 25/255")]["worst case"] == "100/90"
    assert by_key[("none", "oblivious", "L2 1.5, 3")]["worst case"].startswith("90/50")
    # the oblivious row is not marked: the defense has an adaptive evaluation
    assert not by_key[("none", "oblivious", "8/255, 25/255")]["defense"].endswith(leaderboard.OBLIVIOUS_MARK)
    # L-infinity rows are complete over the L-infinity attacks; the L2 rows lack no L2 attack
    for row in rows:
        assert leaderboard.INCOMPLETE_MARK not in row["worst case"], row


# -- the headline: per defense, every attack under every threat model ------------------------------------------------
def headline_row(text: str, defense: str) -> dict[str, str]:
    found = [r for r in table_rows(section_of(text), "headline") if r["defense"].split(" ")[0] == defense]
    assert len(found) == 1, found
    return found[0]


def test_a_record_run_at_one_headline_budget_counts_there(tmp_path: Path) -> None:
    save_all(tmp_path, [
        make_record("pgd", [fooled(10, [0]), fooled(10, [0, 1])], defense="projection", threat="adaptive"),
        # a costly attack run at 25/255 only: it breaks 3 and 4 there, and says nothing about 8/255
        make_record("pgd-unrolled", [fooled(10, [3, 4])], eps=(25 / 255,), defense="projection", threat="adaptive"),
        # a defense with a one-budget record only has no headline row: its 8/255 was never measured
        make_record("pgd", [fooled(10, [0])], eps=(25 / 255,), defense="half-measured", threat="adaptive"),
        # the section's headline budgets are the set most records share: 8/255 and 25/255
        make_record("fgsm", [fooled(10, []), fooled(10, [])], defense="projection"),
        make_record("fgsm", [fooled(10, []), fooled(10, [])], defense="none"),
        # an adaptive attack run at 25/255 only: the adaptive column shows that budget alone
        make_record("pgd", [fooled(10, [5])], eps=(25 / 255,), defense="none", threat="adaptive"),
    ])
    text = render_dir(tmp_path)
    row = headline_row(text, "projection")
    assert (row["adaptive"], row["worst case"]) == ("90/60", "**90/60**")
    assert (headline_row(text, "none")["adaptive"], headline_row(text, "none")["worst case"]) == ("–/90", "**100/90**")
    assert not [r for r in table_rows(section_of(text), "headline") if r["defense"].startswith("half-measured")]


def test_headline_is_per_example_across_threat_models_and_sorted(tmp_path: Path, grid: list[dict[str, Any]]) -> None:
    save_all(tmp_path, grid)
    text = render_dir(tmp_path)
    assert text.index("Headline:") < text.index("### Details (fashion-mnist / resnet)")
    # adv-fgsm: oblivious fools example 9 at 25/255, adaptive fools 0 at 8/255 and 1 at 25/255
    row = headline_row(text, "adv-fgsm")
    assert (row["oblivious"], row["adaptive"], row["worst case"]) == ("100/90", "90/90", "**90/80**")
    assert row["defense"] == "adv-fgsm" and row["n"] == "10" and row["paper"] == "51/0"
    none = headline_row(text, "none")
    assert none["defense"] == "none †" and none["adaptive"] == "not run" and none["worst case"] == "**70/40**"
    order = [r["defense"] for r in table_rows(section_of(text), "headline")]
    assert order == ["adv-fgsm", "none †"]


def test_headline_combines_different_n_on_their_common_points(tmp_path: Path) -> None:
    save_all(tmp_path, [
        make_record("fgsm", [fooled(10, [6]), fooled(10, [6, 7])]),  # fools only points beyond the first 4
        make_record("pgd", [fooled(4, [0]), fooled(4, [0, 1])], threat="adaptive"),
    ])
    row = headline_row(render_dir(tmp_path), "none")
    assert row["n"] == "4" and row["worst case"] == "**75/50**"
    assert row["oblivious"] == "90/80 (n=10)" and row["adaptive"] == "75/50"


def test_headline_refuses_records_whose_points_differ(tmp_path: Path) -> None:
    a = make_record("fgsm", [fooled(4, []), fooled(4, [])])
    b = make_record("pgd", [fooled(4, []), fooled(4, [])], threat="adaptive")
    b["outcomes"]["label"] = [9, 9, 9, 9]
    save_all(tmp_path, [a, b])
    with pytest.raises(BenchError, match="different test points"):
        render_dir(tmp_path)


def test_adaptive_records_differing_in_eot_get_rows_of_their_own(tmp_path: Path) -> None:
    save_all(tmp_path, [
        make_record("pgd", [fooled(4, [0]), fooled(4, [0])], threat="adaptive", traits="purifies, randomised",
                    threat_options={"eot_samples": k, "eval_draws": 5}, defense="randomization")
        for k in (1, 10)
    ])
    text = render_dir(tmp_path)
    threats = sorted(r["threat"] for r in table_rows(section_of(text)))
    assert threats == ["adaptive (EOT 1, 5 draws)", "adaptive (EOT 10, 5 draws)"]
    assert headline_row(text, "randomization")["worst case"] == "**75/75**"


def test_a_real_forward_record_gets_a_row_of_its_own_and_counts_in_the_headline(tmp_path: Path) -> None:
    options = {"eot_samples": 10, "eval_draws": 5}
    save_all(tmp_path, [
        make_record("pgd", [fooled(4, [0]), fooled(4, [0])], threat="adaptive", traits="purifies",
                    threat_options=options, defense="deep-image-prior"),
        make_record("pgd", [fooled(4, [1]), fooled(4, [1, 2])], threat="adaptive", traits="purifies",
                    threat_options={**options, "bpda_forward": "real"}, defense="deep-image-prior"),
    ])
    text = render_dir(tmp_path)
    assert sorted(r["threat"] for r in table_rows(section_of(text))) == ["adaptive", "adaptive, real forward"]
    assert headline_row(text, "deep-image-prior")["worst case"] == "**50/25**"


CLEAN_PROBE = {"randomness": {"declared": False, "observed": False, "repeatable": True},
               "optimises_in_forward": False, "gradients": {"zero": 0.0, "nonfinite": 0.0}}


def test_a_black_box_lead_within_noise_is_not_flagged(tmp_path: Path) -> None:
    """Square one example ahead of PGD (p = 1/2), or breaking as many more as PGD breaks examples it misses, says
    nothing about masked gradients; the same lead on records of different n is judged on their common points."""
    save_all(tmp_path, [
        make_record("pgd", [fooled(100, []), fooled(100, [0])], defense="near", needs_gradients=True,
                    threat="adaptive", checks=CLEAN_PROBE),
        make_record("square", [fooled(100, [5]), fooled(100, [0, 5])], defense="near", needs_gradients=False,
                    threat="adaptive", checks=CLEAN_PROBE),
        make_record("pgd", [fooled(40, range(0, 6)), fooled(40, range(40))], defense="swapped", needs_gradients=True,
                    threat="adaptive", checks=CLEAN_PROBE),
        make_record("square", [fooled(40, range(6, 13)), fooled(40, range(40))], defense="swapped",
                    needs_gradients=False, threat="adaptive", checks=CLEAN_PROBE),
        # compared on the 20 points both records have: 6 only square breaks
        make_record("pgd", [fooled(100, []), fooled(100, [])], defense="prefix", needs_gradients=True,
                    threat="adaptive", checks=CLEAN_PROBE),
        make_record("square", [fooled(20, range(6)), fooled(20, range(6))], defense="prefix",
                    needs_gradients=False, threat="adaptive", checks=CLEAN_PROBE),
        # 5 only square breaks at one budget (p = 1/32) and none at the other: two budgets, two chances (p = 1/16)
        make_record("pgd", [fooled(100, []), fooled(100, [])], defense="one-budget", needs_gradients=True,
                    threat="adaptive", checks=CLEAN_PROBE),
        make_record("square", [fooled(100, []), fooled(100, range(5))], defense="one-budget",
                    needs_gradients=False, threat="adaptive", checks=CLEAN_PROBE),
    ])
    text = render_dir(tmp_path)
    assert headline_row(text, "near")["checks"] == "ok"
    assert headline_row(text, "swapped")["checks"] == "ok"
    # 6 of 6 at both budgets: (1/2)**6, times two budgets
    assert headline_row(text, "prefix")["checks"] == "square (adaptive) beats every gradient attack (p=0.031)"
    assert headline_row(text, "one-budget")["checks"] == "ok"


def test_an_ensemble_running_the_black_box_does_not_hide_its_lead(tmp_path: Path) -> None:
    """AutoAttack runs Square as its last member, so it breaks whatever Square breaks: were it a white-box attack of
    the check, no black-box lead could ever be flagged in a row that has it. It sits out; PGD is the white box."""
    rows = {"masked": True, "older": None}  # "older": a record from before runs_black_box was stored
    records = []
    for defense, runs_black_box in rows.items():
        records += [
            make_record("pgd", [fooled(100, []), fooled(100, [])], defense=defense, needs_gradients=True,
                        threat="adaptive", checks=CLEAN_PROBE),
            make_record("square", [fooled(100, []), fooled(100, range(10))], defense=defense,
                        needs_gradients=False, threat="adaptive", checks=CLEAN_PROBE),
            make_record("autoattack", [fooled(100, []), fooled(100, range(10))], defense=defense,
                        needs_gradients=True, runs_black_box=runs_black_box, threat="adaptive", checks=CLEAN_PROBE),
        ]
    save_all(tmp_path, records)
    text = render_dir(tmp_path)
    # 10 of 10 only square breaks at 25/255: (1/2)**10, times two budgets
    assert headline_row(text, "masked")["checks"] == "square (adaptive) beats every gradient attack (p=0.002)"
    assert headline_row(text, "older")["checks"] == "ok"  # counted as a gradient attack, autoattack hides the lead


def test_autoattack_declares_its_black_box_member() -> None:
    from attacks.autoattack import AutoAttack, Square
    from attacks.gradient import PGD

    assert AutoAttack.needs_gradients and AutoAttack.runs_black_box
    assert "runs a black box too" in AutoAttack.describe()["traits"]
    assert not Square.runs_black_box and not PGD.runs_black_box


def test_paired_lead_p_is_mcnemars_exact_test() -> None:
    from benchmark.engine.sanity import paired_lead_p

    robust = [True] * 10
    assert paired_lead_p(robust, robust) == 1.0
    # 5 examples only the black box breaks, 0 the other way: (1/2)**5
    assert paired_lead_p([False] * 5 + [True] * 5, robust) == pytest.approx(1 / 32)
    # 5 against 1: P(X >= 5) for X ~ Binomial(6, 1/2) = 7/64
    assert paired_lead_p([False] * 5 + [True] * 5, [True] * 9 + [False]) == pytest.approx(7 / 64)
    assert paired_lead_p(robust, [False] * 10) == 1.0


def test_checks_column(tmp_path: Path) -> None:
    masked = {**CLEAN_PROBE, "gradients": {"zero": 0.75, "nonfinite": 0.0},
              "randomness": {"declared": False, "observed": True, "repeatable": True}}
    save_all(tmp_path, [
        make_record("pgd", [fooled(4, []), fooled(4, [0])], checks=CLEAN_PROBE, needs_gradients=True),
        make_record("pgd", [fooled(12, []), fooled(12, [])], defense="squeeze", checks=masked,
                    needs_gradients=True, threat="adaptive"),
        # 8 examples only the black box breaks, none the other way: p = 2**-8, times two budgets
        make_record("square", [fooled(12, [1]), fooled(12, range(1, 9))], defense="squeeze", checks=masked,
                    needs_gradients=False, threat="adaptive"),
        make_record("fgsm", [fooled(4, []), fooled(4, [])], defense="old"),
        # oblivious attacks never saw the defense: a noise attack beating them says nothing about its gradients
        make_record("fgsm", [fooled(4, []), fooled(4, [])], defense="noisy", checks=CLEAN_PROBE, needs_gradients=True),
        make_record("uniform-noise", [fooled(4, [0]), fooled(4, [0])], defense="noisy", checks=CLEAN_PROBE,
                    needs_gradients=False),
    ])
    text = render_dir(tmp_path)
    assert headline_row(text, "none")["checks"] == "ok"
    assert headline_row(text, "old")["checks"] == "unchecked (1 record)"
    assert headline_row(text, "noisy")["checks"] == "ok"
    flags = headline_row(text, "squeeze")["checks"]
    assert flags == ("random but declared deterministic; zero gradients (75%); "
                     "square (adaptive) beats every gradient attack (p=0.0078)")


# -- model weights ------------------------------------------------------------------------------------------------
def weighed(rec: dict[str, Any], sha: str | None, started: str = "") -> dict[str, Any]:
    """``rec`` as measured on the classifier weights ``sha`` (None: a record from before records named weights)."""
    out = {**rec, "provenance": {"started": started}}
    if sha is not None:
        out["models"] = {"classifier/k": sha}
    return out


def test_records_of_other_weights_are_never_combined(tmp_path: Path) -> None:
    n = 10
    save_all(tmp_path, [
        weighed(make_record("fgsm", [fooled(n, [0]), fooled(n, [0, 1])]), None),
        weighed(make_record("bim", [fooled(n, [2]), fooled(n, [2, 3])]), None),
        # retrained elsewhere: these weights fall to pgd on other points, which must not lower the rows above
        weighed(make_record("pgd", [fooled(n, [5]), fooled(n, [5, 6, 7])], threat="adaptive"), "b" * 64),
    ])
    text = render_dir(tmp_path)
    main = section_of(text)
    assert headline_row(text, "none")["worst case"] == "**80/60**"  # fgsm and bim only
    assert "pgd" not in main and headline_row(text, "none")["defense"] == "none †"
    assert headline_row(text, "none")["weights"] == "unrecorded"
    aside = text.split("## Other model weights (not combined with the rows above)\n", 1)[1]
    (row,) = table_rows(aside)
    assert row["threat"] == f"adaptive, weights {weights_id({'models': {'classifier/k': 'b' * 64}})}"
    assert row["pgd"] == "90/70" and row["worst case"] == "90/70"


def test_the_weights_with_most_records_win_then_the_latest(tmp_path: Path) -> None:
    n = 4
    old, new = "a" * 64, "b" * 64
    fgsm = make_record("fgsm", [fooled(n, [0]), fooled(n, [0])])
    bim = make_record("bim", [fooled(n, [1]), fooled(n, [1])])
    combined, aside = split_by_weights(records.LoadedRecord(Path(f"{i}.json"), r) for i, r in enumerate([
        weighed(fgsm, old, "2026-01-01T00:00:00Z"), weighed(bim, new, "2026-02-01T00:00:00Z")]))
    assert [r.data["models"]["classifier/k"] for r in combined] == [new] and len(aside) == 1  # a tie: the latest
    combined, aside = split_by_weights(records.LoadedRecord(Path(f"{i}.json"), r) for i, r in enumerate([
        weighed(fgsm, old, "2026-01-01T00:00:00Z"), weighed(bim, old, "2026-01-01T00:00:00Z"),
        weighed(make_record("pgd", [fooled(n, [2]), fooled(n, [2])]), new, "2026-02-01T00:00:00Z")]))
    assert {r.data["models"]["classifier/k"] for r in combined} == {old} and len(aside) == 1  # more records
    # the headline names the weights its row combines
    save_all(tmp_path, [weighed(fgsm, new)])
    shown = weights_id({"models": {"classifier/k": new}})[:leaderboard.WEIGHTS_SHOWN]
    assert headline_row(render_dir(tmp_path), "none")["weights"] == shown
    # another defense's records are chosen on their own
    combined, _ = split_by_weights([records.LoadedRecord(Path("x.json"), weighed(make_record(
        "fgsm", [fooled(n, []), fooled(n, [])], defense="adv-fgsm"), new))])
    assert len(combined) == 1


def test_models_table_lists_shipped_and_unfinished_trainings(tmp_path: Path) -> None:
    from benchmark.report.models import model_rows

    def ship(kind: str, key: str, files: dict) -> None:
        folder = tmp_path / "models" / kind / key
        folder.mkdir(parents=True)
        for name, content in files.items():
            (folder / name).write_text(json.dumps(content))

    spec = {"dataset": "cifar10", "arch": "vgg", "training_defense": None, "train": {"epochs": 30}}
    ship("classifier", "aaaa1111bbbb2222", {"meta.json": {"spec": spec, "metrics": {"test_accuracy": 0.8976}}})
    resnet = {**spec, "arch": "resnet"}
    ship("classifier", "cccc3333dddd4444", {"partial.json": {"epoch": 2, "seconds": 0.0},
                                            "partial-spec.json": {"kind": "classifier", "spec": resnet}})
    ship("pixelcnn", "eeee5555ffff6666", {"meta.json": {"spec": {"dataset": "cifar10", "arch": "pixelcnn",
                                                                 "train": {"epochs": 1}},
                                                        "metrics": {"test_bpd": 3.5, "train_seconds": 7200}}})
    rows = model_rows(tmp_path)
    assert rows[0] == ["classifier", "cifar10", "resnet (normal)", "cccc3333dd",
                       "unfinished: 2 of 30 epochs done (resumable)", "92%, Song et al. 2018 (Table 2)", "30 epochs"]
    assert rows[1][2:5] == ["vgg (normal)", "aaaa1111bb", "test accuracy 89.8%"]
    assert rows[1][5] == "89%, Song et al. 2018 (Table 2)"
    assert rows[2][4:] == ["test 3.500 bits/dim; trained in 2.0 h", "PixelCNN++: 2.92 bits/dim", "1 epoch"]


def test_a_record_run_again_on_more_points_no_longer_caps_the_headline(tmp_path: Path) -> None:
    save_all(tmp_path, [
        make_record("fgsm", [fooled(10, [6]), fooled(10, [6, 7])]),
        # pgd on 4 points, then on 10 at the same budgets: the 10-point record measures the first 4 again
        make_record("pgd", [fooled(4, [0]), fooled(4, [0, 1])], threat="adaptive"),
        make_record("pgd", [fooled(10, [0]), fooled(10, [0, 1, 8])], threat="adaptive"),
        # a curve on 4 points whose headline budgets the 10-point record covers
        make_record("pgd", [fooled(4, []), fooled(4, [2]), fooled(4, [3])], threat="adaptive",
                    eps=(4 / 255, 8 / 255, 25 / 255)),
        # another attack on 4 points only still caps its threat model
        make_record("square", [fooled(4, []), fooled(4, [])], threat="transfer"),
    ])
    row = headline_row(render_dir(tmp_path), "none")
    assert row["adaptive"] == "90/70 (n=10)" and row["oblivious"] == "90/80 (n=10)"
    assert row["n"] == "4" and row["worst case"] == "**75/50**"
