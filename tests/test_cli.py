"""The ``bench`` command, end to end on scikit-learn's digits.

The CLI runs in-process through click's CliRunner, with the session's model cache (the digits classifier is trained
once per session and shared with the ``digits_classifier`` fixture). Torch runs on one thread here: on two shared,
busy cores two OpenMP threads made training about ten times slower than one.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from benchmark.cli import main
from benchmark.core.defense import Defense
from benchmark.core.registry import ATTACKS, DATASETS, DEFENSES
from benchmark.store import records
from benchmark.store.hashing import file_sha256

GRID = ["--dataset", "digits", "--defense", "none,feature-squeezing", "--attack", "fgsm,deepfool", "--n", "40"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


pytestmark = pytest.mark.usefixtures("restore_cli_state")  # the fixture lives in conftest.py


def bench(*args: str, **env: str | None) -> Result:
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        runner = CliRunner()  # click >= 8.2 keeps stderr apart
    return runner.invoke(main, list(args), env=env or None)


def stderr_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def cell_statuses(result: Result) -> dict[tuple[str, str], str]:
    """``bench run``'s summary table: (defense, attack) -> status."""
    table = result.stdout.split("\n\n")[0]  # the cells; the per-budget worst case follows a blank line
    rows = (line.split() for line in table.splitlines()[2:] if line.strip())
    return {(r[0], r[1]): r[2] for r in rows}


def record_files(results: Path) -> list[Path]:
    return sorted(records.records_dir(results).rglob("*.json"))


def assert_user_error(result: Result, *words: str) -> str:
    """Exit code 2, exactly one line on stderr naming the problem, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    lines = stderr_lines(result)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("bench: error: "), line
    for word in words:
        assert word in line, (word, line)
    return line


# -- bench --help ---------------------------------------------------------------------------------------------------

def test_help_does_not_import_torch() -> None:
    code = """
import sys
from benchmark.cli import main
for args in (['--help'], ['-h'], ['run', '--help'], ['train', '--help'], ['list', '--help'],
             ['leaderboard', '--help'], ['--version']):
    try:
        main(args)
    except SystemExit as exc:
        assert exc.code in (0, None), (args, exc.code)
    assert 'torch' not in sys.modules, f"bench {' '.join(args)} imported torch"
print('no torch')
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("no torch")
    assert "bench run --defense" in proc.stdout  # the group's help really was printed


# -- bench run, resume and leaderboard --------------------------------------------------------------------------------

