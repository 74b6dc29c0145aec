"""PixelCNN likelihood as a detector (``bench detect``): the AUC, the exclusion of failed attacks, the record, its
merging, the figures and the leaderboard section, on digits with the tiny PixelCNN preset."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import Result
from test_cli import bench
from test_leaderboard import make_record

from benchmark.engine.detection import (
    LoadedDetection,
    changed,
    detection_auc,
    detection_cell,
    detection_figures,
    detection_path,
    figure_name,
)
from benchmark.report import leaderboard
from benchmark.store.paths import cache_dir
from benchmark.store.records import LoadedRecord

DETECT = ["detect", "--dataset", "digits", "--model", "resnet", "--n", "40", "--pixelcnn-size", "tiny"]
FIGURES = ("bpd_violin", "pvalues", "roc")


pytestmark = pytest.mark.usefixtures("restore_cli_state")  # the fixture lives in conftest.py


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.output, result.stderr, result.exception)
    return result


def artifacts() -> set[str]:
    folder = cache_dir() / "adversarial"
    return {p.name for p in folder.glob("*.safetensors")} if folder.is_dir() else set()


# -- the numbers --------------------------------------------------------------------------------------------------
def test_auc_on_hand_made_scores() -> None:
    assert detection_auc([1.0, 2.0, 3.0], [4.0, 5.0]) == 1.0  # every adversarial input less likely: perfect
    assert detection_auc([4.0, 5.0], [1.0, 2.0, 3.0]) == 0.0  # the score points the wrong way
    assert detection_auc([2.0, 2.0, 2.0], [2.0, 2.0]) == 0.5  # indistinguishable: chance
    assert detection_auc([1.0, 3.0], [2.0, 4.0]) == 0.75  # 3 of the 4 (clean, adversarial) pairs ordered right
    assert detection_auc([1.0, 2.0], []) is None  # no adversarial input: undefined, not 0.5


def test_failed_attack_is_left_out() -> None:
    clean = torch.rand(4, 1, 8, 8)
    adv = clean.clone()
    adv[1, 0, 3, 3] += 0.01  # one pixel is enough to count as an adversarial input
    adv[3] = (adv[3] + 0.1).clamp(0, 1)
    used = changed(clean, adv)
    assert used.tolist() == [False, True, False, True]
    # the two failed inputs (the clean images) score like clean ones: counting them would drop the AUC to 11/16
    cell = detection_cell([1.0, 1.1, 1.2, 1.3], [1.0, 5.0, 1.2, 6.0], used.tolist())
    assert cell["used"] == 2
    assert cell["bpd"] == [None, 5.0, None, 6.0]
    assert cell["auc"] == 1.0
    assert cell["mean_bpd"] == 5.5
    assert detection_cell([1.0, 1.1, 1.2, 1.3], [1.0, 5.0, 1.2, 6.0], [True] * 4)["auc"] == 0.6875
    nothing = detection_cell([1.0, 2.0], [1.0, 2.0], [False, False])
    assert (nothing["auc"], nothing["used"], nothing["mean_bpd"]) == (None, 0, None)


# -- bench detect, end to end -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``bench run`` (fgsm), then ``bench detect`` with fgsm, then again with uniform-noise, into one results dir."""
    results = tmp_path_factory.mktemp("detect") / "results"
    ok(bench("run", "--dataset", "digits", "--defense", "none", "--attack", "fgsm", "--n", "40",
             "--results-dir", str(results)))
    before = artifacts()
    first = ok(bench(*DETECT, "--attack", "fgsm", "--results-dir", str(results)))
    after_first = artifacts()
    record_path = detection_path(results, "digits", "resnet")
    first_record = json.loads(record_path.read_text())
    # min-max-manifold needs a GAN defense, and detection attacks the bare classifier: left out, with a warning
    second = ok(bench(*DETECT, "--attack", "uniform-noise,min-max-manifold", "--results-dir", str(results)))
    return {"results": results, "before": before, "after_first": after_first, "after_second": artifacts(),
            "first": first, "second": second, "first_record": first_record,
            "record": json.loads(record_path.read_text())}


