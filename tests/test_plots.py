"""Figures are drawn from the records and linked from the leaderboard."""
from __future__ import annotations

from pathlib import Path

from test_leaderboard import fooled, make_record, save_all

from benchmark.report.plots import _curve_records, accuracy_heatmaps, robustness_curves
from benchmark.report.site import write_site
from benchmark.store.records import load_all


def test_accuracy_heatmap_is_written_and_linked(tmp_path: Path) -> None:
    n = 10
    save_all(tmp_path, [make_record("fgsm", [fooled(n, [0]), fooled(n, [0, 1])]),
                        make_record("bim", [fooled(n, [2]), fooled(n, [2, 3])], defense="other")])
    (figure,) = accuracy_heatmaps(tmp_path)
    assert figure == tmp_path / "figures" / "fashion-mnist_resnet_accuracy.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_site(tmp_path, tmp_path / "leaderboard")
    assert "figures/fashion-mnist_resnet_accuracy.png" in (tmp_path / "leaderboard" / "full.md").read_text()
    assert "figures/fashion-mnist_resnet_accuracy.png" in (tmp_path / "leaderboard" / "fashion-mnist_resnet.html"
                                                           ).read_text()


def test_robustness_curve_from_adaptive_records_with_several_budgets(tmp_path: Path) -> None:
    eps = (2 / 255, 8 / 255, 25 / 255)
    save_all(tmp_path, [
        make_record("pgd", [fooled(10, []), fooled(10, [0]), fooled(10, [0, 1, 2])], threat="adaptive", eps=eps),
        make_record("pgd", [fooled(10, [5]), fooled(10, [5, 6])], threat="adaptive", defense="other"),  # 2 budgets
        make_record("fgsm", [fooled(10, []), fooled(10, [0]), fooled(10, [1])], eps=eps),  # oblivious
    ])
    records = load_all(tmp_path)
    chosen = _curve_records(records)
    assert list(chosen) == [("fashion-mnist", "resnet")]
    assert list(chosen[("fashion-mnist", "resnet")]) == [("none", "pgd")]
    (figure,) = robustness_curves(tmp_path)
    assert figure == tmp_path / "figures" / "fashion-mnist_resnet_robustness_curve.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_site(tmp_path, tmp_path / "leaderboard")
    assert "figures/fashion-mnist_resnet_robustness_curve.png" in (tmp_path / "leaderboard" / "full.md").read_text()
    assert "figures/fashion-mnist_resnet_robustness_curve.png" in (
        tmp_path / "leaderboard" / "fashion-mnist_resnet" / "none.html").read_text()


def test_no_curve_without_enough_budgets(tmp_path: Path) -> None:
    save_all(tmp_path, [make_record("pgd", [fooled(4, []), fooled(4, [0])], threat="adaptive")])
    assert robustness_curves(tmp_path) == []


def test_defense_page_gives_each_records_seconds_and_the_cost_per_threat(tmp_path: Path) -> None:
    timed = make_record("fgsm", [fooled(10, [0]), fooled(10, [0, 1])])
    timed["provenance"] = {"attack_seconds": 30.0, "defense_seconds": 12.5, "device": "cpu", "torch_threads": 1}
    untimed = make_record("bim", [fooled(10, [2]), fooled(10, [2, 3])])
    adaptive = make_record("pgd", [fooled(10, [4]), fooled(10, [4, 5])], threat="adaptive")
    adaptive["provenance"] = {"attack_seconds": 1000.0, "defense_seconds": 0.0, "device": "cuda", "torch_threads": 2}
    save_all(tmp_path, [timed, untimed, adaptive])
    write_site(tmp_path, tmp_path / "leaderboard")
    page = (tmp_path / "leaderboard" / "fashion-mnist_resnet" / "none.html").read_text()
    # each record's row: its attack plus defense seconds, rounded, and a dash where the record has no timing
    assert f'<td>10</td><td>42</td><td><a href="../../records/fashion-mnist/{timed["id"]}.json">' in page
    assert f'<td>10</td><td>–</td><td><a href="../../records/fashion-mnist/{untimed["id"]}.json">' in page
    assert "<td>oblivious</td><td>10</td><td>1</td><td>42</td><td>4.2</td><td>cpu, 1 torch thread(s)</td>" in page
    assert "<td>adaptive</td><td>10</td><td>1</td><td>1,000</td><td>100.0</td><td>cuda, 2 torch thread(s)</td>" in page