def test_run_resume_and_leaderboard(tmp_path: Path) -> None:
    results = tmp_path / "results"
    first = bench("run", *GRID, "--results-dir", str(results), BENCH_QUIET="1")
    assert first.exit_code == 0, (first.output, first.exception)
    assert first.stderr == ""  # BENCH_QUIET=1 acts as --quiet: no bars, no info messages
    cells, worst = first.stdout.split("\n\n", 1)  # the cells, then the worst case per budget
    assert worst.startswith("worst case over these attacks, per budget")
    assert sorted(tuple(line.split()[:2]) for line in worst.splitlines()[3:]) == [
        ("feature-squeezing", "25/255"), ("feature-squeezing", "8/255"), ("none", "25/255"), ("none", "8/255")]
    table = cells.splitlines()
    assert table[0].split()[:3] == ["defense", "attack", "status"]
    rows = [line.split() for line in table[2:] if line.strip()]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("none", "fgsm", "done"), ("none", "deepfool", "done"),
        ("feature-squeezing", "fgsm", "done"), ("feature-squeezing", "deepfool", "done"),
    ]
    assert all("8/255:" in line and "25/255:" in line and "n=40" in line for line in table[2:])

    files = record_files(results)
    assert len(files) == 4
    cells = set()
    for path in files:
        rec = json.loads(path.read_text())
        records.validate(rec)
        c = rec["config"]
        assert (c["dataset"], c["model"], c["n"], c["threat"]) == ("digits", "resnet", 40, "oblivious")
        assert c["eps"] == [8 / 255, 25 / 255]
        cells.add((c["defense"], c["attack"]))
    assert cells == {(d, a) for d in ("none", "feature-squeezing") for a in ("fgsm", "deepfool")}
    snapshot = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}

    second = bench("run", *GRID, "--results-dir", str(results))
    assert second.exit_code == 0, second.output
    assert list(cell_statuses(second).values()) == ["skipped"] * 4
    assert record_files(results) == files
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == snapshot
    assert sorted(p for p in records.records_dir(results).rglob("*") if p.is_file()) == files

    board = tmp_path / "lb.md"
    wrote = bench("leaderboard", "--results-dir", str(results), "--output", str(board))
    assert wrote.exit_code == 0, wrote.output
    assert board.is_file() and "feature-squeezing" in board.read_text()
    check = bench("leaderboard", "--check", "--results-dir", str(results), "--output", str(board))
    assert check.exit_code == 0, check.output
    assert "up to date" in check.stdout

    # a deleted record makes the leaderboard stale
    removed = files[0]
    removed_bytes = removed.read_bytes()
    removed.unlink()
    stale = bench("leaderboard", "--check", "--results-dir", str(results), "--output", str(board))
    assert stale.exit_code != 0 and "stale" in stale.stderr
    removed.write_bytes(removed_bytes)
    assert bench("leaderboard", "--check", "--results-dir", str(results), "--output", str(board)).exit_code == 0

    # so does an added one (another seed of an existing cell)
    extra = json.loads(files[0].read_text())
    extra["config"]["seed"] = 1
    extra["id"] = records.record_id(extra["config"])
    records.save(results, extra)
    stale = bench("leaderboard", "--check", "--results-dir", str(results), "--output", str(board))
    assert stale.exit_code != 0 and "stale" in stale.stderr

    # a missing leaderboard is reported too
    board.unlink()
    missing = bench("leaderboard", "--check", "--results-dir", str(results), "--output", str(board))
    assert missing.exit_code != 0 and "missing" in missing.stderr

    # a record written by an attack whose settings have since changed is stale: its cell runs again, the others not
    stale = next(p for p in files if json.loads(p.read_text())["config"]["attack"] == "deepfool")
    rec = json.loads(stale.read_text())
    option = sorted(rec["attack"]["options"])[0]
    rec["attack"]["options"][option] = "an older setting"
    stale.write_text(json.dumps(rec))
    third = bench("run", *GRID, "--results-dir", str(results))
    assert third.exit_code == 0, third.output
    statuses = cell_statuses(third)
    assert statuses.pop((rec["config"]["defense"], "deepfool")) == "done"
    assert set(statuses.values()) == {"skipped"}
    assert f"the attack's options changed ({option})" in third.stderr
    assert json.loads(stale.read_text())["attack"]["options"][option] != "an older setting"

    # so is a record of a defense whose settings have since changed (e.g. a retuned count): the record id does not
    # hash them either
    squeezed = next(p for p in files if json.loads(p.read_text())["config"]["defense"] == "feature-squeezing")
    rec = json.loads(squeezed.read_text())
    rec["defense"]["options"]["bits"] += 1
    squeezed.write_text(json.dumps(rec))
    retuned = bench("run", *GRID, "--results-dir", str(results))
    assert retuned.exit_code == 0, retuned.output
    statuses = cell_statuses(retuned)
    assert statuses.pop(("feature-squeezing", rec["config"]["attack"])) == "done"
    assert set(statuses.values()) == {"skipped"}
    assert "the defense's options changed (bits)" in retuned.stderr
    assert json.loads(squeezed.read_text())["defense"]["options"]["bits"] == rec["defense"]["options"]["bits"] - 1

    # a record of other model weights, or of unrecorded ones, is measured again: its numbers describe no model here
    models = json.loads(stale.read_text())["models"]
    assert models and all(len(sha) == 64 for sha in models.values())
    other, unrecorded = [p for p in files if p != stale][:2]
    changed = {}
    for path, edit in ((other, "other"), (unrecorded, "unrecorded")):
        rec = json.loads(path.read_text())
        if edit == "other":
            rec["models"] = {name: "0" * 64 for name in rec["models"]}
        else:
            del rec["models"]
        path.write_text(json.dumps(rec))
        changed[(rec["config"]["defense"], rec["config"]["attack"])] = path
    fourth = bench("run", *GRID, "--results-dir", str(results))
    assert fourth.exit_code == 0, fourth.output
    statuses = cell_statuses(fourth)
    assert {cell for cell, status in statuses.items() if status == "done"} == set(changed)
    assert "measured other model weights" in fourth.stderr and "predates model fingerprints" in fourth.stderr
    for path in changed.values():
        assert "0" * 64 not in json.loads(path.read_text())["models"].values()