def test_detect_writes_record_and_figures(runs: dict[str, Any]) -> None:
    record, results = runs["record"], runs["results"]
    c = record["config"]
    assert (c["dataset"], c["model"], c["n"], c["seed"], c["pixelcnn_size"]) == ("digits", "resnet", 40, 0, "tiny")
    assert c["eps"] == [8 / 255, 25 / 255]
    assert len(record["clean"]["bpd"]) == 40 and record["pixelcnn"]["key"]
    for name in ("fgsm", "uniform-noise"):
        assert len(record["cells"][name]) == 2  # one entry per budget
        for cell in record["cells"][name]:
            assert len(cell["bpd"]) == 40
            assert cell["used"] == sum(v is not None for v in cell["bpd"]) > 0
            assert 0.0 <= cell["auc"] <= 1.0
    # FGSM moves every pixel by eps: even a tiny PixelCNN finds those inputs far less likely than clean ones
    assert all(cell["auc"] > 0.9 for cell in record["cells"]["fgsm"])
    for kind in FIGURES:
        figure = results / "figures" / figure_name("digits", "resnet", kind)
        assert figure.is_file() and figure.read_bytes().startswith(b"\x89PNG")
    out = runs["second"].stdout
    assert "uniform-noise" in out and "fgsm" in out and "AUC" in out  # the table shows the merged record
    assert "min-max-manifold attacks a GAN projection defense under --threat adaptive; left out of the detection " \
        "record" in runs["second"].stderr


def test_detect_reuses_adversarial_inputs_of_bench_run(runs: dict[str, Any]) -> None:
    assert runs["before"], "bench run cached no adversarial inputs"
    assert runs["after_first"] == runs["before"]  # fgsm: the runner's cached inputs, none generated anew
    assert len(runs["after_second"] - runs["after_first"]) == 1  # uniform-noise was never run: generated now


def test_rerun_merges_attacks(runs: dict[str, Any]) -> None:
    first, merged = runs["first_record"], runs["record"]
    assert first["config"]["attacks"] == ["fgsm"]
    assert merged["config"]["attacks"] == ["fgsm", "uniform-noise"]
    assert merged["cells"]["fgsm"] == first["cells"]["fgsm"]
    assert merged["clean"] == first["clean"]


def test_rerun_with_other_config_is_refused(runs: dict[str, Any]) -> None:
    path = detection_path(runs["results"], "digits", "resnet")
    before = path.read_bytes()
    result = bench(*[a if a != "40" else "30" for a in DETECT], "--attack", "fgsm", "--results-dir",
                   str(runs["results"]))
    assert result.exit_code == 2, result.output
    assert "n 40" in result.stderr and "delete it" in result.stderr
    assert path.read_bytes() == before


def test_figures_redraw_from_the_record_alone(runs: dict[str, Any]) -> None:
    folder = runs["results"] / "figures"
    drawn = {p.name: p.read_bytes() for p in folder.iterdir()}
    for p in folder.iterdir():
        p.unlink()
    written = detection_figures(runs["results"])
    assert sorted(p.name for p in written) == sorted(figure_name("digits", "resnet", k) for k in FIGURES)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == drawn  # deterministic bytes


def test_leaderboard_from_detect_run(runs: dict[str, Any]) -> None:
    output = runs["results"].parent / "leaderboard.md"
    ok(bench("leaderboard", "--results-dir", str(runs["results"]), "--output", str(output)))
    text = (output.parent / "leaderboard" / "full.md").read_text()
    assert "#detection" in output.read_text()
    assert "## Detection by PixelCNN likelihood: digits / resnet" in text
    fgsm = runs["record"]["cells"]["fgsm"]
    assert f"| fgsm          | {fgsm[0]['auc']:.2f}/{fgsm[1]['auc']:.2f} | 40/40" in text
    assert ok(bench("leaderboard", "--check", "--results-dir", str(runs["results"]), "--output", str(output)))


@pytest.mark.parametrize("args, words", [
    (["--attack", "fgsn"], ["unknown attack 'fgsn'", "did you mean 'fgsm'"]),
    (["--attack", "fgsm", "--dataset", "digitz"], ["unknown dataset 'digitz'"]),
])
def test_bad_names_are_one_line_errors(tmp_path: Path, args: list[str], words: list[str]) -> None:
    result = bench(*DETECT, *args, "--results-dir", str(tmp_path))
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), lines
    assert all(w in lines[0] for w in words), lines
    assert not (tmp_path / "detection").exists()


