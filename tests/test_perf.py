"""The timing helper of ``bench perf`` and ``bench perf render``; no speed is asserted here (a shared machine is too
noisy for that: the benchmarks measure, tests check how they measure)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from benchmark.cli import main
from benchmark.perf import timing
from benchmark.perf.render import render

pytestmark = pytest.mark.usefixtures("restore_cli_state")  # the fixture lives in conftest.py


class FakeClock:
    """A clock that moves only when a candidate says how long it took."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_best_of_warms_up_then_interleaves_and_keeps_each_minimum():
    clock, calls = FakeClock(), []
    # seconds of each call of each candidate: the warm-up's first (fast, must not count), then three timed rounds
    durations = {"a": [0.5, 5.0, 3.0, 4.0], "b": [0.1, 7.0, 9.0, 2.0], "c": [0.2, 1.0, 1.0, 1.0]}

    def candidate(name: str):
        def call() -> None:
            calls.append(name)
            clock.now += durations[name].pop(0)
        return call

    best = timing.best_of({name: candidate(name) for name in durations}, repeats=3, warmup=1, clock=clock)
    assert calls == ["a", "b", "c"] * 4  # warm-up round, then round r runs every candidate once, in order
    assert best == pytest.approx({"a": 3.0, "b": 2.0, "c": 1.0})
    assert all(not left for left in durations.values())


def test_best_of_without_warmup_times_every_call_and_checks_repeats():
    clock, seen = FakeClock(), []

    def call() -> None:
        seen.append(clock.now)
        clock.now += 2.0 if len(seen) == 1 else 3.0

    assert timing.best_of({"x": call}, repeats=2, warmup=0, clock=clock) == pytest.approx({"x": 2.0})
    assert len(seen) == 2
    with pytest.raises(ValueError):
        timing.best_of({"x": call}, repeats=0)


def test_best_of_on_the_real_clock_takes_the_shortest_of_real_sleeps():
    sleeps = iter([0.03, 0.005, 0.03])
    best = timing.best_of({"sleep": lambda: time.sleep(next(sleeps))}, repeats=2, warmup=1)["sleep"]
    assert 0.005 <= best < 0.03


def test_timed_returns_seconds_and_the_result():
    clock = FakeClock()

    def work() -> str:
        clock.now += 1.5
        return "done"

    assert timing.timed(work, clock=clock) == (1.5, "done")


def test_pinned_threads_sets_and_restores_even_on_error():
    saved = torch.get_num_threads()
    target = 2 if saved != 2 else 1
    with timing.pinned_threads(target) as used:
        assert used == target == torch.get_num_threads()
    assert torch.get_num_threads() == saved
    with pytest.raises(RuntimeError), timing.pinned_threads(target):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == saved
    with timing.pinned_threads(None) as used:
        assert used == saved
    with pytest.raises(ValueError), timing.pinned_threads(0):
        pass
    assert torch.get_num_threads() == saved


def test_matmul_peak_is_a_positive_rate():
    assert timing.matmul_peak("cpu", size=32, repeats=1) > 0


def test_report_records_the_machine_and_keeps_the_column_order():
    rows = [{"case": "a", "seconds": 1.0}, {"case": "b", "seconds": 2.0, "note": "x"}]
    data = timing.report("demo", rows, {"command": "bench perf demo", "targets": {"seconds": "<= 3"}}, [1.0, 2.0, 3.0])
    machine = data["machine"]
    for key in ("torch_threads", "interop_threads", "cpu_count", "load_before", "load_after", "OMP_WAIT_POLICY",
                "OMP_NUM_THREADS", "device", "torch", "cpu"):
        assert key in machine
    assert machine["torch_threads"] == torch.get_num_threads()
    assert machine["load_before"] == [1.0, 2.0, 3.0]
    assert data["columns"] == ["case", "seconds", "note"]
    text = timing.dumps(data)
    assert text == timing.dumps(json.loads(text)) and text.endswith("\n")
    assert list(json.loads(text)) == sorted(data)
    with pytest.raises(ValueError):
        timing.report("demo", rows, {"rows": []})


LEGACY = [{"attack": "fgsm", "n": 100, "direct_s": 0.44, "harness_s": 0.423, "overhead_pct": -3.9}]


def _perf_dir(tmp_path: Path) -> Path:
    perf = tmp_path / "perf"
    perf.mkdir()
    (perf / "overhead.json").write_text(json.dumps(LEGACY, indent=1))
    data = timing.report("api", [{"job": "bench run x|y", "ratio": 0.98, "meets_target": True, "extra": None}],
                         {"command": "bench perf api --n 10 --save results/perf", "targets": {"ratio": "<= 1.05"},
                          "job_note": "warm cache"}, [0.5, 0.4, 0.3])
    (perf / "api.json").write_text(timing.dumps(data))
    return perf