# -- the adaptive and transfer threat models ------------------------------------------------------------------------

@pytest.mark.parametrize("threat", ["adaptive", "transfer"])
def test_run_under_other_threat_models(tmp_path: Path, threat: str) -> None:
    results = tmp_path / "results"
    result = bench("run", "--dataset", "digits", "--defense", "none,feature-squeezing", "--attack", "fgsm",
                   "--eps", "25/255", "--n", "20", "--threat", threat, "--results-dir", str(results), "-q")
    assert result.exit_code == 0, (result.output, result.exception)
    recs = [json.loads(p.read_text()) for p in record_files(results)]
    assert sorted(r["config"]["defense"] for r in recs) == ["feature-squeezing", "none"]
    for rec in recs:
        records.validate(rec)
        assert rec["config"]["threat"] == threat
        assert (rec["substitute"] is not None) == (threat == "transfer")
    if threat == "adaptive":
        squeezed = next(r for r in recs if r["config"]["defense"] == "feature-squeezing")
        assert squeezed["attack"]["options"]["gradients"] == {"feature-squeezing": "bpda-surrogate"}
    board = tmp_path / "lb.md"
    assert bench("leaderboard", "--results-dir", str(results), "--output", str(board)).exit_code == 0
    assert f"| {threat} " in board.read_text()


# -- failing and interrupted runs keep finished cells -----------------------------------------------------------------

class _NaNDefense(Defense):
    summary = "test: purifies to NaN"
    purifies = True

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, float("nan"))


class _ShapeDefense(Defense):
    summary = "test: crops a row"
    purifies = True

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., 1:, :]


class _LateNaNDefense(Defense):
    """Fine on the clean points (its first call), NaN on adversarial inputs: fails in every attack's cell."""

    summary = "test: NaN after the first batch"
    purifies = True

    def __init__(self) -> None:
        self.calls = 0

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x if self.calls == 1 else x * float("nan")


@pytest.fixture
def broken_defenses():
    names = {"zz-test-nan": _NaNDefense, "zz-test-shape": _ShapeDefense, "zz-test-late-nan": _LateNaNDefense}
    DEFENSES.names()  # load the built-ins first
    for name, factory in names.items():
        DEFENSES.add(name, factory, "tests")
    yield list(names)
    for name in names:
        DEFENSES._entries.pop(name, None)