# -- the leaderboard section --------------------------------------------------------------------------------------
def detection_record(cells: dict[str, list[dict[str, Any]]]) -> LoadedDetection:
    data = {
        "schema": 1,
        "config": {"dataset": "fashion-mnist", "model": "resnet", "n": 4, "seed": 0, "eps": [8 / 255, 25 / 255],
                   "attacks": sorted(cells), "pixelcnn_size": "small"},
        "pixelcnn": {"key": "pk", "test_bpd": 2.91, "reference_bpd": [2.0, 3.0]},
        "clean": {"bpd": [2.0, 2.5, 3.0, 3.5], "mean_bpd": 2.75},
        "cells": cells,
    }
    return LoadedDetection(Path("results/detection/fashion-mnist/resnet.json"), data)


def cell(auc: float | None, used: int, mean: float | None) -> dict[str, Any]:
    return {"auc": auc, "used": used, "mean_bpd": mean, "bpd": []}


def test_leaderboard_renders_the_auc_table() -> None:
    det = detection_record({"fgsm": [cell(0.96875, 4, 4.5), cell(1.0, 4, 5.25)],
                            "deepfool": [cell(None, 0, None), cell(0.5, 3, 3.0)]})
    figures = ["results/figures/fashion-mnist_resnet_accuracy.png",
               *(f"results/figures/fashion-mnist_resnet_{k}.png" for k in FIGURES)]
    recs = [LoadedRecord(Path("r.json"), make_record("fgsm", [[1, 1, 1, 1], [1, 0, 1, 1]]))]
    text = leaderboard.render_full(recs, figures, [det])
    main_part, section = text.split("\n\n## Detection by PixelCNN likelihood: fashion-mnist / resnet\n")
    # without detection records the output is as before; with one, its figures move from the general list
    plain = leaderboard.render_full(recs, figures)
    assert main_part + "\n" == leaderboard.render_full(recs, figures[:1])
    assert all(f"fashion-mnist_resnet_{k}.png](" in plain for k in FIGURES)
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert [c.strip() for c in rows[0].split("|")[1:-1]] == ["attack", "AUC", "adversarial used", "mean bits/dim",
                                                            "n", "seed"]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["deepfool", "fgsm"]  # natural order
    assert [c.strip() for c in rows[2].split("|")[1:-1]] == ["fgsm", "0.97/1.00", "4/4", "4.500/5.250", "4", "0"]
    assert [c.strip() for c in rows[1].split("|")[1:-1]] == ["deepfool", "–/0.50", "0/3", "–/3.000", "4", "0"]
    assert "8/255, 25/255" in section and "test bits/dim 2.910" in section
    for k in FIGURES:  # its figures are linked once, in the detection section
        assert text.count(f"fashion-mnist_resnet_{k}.png](") == 1
        assert f"fashion-mnist_resnet_{k}.png](" in section
    assert leaderboard.render_full(list(reversed(recs)), figures, [det]) == text  # deterministic


def test_leaderboard_without_records_still_shows_detection() -> None:
    det = detection_record({"fgsm": [cell(0.5, 4, 4.5), cell(0.75, 4, 5.0)]})
    text = leaderboard.render_full([], (), [det])
    assert text.startswith(leaderboard.render_full([])[:-1])
    assert "| fgsm     | 0.50/0.75 |" in text


def test_a_record_of_other_weights_is_measured_again(runs: dict[str, Any], tmp_path: Path) -> None:
    """Cells measured on other weights (or on weights the record does not name) are never merged with new ones."""
    results = tmp_path / "results"
    path = detection_path(results, "digits", "resnet")
    path.parent.mkdir(parents=True)
    old = {**runs["record"], "models": {name: "0" * 64 for name in runs["record"]["models"]}}
    path.write_text(json.dumps(old))
    result = ok(bench(*DETECT, "--attack", "fgsm", "--results-dir", str(results)))
    assert "measured other model weights; measuring every attack again" in result.stderr
    record = json.loads(path.read_text())
    assert record["models"] == runs["record"]["models"] and record["config"]["attacks"] == ["fgsm"]
    for name, sha in record["models"].items():  # shipped beside the record
        assert json.loads((results / "models" / name / "meta.json").read_text())["weights_sha256"] == sha