def test_render_is_deterministic_and_marks_files_without_machine_info(tmp_path):
    perf = _perf_dir(tmp_path)
    page = render(perf, shown_as="results/perf")
    assert page == render(perf, shown_as="results/perf")
    assert page.startswith("# Performance\n")
    words = " ".join(page.split())
    assert "generated by `bench perf render`" in words
    assert "Every number in it came from the command named in its section" in words
    api, overhead = page.index("## api"), page.index("## overhead")
    assert api < overhead  # sections in file-name order
    api_part, overhead_part = page[api:overhead], page[overhead:]
    assert "`bench perf api --n 10 --save results/perf`" in api_part
    assert "machine not recorded" not in api_part and "torch threads" in api_part
    assert "| job | ratio (target <= 1.05) | meets_target | extra |" in api_part
    assert "| bench run x\\|y | 0.98 | yes | - |" in api_part
    assert "- job_note: warm cache" in api_part
    assert "machine not recorded" in overhead_part
    assert "`bench perf overhead --save results/perf`" in overhead_part
    assert "| attack | n | direct_s | harness_s | overhead_pct |" in overhead_part
    assert "| fgsm | 100 | 0.44 | 0.423 | -3.9 |" in overhead_part


def _bench(*args: str):
    return CliRunner().invoke(main, list(args))


def test_render_check_fails_on_a_stale_page(tmp_path):
    perf, out = _perf_dir(tmp_path), tmp_path / "docs" / "performance.md"
    common = ["perf", "render", "--perf-dir", str(perf), "--output", str(out)]
    assert _bench(*common, "--check").exit_code == 1  # no page yet
    assert _bench(*common).exit_code == 0
    written = out.read_text()
    assert written == render(perf)
    assert _bench(*common, "--check").exit_code == 0
    assert _bench(*common).exit_code == 0 and out.read_text() == written  # same files, same bytes
    rows = json.loads((perf / "overhead.json").read_text())
    rows[0]["overhead_pct"] = 9.9
    (perf / "overhead.json").write_text(json.dumps(rows))
    result = _bench(*common, "--check")
    assert result.exit_code == 1
    assert out.read_text() == written  # --check writes nothing


def test_perf_api_smoke(tmp_path, isolated_cache, digits_classifier):
    """`bench perf api` end to end, tiny: one cheap cell, one round, in the session's cache, where the digits classifier
    is trained once for every test that needs it (a few seconds beyond that)."""
    save = tmp_path / "saved"
    result = _bench("perf", "api", "--n", "10", "--attack", "fgsm", "--repeats", "1", "--warmup", "0",
                    "--cache", str(isolated_cache), "--threads", "1", "--save", str(save))
    assert result.exit_code == 0, result.output
    data = json.loads((save / "api.json").read_text())
    assert data["machine"]["torch_threads"] == 1
    assert data["command"].startswith("bench perf api ")
    assert "--n 10" in data["command"] and "--attack fgsm" in data["command"]
    assert data["targets"] == {"ratio": "<= 1.05"}
    (row,) = data["rows"]
    assert row["cells"] == 1 and row["bench_run_s"] > 0 and row["evaluate_s"] > 0
    assert row["ratio"] == pytest.approx(row["evaluate_s"] / row["bench_run_s"], rel=0.05)


def test_perf_training_gives_the_epoch_cost_of_each_model(tmp_path, digits):
    """`bench perf training` on digits, tiny: each classifier x training defense and the PixelCNN get a row whose
    minutes per epoch are its measured step times the batches of an epoch; adversarial training costs more."""
    save = tmp_path / "saved"
    result = _bench("perf", "training", "--dataset", "digits", "--model", "vgg", "--defense", "none,adv-bim",
                    "--steps", "2", "--threads", "1", "--save", str(save))
    assert result.exit_code == 0, result.output
    data = json.loads((save / "training_digits.json").read_text())
    rows = {(r["model"], r["defense"]): r for r in data["rows"]}
    assert set(rows) == {("vgg", "none"), ("vgg", "adv-bim"), ("pixelcnn (small)", "-")}
    for r in rows.values():
        assert r["batches_per_epoch"] == -(-len(digits.train) // r["batch"])
        assert r["minutes_per_epoch"] == pytest.approx(r["seconds_per_batch"] * r["batches_per_epoch"] / 60, abs=0.06)
    assert rows[("vgg", "adv-bim")]["seconds_per_batch"] > rows[("vgg", "none")]["seconds_per_batch"]
    assert rows[("pixelcnn (small)", "-")]["train_images_per_second"] > 0
    assert "bench perf training --dataset digits" in data["command"]