def test_failing_cells_are_reported_and_the_others_kept(tmp_path: Path, broken_defenses: list[str]) -> None:
    results = tmp_path / "results"
    result = bench("run", "--dataset", "digits", "--defense", ",".join(["none", *broken_defenses]),
                   "--attack", "fgsm,bim", "--eps", "8/255", "--n", "20", "--results-dir", str(results), "-q")
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output

    kept = {(r["config"]["defense"], r["config"]["attack"])
            for r in (json.loads(p.read_text()) for p in record_files(results))}
    assert kept == {("none", "fgsm"), ("none", "bim")}

    lines = stderr_lines(result)
    assert len(lines) == 6, lines  # one per failed cell: 3 broken defenses x 2 attacks
    by_cell = {}
    for line in lines:
        assert line.startswith("bench: error: cell "), line
        defense, _, attack = line.removeprefix("bench: error: cell ").split(" failed:")[0].partition(" x ")
        by_cell[(defense, attack)] = line
    assert set(by_cell) == {(d, a) for d in broken_defenses for a in ("fgsm", "bim")}
    for a in ("fgsm", "bim"):
        assert "NaN" in by_cell[("zz-test-nan", a)]
        assert "NaN" in by_cell[("zz-test-late-nan", a)]
        assert "shape" in by_cell[("zz-test-shape", a)] and "(20, 1, 8, 8)" in by_cell[("zz-test-shape", a)]
    statuses = {tuple(line.split()[:3]) for line in result.stdout.splitlines()[2:] if line.strip()}
    assert ("zz-test-shape", "bim", "failed") in statuses and ("none", "bim", "done") in statuses


def test_interrupted_run_keeps_finished_cells_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.engine import cells

    results = tmp_path / "results"
    args = ["run", "--dataset", "digits", "--defense", "none", "--attack", "fgsm,bim", "--eps", "8/255",
            "--n", "20", "--results-dir", str(results), "-q"]
    original = cells.evaluate_cell
    calls: list[str] = []

    def interrupt_second(*a, **kw):
        calls.append(a[2])  # the attack's name
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second cell is evaluated
        return original(*a, **kw)

    monkeypatch.setattr(cells, "evaluate_cell", interrupt_second)
    interrupted = bench(*args)
    assert interrupted.exit_code != 0
    files = record_files(results)
    assert len(files) == 1 and json.loads(files[0].read_text())["config"]["attack"] == calls[0]
    assert [p for p in records.records_dir(results).rglob("*") if p.is_file()] == files  # no partial files
    first_bytes = files[0].read_bytes()

    monkeypatch.setattr(cells, "evaluate_cell", original)
    resumed = bench(*args)
    assert resumed.exit_code == 0, resumed.output
    statuses = {attack: status for (_, attack), status in cell_statuses(resumed).items()}
    assert statuses == {calls[0]: "skipped", calls[1]: "done"}
    assert len(record_files(results)) == 2 and files[0].read_bytes() == first_bytes


def test_bench_quiet_environment_variable(tmp_path: Path) -> None:
    args = ["run", "--dataset", "digits", "--defense", "none", "--attack", "fgsm", "--eps", "8/255", "--n", "20"]
    loud = bench(*args, "--results-dir", str(tmp_path / "a"), BENCH_QUIET=None)
    assert loud.exit_code == 0 and "cells" in loud.stderr  # the progress bar
    quiet = bench(*args, "--results-dir", str(tmp_path / "b"), BENCH_QUIET="1")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    flag = bench(*args, "-q", "--results-dir", str(tmp_path / "c"), BENCH_QUIET=None)
    assert flag.exit_code == 0 and flag.stderr == ""


# -- bad input: one line, exit code 2, no traceback -------------------------------------------------------------------

RUN = ["run", "--dataset", "digits", "--defense", "none", "--attack", "fgsm", "-q"]


