"""Figures are drawn from the records and linked from the leaderboard."""
from __future__ import annotations

from pathlib import Path

from test_leaderboard import fooled, make_record, save_all

from benchmark import leaderboard
from benchmark.plots import accuracy_heatmaps


def test_accuracy_heatmap_is_written_and_linked(tmp_path: Path) -> None:
    n = 10
    save_all(tmp_path, [make_record("fgsm", [fooled(n, [0]), fooled(n, [0, 1])]),
                        make_record("bim", [fooled(n, [2]), fooled(n, [2, 3])], defense="other")])
    (figure,) = accuracy_heatmaps(tmp_path)
    assert figure == tmp_path / "figures" / "fashion-mnist_resnet_accuracy.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    output = tmp_path / "leaderboard.md"
    leaderboard.write(tmp_path, output)
    assert "figures/fashion-mnist_resnet_accuracy.png" in output.read_text()