@pytest.mark.parametrize(
    "args, words",
    [
        (["run", "--dataset", "digits", "--defense", "feature-squeezin", "--attack", "fgsm"],
         ["unknown defense 'feature-squeezin'", "did you mean 'feature-squeezing'"]),
        (["run", "--dataset", "digits", "--defense", "none+feature-squeezin", "--attack", "fgsm"],
         ["unknown defense 'feature-squeezin'"]),
        (["run", "--dataset", "digits", "--defense", "adv-fgsm+adv-bim", "--attack", "fgsm"],
         ["two training-time defenses"]),
        (["run", "--dataset", "digits", "--defense", "none", "--attack", "fgsn"],
         ["unknown attack 'fgsn'", "did you mean", "'fgsm'"]),
        (["run", "--dataset", "digits", "--defense", "none", "--attack", "pgd*x"], ["matches nothing"]),
        (["run", "--dataset", "digits", "--defense", "none", "--attack", "all,-all"], ["leaves nothing"]),
        (["run", "--dataset", "digitz", "--defense", "none", "--attack", "fgsm"],
         ["unknown dataset 'digitz'", "'digits'", "mnist5k"]),
        (["run", "--dataset", "digits", "--model", "resnt", "--defense", "none", "--attack", "fgsm"],
         ["unknown model 'resnt'", "'resnet'"]),
        ([*RUN, "--eps", "8/0"], ["malformed budget '8/0'", "8/255"]),
        ([*RUN, "--eps", "-1"], ["'-1'", "negative"]),
        ([*RUN, "--eps", "300"], ["'300'", "above 1", "[0, 1]"]),
        ([*RUN, "--eps", "8"], ["did you mean 8/255?"]),
        ([*RUN, "--eps", "8/255,abc"], ["malformed budget 'abc'"]),
        ([*RUN, "--n", "100000"], ["--n 100000", "digits", "1 to 360"]),
        ([*RUN, "--n", "0"], ["--n 0", "1 to 360"]),
        ([*RUN, "--device", "tpu"], ["unknown device 'tpu'"]),
        (["train", "--dataset", "digitz"], ["unknown dataset 'digitz'"]),
        (["train", "detector", "--dataset", "digits"], ["cannot train 'detector'"]),
        (["train", "--dataset", "digits", "--defense", "feature-squeezin"], ["unknown defense"]),
        (["train", "--dataset", "digits", "--defense", "feature-squeezing"],
         ["'feature-squeezing' has no training-time part", "adv-fgsm"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0] in ("run", "train") else None,
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], words: list[str]) -> None:
    if args[0] == "run":
        args = [*args, "--results-dir", str(tmp_path / "results")]
    assert_user_error(bench(*args), *words)


def test_bad_input_runs_nothing(tmp_path: Path) -> None:
    results = tmp_path / "results"
    assert_user_error(bench(*RUN, "--eps", "8/0", "--results-dir", str(results)))
    assert_user_error(bench(*RUN, "--threat", "adaptive", "--attack", "fgsn", "--results-dir", str(results)))
    assert not results.exists()


def test_eps_300_message(tmp_path: Path) -> None:
    line = assert_user_error(bench(*RUN, "--eps", "300", "--results-dir", str(tmp_path / "r")), "300")
    assert "did you mean 300/255" not in line  # 300/255 is above 1 as well: no invalid suggestion


def test_missing_data_root_says_where_it_looked(tmp_path: Path) -> None:
    empty = tmp_path / "data"
    empty.mkdir()
    line = assert_user_error(bench("run", "--dataset", "mnist", "--data-root", str(empty), "--defense", "none",
                                   "--attack", "fgsm", "--results-dir", str(tmp_path / "results"), "-q"),
                             "mnist not found")
    assert str(empty / "MNIST") in line
    assert "--data-root" in line and "BENCH_DATA" in line and "--download" in line
    # same for bench train
    assert_user_error(bench("train", "--dataset", "cifar10", "--data-root", str(empty), "-q"),
                      str(empty / "cifar-10-batches-py"), "--download")


def test_unwritable_results_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = blocker / "results"  # a parent that is a regular file blocks even root
    line = assert_user_error(bench(*RUN, "--n", "20", "--results-dir", str(target)), "not writable", "--results-dir")
    assert str(target) in line


def test_cuda_without_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on machines that have CUDA
    assert_user_error(bench(*RUN, "--device", "cuda", "--results-dir", str(tmp_path / "r")),
                      "--device cuda", "no CUDA", "--device cpu")
    assert_user_error(bench("train", "--dataset", "digits", "--device", "cuda:1", "-q"), "no CUDA")


def test_leaderboard_with_a_broken_record_is_one_line(tmp_path: Path) -> None:
    results = tmp_path / "results"
    bad = records.records_dir(results) / "digits" / "0123456789abcdef.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    assert_user_error(bench("leaderboard", "--results-dir", str(results), "--output", str(tmp_path / "lb.md")),
                      str(bad))
    check = bench("leaderboard", "--check", "--results-dir", str(results), "--output", str(tmp_path / "lb.md"))
    assert check.exit_code != 0 and str(bad) in check.stderr and "Traceback" not in check.output


def test_leaderboard_unwritable_output_is_one_line(tmp_path: Path) -> None:
    records.records_dir(tmp_path / "results").mkdir(parents=True)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert_user_error(bench("leaderboard", "--results-dir", str(tmp_path / "results"),
                            "--output", str(blocker / "lb.md")), "cannot write", str(blocker / "lb.md"), "--output")


def test_a_mistyped_results_dir_leaves_the_leaderboard_alone(tmp_path: Path) -> None:
    board = tmp_path / "lb.md"
    board.write_text("the real leaderboard")
    typo = tmp_path / "resluts"
    for args in (["leaderboard"], ["leaderboard", "--check"]):
        assert_user_error(bench(*args, "--results-dir", str(typo), "--output", str(board)),
                          "no records under", str(typo / "records"), "--results-dir")
    assert_user_error(bench("plot", "--results-dir", str(typo)), "no records under")
    assert board.read_text() == "the real leaderboard" and not typo.exists()


# -- the model store through bench train ----------------------------------------------------------------------------

def test_corrupted_checkpoint_is_reported_and_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.training import classifier as training
    from benchmark.data.dataset import load_dataset
    from benchmark.store.hashing import file_sha256
    from benchmark.store.model_store import ModelStore
    from benchmark.training.zoo import build_classifier

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    # this test trains twice (build, then rebuild): one short epoch is enough to have a checkpoint to corrupt
    monkeypatch.setitem(training.DEFAULT_TRAIN, "digits", training.TrainConfig(epochs=1, batch_size=128, shift=1))
    first = bench("train", "--dataset", "digits", "-q")
    assert first.exit_code == 0, (first.output, first.exception)
    assert "resnet on digits" in first.stdout and "test accuracy" in first.stdout
    (weights,) = (tmp_path / "cache" / "models" / "classifier").glob("*/weights.safetensors")
    meta = json.loads((weights.parent / "meta.json").read_text())
    assert meta["key"] in first.stdout and meta["weights_sha256"] == file_sha256(weights)

    # a cached checkpoint is reported, not retrained
    cached = bench("train", "--dataset", "digits", "-q")
    assert cached.exit_code == 0 and stderr_lines(cached) == []
    assert (weights.parent / "meta.json").read_text() == json.dumps(meta, indent=2, sort_keys=True)

    data = bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(16)
    weights.write_bytes(bytes(data))

    again = bench("train", "--dataset", "digits", "-q")
    assert again.exit_code == 0, (again.output, again.exception)
    assert "Traceback" not in again.output
    warnings = stderr_lines(again)
    assert warnings and all(line.startswith("bench: ") for line in warnings)
    assert any("corrupted" in line and str(weights.parent) in line for line in warnings), warnings
    assert meta["key"] in again.stdout

    rebuilt = json.loads((weights.parent / "meta.json").read_text())
    assert rebuilt["weights_sha256"] == file_sha256(weights)
    module = build_classifier(load_dataset("digits"), "resnet")
    assert ModelStore(tmp_path / "cache" / "models").load("classifier", rebuilt["spec"], module) == rebuilt


def _train_fresh(cache: Path, monkeypatch: pytest.MonkeyPatch, torch_seed: int) -> dict:
    monkeypatch.setenv("BENCH_CACHE", str(cache))
    torch.manual_seed(torch_seed)  # whatever ran before in the process
    result = bench("train", "--dataset", "digits", "--seed", "0", "-q")
    assert result.exit_code == 0, (result.output, result.exception)
    (meta,) = (cache / "models" / "classifier").glob("*/meta.json")
    return json.loads(meta.read_text())


@pytest.mark.parametrize("same_state", [
    True,
    False,
])
def test_train_is_reproducible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, same_state: bool) -> None:
    from benchmark.training import classifier as training

    monkeypatch.setitem(training.DEFAULT_TRAIN, "digits", training.TrainConfig(epochs=1, batch_size=128, shift=1))
    a = _train_fresh(tmp_path / "a", monkeypatch, 1)
    b = _train_fresh(tmp_path / "b", monkeypatch, 1 if same_state else 2)
    assert a["key"] == b["key"]
    assert a["weights_sha256"] == b["weights_sha256"]
    timings = {"train_seconds", "seconds_per_epoch"}  # wall time: the one thing two trainings may not share
    assert {k: v for k, v in a["metrics"].items() if k not in timings} == \
        {k: v for k, v in b["metrics"].items() if k not in timings}


# -- bench list -----------------------------------------------------------------------------------------------------

def _row(stdout: str, name: str) -> str:
    rows = [line for line in stdout.splitlines() if line.split()[:1] == [name]]
    assert len(rows) == 1, (name, rows)
    return rows[0]


def test_list_attacks_shows_kind_and_norm() -> None:
    result = bench("list", "attacks")
    assert result.exit_code == 0, result.output
    entries = ATTACKS.entries()
    assert result.stdout.startswith(f"attacks ({len(entries)})")
    header = result.stdout.splitlines()[1].split()
    assert header[:3] == ["name", "kind", "norm"]
    for entry in entries:
        cls = entry.factory
        row = _row(result.stdout, entry.name).split()
        assert row[1:3] == [cls.kind.value, cls.norm.value], (entry.name, row)


def test_list_datasets_and_all() -> None:
    result = bench("list", "datasets")
    assert result.exit_code == 0, result.output
    row = _row(result.stdout, "mnist5k")
    assert "28x28x1" in row and "8/255, 25/255" in row and "offline" in row
    for name in DATASETS.names():
        _row(result.stdout, name)
    everything = bench("list")
    assert everything.exit_code == 0
    for kind in ("defenses", "attacks", "models", "datasets"):
        assert any(line.startswith(f"{kind} (") for line in everything.stdout.splitlines()), kind
    _row(everything.stdout, "feature-squeezing")
    _row(everything.stdout, "resnet")


def test_the_weights_a_record_measured_are_shipped_with_it(tmp_path: Path) -> None:
    """A run puts every checkpoint its records measured under results/models; a machine with an empty cache restores
    them instead of training its own (other) weights, so the records stand there too."""
    results = tmp_path / "results"
    args = ["run", "--dataset", "digits", "--defense", "none,feature-squeezing", "--attack", "fgsm", "--eps", "8/255",
            "--n", "20", "--results-dir", str(results), "-q"]
    assert bench(*args).exit_code == 0
    written = [json.loads(p.read_text()) for p in record_files(results)]
    for rec in written:
        for name, sha in rec["models"].items():
            assert json.loads((results / "models" / name / "meta.json").read_text())["weights_sha256"] == sha
            assert file_sha256(results / "models" / name / "weights.safetensors") == sha

    again = bench(*args, BENCH_CACHE=str(tmp_path / "empty-cache"))
    assert again.exit_code == 0, again.output
    assert set(cell_statuses(again).values()) == {"skipped"}
    assert not list((tmp_path / "empty-cache").rglob("*.tmp"))
    name = next(iter(written[0]["models"]))
    for file in ("meta.json", "weights.safetensors"):  # copied, not retrained (a retrained meta has a new date)
        assert (tmp_path / "empty-cache" / "models" / name / file).read_bytes() == (
            results / "models" / name / file).read_bytes()
