"""Faults, end to end on scikit-learn's digits: a full disk, failed writes, invalid records, tampered or corrupt weights
and caches, plugins that exit at import, Ctrl-C and SIGTERM. Each ends in one line that says what happened and what to
do, with an exit code that tells them apart (2: a mistake to fix; 1: a full disk; 130 and 143: interrupted), never a
traceback, and nothing finished is lost.

Most cases run the CLI in process (click's CliRunner) on the session's model cache; the signals and the plugin run
``python -m benchmark.cli`` in a subprocess.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from benchmark.cli import main
from benchmark.core.errors import BenchError
from benchmark.core.registry import Registry
from benchmark.store import records
from benchmark.store.model_store import META, WEIGHTS, ModelStore

pytestmark = pytest.mark.usefixtures("restore_cli_state")  # the fixture lives in conftest.py

REPO = Path(__file__).resolve().parents[1]
ONE_CELL = ["--dataset", "digits", "--defense", "none", "--attack", "fgsm", "--eps", "8/255", "--n", "20", "-q"]
TWO_CELLS = ["--dataset", "digits", "--defense", "none,feature-squeezing", "--attack", "fgsm", "--eps", "8/255",
             "--n", "20", "-q"]
SUBPROCESS_TIMEOUT = 900  # seconds; the machine may be shared


def bench(*args: str, **env: str | None) -> Result:
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        runner = CliRunner()  # click >= 8.2 keeps stderr apart
    return runner.invoke(main, list(args), env=env or None)


def stderr_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def error_line(result: Result, code: int, *words: str) -> str:
    """Exit ``code``, exactly one ``bench: error:`` line on stderr holding ``words``, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    errors = [line for line in stderr_lines(result) if line.startswith("bench: error: ")]
    assert len(errors) == 1, stderr_lines(result)
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def statuses(result: Result) -> dict[tuple[str, str], str]:
    """``bench run``'s table of cells: (defense, attack) -> status."""
    table = result.stdout.split("\n\n")[0]
    rows = (line.split() for line in table.splitlines()[2:] if line.strip())
    return {(r[0], r[1]): r[2] for r in rows}


def record_files(results: Path) -> list[Path]:
    return sorted(records.records_dir(results).rglob("*.json"))


def leftovers(folder: Path) -> list[Path]:
    """Temporary files of atomic writes left behind (there must be none)."""
    return sorted(p for p in folder.rglob("*") if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def one_record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder holding the record of none x fgsm on the digits and its shipped classifier."""
    results = tmp_path_factory.mktemp("one-record") / "results"
    done = bench("run", *ONE_CELL, "--results-dir", str(results))
    assert done.exit_code == 0, (done.output, done.exception)
    assert len(record_files(results)) == 1
    return results


@pytest.fixture
def results(one_record: Path, tmp_path: Path) -> Path:
    """A copy of :func:`one_record` to spoil."""
    copy = tmp_path / "results"
    shutil.copytree(one_record, copy, ignore=shutil.ignore_patterns(".claims"))
    return copy


# -- 1. a full disk, and any OSError while writing ------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs (needs root and the right to mount): a real file system that runs out of space."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs to fill up: {exc}")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up (needs root and CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=60)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte (unbuffered writes, ever smaller); the file that fills it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        chunk = 1 << 16
        while chunk:
            try:
                os.write(fd, b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                chunk //= 2
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_stops_the_grid_with_the_finished_cells_and_a_rerun_resumes(small_disk: Path) -> None:
    results = small_disk / "results"
    first = bench("run", *ONE_CELL, "--results-dir", str(results))
    assert first.exit_code == 0, (first.output, first.exception)
    filler = fill(small_disk)

    full = bench("run", *TWO_CELLS, "--results-dir", str(results))
    line = error_line(full, 1, "feature-squeezing x fgsm", str(records.records_dir(results)), "No space left on device",
                      "kept", "resume")
    assert line.startswith("bench: error: cannot write the record of")
    assert statuses(full) == {("none", "fgsm"): "skipped"}  # the table of the finished cells, then the line
    assert "worst case over these attacks" in full.stdout
    assert len(record_files(results)) == 1 and not leftovers(results)  # no partial file

    filler.unlink()
    again = bench("run", *TWO_CELLS, "--results-dir", str(results))
    assert again.exit_code == 0, (again.output, again.exception)
    assert statuses(again) == {("none", "fgsm"): "skipped", ("feature-squeezing", "fgsm"): "done"}
    assert len(record_files(results)) == 2


@pytest.fixture
def no_space_in(monkeypatch: pytest.MonkeyPatch):
    """``fail(part, after=0)``: every atomic rename into a path containing ``part`` fails with ENOSPC once ``after``
    such renames succeeded (the temporary file was written and must be cleaned up)."""
    real = os.replace

    def fail(part: str, after: int = 0) -> None:
        seen = [0]

        def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if part in str(dst):
                seen[0] += 1
                if seen[0] > after:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
            real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace)

    return fail


def test_an_oserror_writing_a_record_keeps_the_cells_before_it(tmp_path: Path, no_space_in) -> None:
    results = tmp_path / "results"
    no_space_in(f"{os.sep}records{os.sep}", after=1)  # the first record is written, the second is not
    stopped = bench("run", *TWO_CELLS, "--results-dir", str(results))
    error_line(stopped, 1, "cannot write the record of feature-squeezing x fgsm", "No space left on device",
               "1 record(s) written by this run", "rerunning the same command resumes")
    assert statuses(stopped) == {("none", "fgsm"): "done"}
    (kept,) = record_files(results)
    assert json.loads(kept.read_text())["config"]["defense"] == "none"
    assert not leftovers(results)


def test_weights_that_cannot_be_shipped_are_a_warning_not_the_end_of_the_grid(tmp_path: Path, no_space_in) -> None:
    results = tmp_path / "results"
    bench("train", "--dataset", "digits", "-q")  # the cache holds the classifier (trained here if this test runs alone)
    no_space_in(str(results / "models"))
    done = bench("run", *TWO_CELLS, "--results-dir", str(results))
    assert done.exit_code == 0, (done.output, done.exception)
    assert set(statuses(done).values()) == {"done"}
    assert len(record_files(results)) == 2
    warnings = [line for line in stderr_lines(done) if "could not copy checkpoint classifier/" in line]
    assert warnings and all("No space left on device" in w and "not shipped" in w for w in warnings), \
        stderr_lines(done)
    assert not list((results / "models").rglob("*.safetensors")) and not leftovers(results)


# -- 2. the record schema -------------------------------------------------------------------------------------------

def spoil(results: Path, edit: Any) -> Path:
    (path,) = record_files(results)
    rec = json.loads(path.read_text())
    edit(rec)
    path.write_text(json.dumps(rec))
    return path


@pytest.mark.parametrize("edit, words", [
    (lambda r: r["config"].update(threat="bogus"), ["config.threat", "'bogus'", "oblivious, adaptive, transfer"]),
    (lambda r: r["config"].update(defense=5), ["config.defense", "5 is not of type 'string'"]),
    (lambda r: r["config"].update(defense="None Defense"), ["config.defense", "'None Defense'", "registered name"]),
    (lambda r: r.update(models="oops"), ["models", "'oops' is not of type 'object'"]),
    (lambda r: r.update(models={"classifier": "0" * 64}), ["models", "key 'classifier'", "<kind>/<key>"]),
    (lambda r: r["models"].update({k: "abc" for k in r["models"]}), ["models.classifier/", "SHA-256"]),
    (lambda r: r["config"].update(n="abc"), ["config.n", "'abc' is not of type 'integer'"]),
    (lambda r: r["config"].update(n=0), ["config.n", "0 is less than the minimum of 1"]),
    (lambda r: r["config"].update(eps="8/255"), ["config.eps", "is not of type 'array'"]),
    (lambda r: r.update(checks={"randomness": 123}), ["checks.randomness", "123 is not of type 'object'"]),
    (lambda r: r["checks"]["gradients"].update(zero="none"), ["checks.gradients.zero", "'none'"]),
    (lambda r: r["outcomes"]["clean_correct"].__setitem__(3, 2), ["outcomes.clean_correct[3]", "2 is not one of 0, 1"]),
    (lambda r: r["outcomes"]["label"].pop(), ["outcomes.label", "holds 19 values", "config.n = 20"]),
    (lambda r: r["outcomes"]["adv_correct"].append([1] * 20), ["outcomes.adv_correct", "one per budget"]),
    (lambda r: r["outcomes"].update(unbounded="none"), ["outcomes.unbounded", "not of type null or object"]),
])
def test_a_record_that_breaks_the_schema_is_named_with_its_field(results: Path, edit: Any, words: list[str]) -> None:
    path = spoil(results, edit)
    output = results.parent / "leaderboard.md"
    for args in ([], ["--check"]):
        refused = bench("leaderboard", "--results-dir", str(results), "--output", str(output), *args)
        error_line(refused, 2, path.name, "do not parse or validate", *words)
        assert not output.exists()


def test_a_record_in_another_data_sets_folder_is_refused(results: Path) -> None:
    (path,) = record_files(results)
    stray = records.records_dir(results) / "mnist5k" / path.name
    stray.parent.mkdir()
    path.rename(stray)
    output = results.parent / "leaderboard.md"
    refused = bench("leaderboard", "--results-dir", str(results), "--output", str(output))
    error_line(refused, 2, str(stray), "config.dataset", "'digits'", "(mnist5k/)", "records/digits/")
    assert not output.exists()


def test_a_valid_mnist5k_record_copied_into_the_digits_folder_is_refused(results: Path) -> None:
    committed = sorted((REPO / "results" / "records" / "mnist5k").glob("*.json"))
    if not committed:
        pytest.skip("no committed mnist5k record in this checkout")
    copy = records.records_dir(results) / "digits" / committed[0].name
    shutil.copy(committed[0], copy)
    refused = bench("leaderboard", "--results-dir", str(results), "--output", str(results.parent / "lb.md"), "--check")
    error_line(refused, 2, str(copy), "config.dataset: 'mnist5k' does not match", "(digits/)")


def test_every_committed_record_validates() -> None:
    if not records.records_dir(REPO / "results").is_dir():
        pytest.skip("no committed records in this checkout")
    assert records.load_all(REPO / "results")  # a BenchError would name each record that fails, and why


def test_bench_run_measures_a_cell_again_when_its_record_is_invalid(results: Path) -> None:
    path = spoil(results, lambda r: r.update(checks={"randomness": 123}))
    rerun = bench("run", *ONE_CELL, "--results-dir", str(results))
    assert rerun.exit_code == 0, (rerun.output, rerun.exception)
    assert statuses(rerun) == {("none", "fgsm"): "done"}
    assert any("is invalid (checks.randomness" in line for line in stderr_lines(rerun)), stderr_lines(rerun)
    records.validate(json.loads(path.read_text()), path)


# -- 3. shipped weights checked against the records -----------------------------------------------------------------

def shipped_checkpoint(results: Path) -> tuple[str, Path]:
    (rec_path,) = record_files(results)
    (name,) = json.loads(rec_path.read_text())["models"]
    return name, results / "models" / name


def tamper(folder: Path, update_meta: bool) -> str:
    """Flip a byte of the weights (and, if asked, put their new SHA-256 into meta.json); the new SHA-256."""
    weights = folder / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01
    weights.write_bytes(bytes(data))
    sha = hashlib.sha256(data).hexdigest()
    if update_meta:
        meta = json.loads((folder / META).read_text())
        meta["weights_sha256"] = sha
        (folder / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return sha


def test_tampered_shipped_weights_with_an_updated_meta_are_refused_naming_the_records(results: Path,
                                                                                      tmp_path: Path) -> None:
    name, folder = shipped_checkpoint(results)
    (rec_path,) = record_files(results)
    measured = json.loads(rec_path.read_text())["models"][name]
    before = rec_path.read_bytes()
    sha = tamper(folder, update_meta=True)
    refused = bench("run", *ONE_CELL, "--results-dir", str(results), BENCH_CACHE=str(tmp_path / "fresh-cache"))
    line = error_line(refused, 2, f"have SHA-256 {sha}", f"1 record(s) name SHA-256 {measured}", str(rec_path), name,
                      "git checkout -- ", "delete those records")
    assert "corrupted" not in line
    assert rec_path.read_bytes() == before  # nothing was measured over it
    assert not (tmp_path / "fresh-cache" / "models" / name / META).exists()


def test_corrupted_shipped_weights_cited_by_records_say_corrupted_and_are_never_retrained_over(
        results: Path, tmp_path: Path) -> None:
    name, folder = shipped_checkpoint(results)
    (rec_path,) = record_files(results)
    before = rec_path.read_bytes()
    tamper(folder, update_meta=False)
    refused = bench("run", *ONE_CELL, "--results-dir", str(results), BENCH_CACHE=str(tmp_path / "fresh-cache"))
    line = error_line(refused, 2, f"shipped checkpoint {folder} is corrupted", str(rec_path), name, "git checkout -- ")
    assert "other weights" not in line and "not shipped" not in refused.stderr
    assert not (tmp_path / "fresh-cache" / "models" / name / META).exists()
    assert rec_path.read_bytes() == before


def test_a_corrupted_cache_checkpoint_is_restored_from_the_shipped_one(results: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    restored = bench("run", *ONE_CELL, "--results-dir", str(results), BENCH_CACHE=str(cache))
    assert restored.exit_code == 0 and statuses(restored) == {("none", "fgsm"): "skipped"}
    name, shipped = shipped_checkpoint(results)
    tamper(cache / "models" / name, update_meta=False)
    again = bench("run", *ONE_CELL, "--results-dir", str(results), BENCH_CACHE=str(cache))
    assert again.exit_code == 0, (again.output, again.exception)
    assert statuses(again) == {("none", "fgsm"): "skipped"}  # the same weights: its record stands
    assert any("corrupted" in line and "restored it from" in line for line in stderr_lines(again)), again.stderr
    assert (cache / "models" / name / WEIGHTS).read_bytes() == (shipped / WEIGHTS).read_bytes()


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)


SPEC = {"dataset": "toy", "arch": "tiny", "seed": 0}


@pytest.fixture
def store_logs(caplog: pytest.LogCaptureFixture):
    import logging

    logger = logging.getLogger("benchmark")
    old = logger.propagate
    logger.propagate = True
    caplog.set_level(logging.WARNING, logger="benchmark")
    yield caplog
    logger.propagate = old


def test_a_corrupted_cache_checkpoint_no_record_cites_is_rebuilt_with_a_warning(tmp_path: Path, store_logs) -> None:
    store = ModelStore(tmp_path / "cache", shipped=tmp_path / "results" / "models")
    meta = store.get_or_build("classifier", SPEC, Tiny(), lambda m: {"test_accuracy": 1.0})
    tamper(store.folder("classifier", SPEC), update_meta=False)
    built: list[int] = []
    store.get_or_build("classifier", SPEC, Tiny(), lambda m: built.append(1) or {"test_accuracy": 1.0})
    assert built == [1]
    (warning,) = [r.getMessage() for r in store_logs.records]
    assert "corrupted" in warning and str(store.folder("classifier", SPEC)) in warning and "rebuilding" in warning
    assert meta["key"] == json.loads((store.folder("classifier", SPEC) / META).read_text())["key"]


def test_a_checkpoint_that_cannot_be_cached_is_used_from_memory(tmp_path: Path, store_logs, no_space_in) -> None:
    no_space_in(str(tmp_path / "cache"))
    store = ModelStore(tmp_path / "cache", shipped=None)
    module = Tiny()
    meta = store.get_or_build("classifier", SPEC, module, lambda m: {"test_accuracy": 1.0})
    from safetensors.torch import save

    assert meta["weights_sha256"] == hashlib.sha256(save(dict(module.state_dict()))).hexdigest()
    assert any("could not write checkpoint" in r.getMessage() and "No space left on device" in r.getMessage()
               for r in store_logs.records)
    assert not (store.folder("classifier", SPEC) / META).exists() and not leftovers(tmp_path)


# -- 4. every cache detects a corrupt entry and rebuilds it ---------------------------------------------------------

MNIST5K_DAMAGE = {
    "garbage": lambda path: path.write_bytes(b"not an npz at all"),
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:1000]),
    "pickled": lambda path: path.write_bytes(pickle.dumps({"x": np.zeros((2, 28, 28)), "y": [0, 1]})),
    "pickled-array": lambda path: np.savez(path.with_suffix(""), x=np.array([{"a": 1}], dtype=object),
                                           y=np.zeros(1)),
    "wrong-shape": lambda path: np.savez(path.with_suffix(""), x=np.zeros((5, 8, 8), np.uint8),
                                         y=np.zeros(5, np.int64)),
}


@pytest.mark.parametrize("damage", sorted(MNIST5K_DAMAGE))
def test_a_corrupt_mnist5k_cache_is_reported_and_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         store_logs, damage: str) -> None:
    from benchmark.data.builtin import Mnist5k

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    x, y, _, _ = Mnist5k().arrays(tmp_path, False)
    cached = tmp_path / "data" / "mnist5k.npz"
    assert cached.is_file() and x.shape == (5000, 28, 28) and x.dtype == np.uint8
    MNIST5K_DAMAGE[damage](cached)
    again_x, again_y, _, _ = Mnist5k().arrays(tmp_path, False)
    assert np.array_equal(again_x, x) and np.array_equal(again_y, y)
    (warning,) = [r.getMessage() for r in store_logs.records]
    assert "corrupt" in warning and str(cached) in warning and "rebuilding" in warning and "\n" not in warning
    store_logs.clear()
    Mnist5k().arrays(tmp_path, False)  # rebuilt: read from the cache again, silently
    assert not store_logs.records


def test_a_data_cache_that_cannot_be_written_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          store_logs, no_space_in) -> None:
    from benchmark.data.builtin import Mnist5k

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    no_space_in("mnist5k.npz")
    x, _, _, _ = Mnist5k().arrays(tmp_path, False)
    assert x.shape == (5000, 28, 28) and not (tmp_path / "data" / "mnist5k.npz").exists()
    assert any("could not write cached data" in r.getMessage() for r in store_logs.records)
    assert not leftovers(tmp_path)


def test_a_corrupt_folder_data_set_cache_is_reported_and_rebuilt(tmp_path: Path, store_logs) -> None:
    from PIL import Image

    from benchmark.data.folder import read_image_folder

    root = tmp_path / "shapes"
    for split in ("train", "test"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((4, 4), 60 * i + (100 if label == "b" else 0), np.uint8)).save(
                    root / split / label / f"{i}.png")
    first = read_image_folder(root, tmp_path / "cache")
    (cached,) = (tmp_path / "cache").glob("folder-*.npz")
    cached.write_bytes(cached.read_bytes()[: len(cached.read_bytes()) // 2])
    again = read_image_folder(root, tmp_path / "cache")
    assert np.array_equal(first.train_x, again.train_x) and np.array_equal(first.test_y, again.test_y)
    (warning,) = [r.getMessage() for r in store_logs.records]
    assert "corrupt" in warning and str(cached) in warning


def test_corrupt_cached_adversarial_inputs_are_reported_and_regenerated(digits, digits_classifier, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         store_logs) -> None:
    from safetensors.torch import save_file

    from benchmark.core.registry import ATTACKS
    from benchmark.engine.adversarial import _artifact_path, generate

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    model, _ = digits_classifier
    points = digits.test_points(16)
    key = {"test": "faults", "n": 16}

    def run():
        return generate(ATTACKS.build("fgsm"), model, points.x, points.y, (8 / 255,), 0, 16, torch.device("cpu"),
                        cache_key=key)

    first = run()
    path = _artifact_path(key)
    for damage in ("garbage", "wrong-shape"):
        if damage == "garbage":
            path.write_bytes(b"\0" * 64)
        else:
            save_file({"eps0": torch.zeros(3, 1, 8, 8), "seconds": torch.tensor(1.0)}, str(path))
        store_logs.clear()
        again = run()
        assert torch.equal(again.per_eps[0], first.per_eps[0])
        (warning,) = [r.getMessage() for r in store_logs.records]
        assert "cached adversarial inputs" in warning and "corrupt" in warning and "regenerating" in warning
    store_logs.clear()
    assert torch.equal(run().per_eps[0], first.per_eps[0]) and not store_logs.records  # rebuilt, read silently


def test_adversarial_inputs_that_cannot_be_cached_are_a_warning(digits, digits_classifier, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch, store_logs,
                                                                no_space_in) -> None:
    from benchmark.core.registry import ATTACKS
    from benchmark.engine.adversarial import generate

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    no_space_in(str(tmp_path / "adversarial"))
    model, _ = digits_classifier
    points = digits.test_points(8)
    adv = generate(ATTACKS.build("fgsm"), model, points.x, points.y, (8 / 255,), 0, 8, torch.device("cpu"),
                   cache_key={"test": "no-space"})
    assert adv.per_eps[0].shape == points.x.shape
    assert any("could not cache adversarial inputs" in r.getMessage() for r in store_logs.records)
    assert not leftovers(tmp_path)


# -- 5. a plugin that exits at import -------------------------------------------------------------------------------

@pytest.fixture
def exiting_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """A fresh defense registry served by ``exitplug 1.0`` (on sys.path): one entry point calls sys.exit() at import,
    one raises KeyboardInterrupt only when ``EXITPLUG_CTRL_C`` is set, one is fine."""
    modules = {
        "exitplug_exits": "import sys\nsys.exit('exitplug: cannot go on')\n",
        "exitplug_bare": "raise SystemExit\n",
        "exitplug_ctrl_c": "import os\nif os.environ.get('EXITPLUG_CTRL_C'):\n    raise KeyboardInterrupt\n",
        "exitplug_fine": "class Fine:\n    name = ''\n",
    }
    for module, source in modules.items():
        (tmp_path / f"{module}.py").write_text(source)
    dist_info = tmp_path / "exitplug-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: exitplug\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(textwrap.dedent("""\
        [bench.test-exiting]
        exits = exitplug_exits
        bare-exit = exitplug_bare
        ctrl-c = exitplug_ctrl_c
        fine = exitplug_fine:Fine
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    yield Registry("defense", "bench.test-exiting")
    for module in modules:
        sys.modules.pop(module, None)


def test_a_plugin_calling_sys_exit_at_import_is_named_and_skipped(exiting_plugin: Registry) -> None:
    assert exiting_plugin.names() == ["fine"]  # ctrl-c is a module that registers nothing (and did not fail)
    assert exiting_plugin.broken == {"exits": "exitplug 1.0: SystemExit: exitplug: cannot go on",
                                     "bare-exit": "exitplug 1.0: SystemExit"}
    message = str(pytest.raises(BenchError, exiting_plugin.get, "exit").value)
    assert message.endswith("(plugins that failed to load: bare-exit, exits)")


def test_ctrl_c_while_a_plugin_loads_is_the_users_and_goes_through(exiting_plugin: Registry,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXITPLUG_CTRL_C", "1")
    with pytest.raises(KeyboardInterrupt):
        exiting_plugin.names()


@pytest.fixture(scope="module")
def broken_plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bench-plugin-broken`` (tests/plugins; it includes a module that calls sys.exit() at import) built into a
    wheel and installed into a site folder, as tests/test_plugins.py does."""
    pytest.importorskip("setuptools", reason="building the plugin wheel without build isolation needs setuptools")
    root = tmp_path_factory.mktemp("broken-plugin")
    source = root / "src"
    shutil.copytree(REPO / "tests" / "plugins" / "bench_plugin_broken", source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    built = subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir", "-w",
                                  str(root / "wheels"), str(source)],
                           capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert built.returncode == 0, built.stdout + built.stderr
    installed = subprocess.run(pip + ["install", "--no-deps", "--no-compile", "--no-index", "--target",
                                      str(root / "site"), *map(str, (root / "wheels").glob("*.whl"))],
                               capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return root / "site"


def test_the_cli_works_with_a_plugin_that_exits_at_import(broken_plugin_site: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(broken_plugin_site),
                                                                      os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1", "BENCH_QUIET": "1"}
    env.pop("BENCH_DISABLE_PLUGIN_AUTOLOAD", None)
    proc = subprocess.run([sys.executable, "-m", "benchmark.cli", "list", "defenses"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "this plugin exits at import" in proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if "'exiting-defense'" in line]
    assert line.startswith("bench: warning: defense plugin 'exiting-defense' failed to load")
    assert "bench-plugin-broken 0.0.1: SystemExit" in line and line.endswith("continuing without it")
    assert "feature-squeezing" in proc.stdout and "exiting-defense" not in proc.stdout


# -- 6. Ctrl-C and SIGTERM ------------------------------------------------------------------------------------------

SLOW_AFTER_FIRST_CELL = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # even where the parent shell ignores SIGINT
import benchmark.engine.cells as cells
real, seen = cells.evaluate_cell, []

def slow(*args, **kwargs):  # the first cell runs at once; any later one waits, so the signal finds the grid running
    seen.append(1)
    if len(seen) > 1:
        time.sleep(600)
    return real(*args, **kwargs)

cells.evaluate_cell = slow
from benchmark.cli import main
main(sys.argv[1:], prog_name="bench")
"""


@pytest.mark.parametrize("signum, code, words", [
    (signal.SIGINT, 130, "interrupted (Ctrl-C)"),
    (signal.SIGTERM, 143, "terminated (SIGTERM)"),
])
def test_a_signal_during_bench_run_says_what_was_kept_and_exits_with_its_code(
        tmp_path: Path, signum: int, code: int, words: str) -> None:
    results = tmp_path / "results"
    args = ["run", *TWO_CELLS, "--results-dir", str(results)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_AFTER_FIRST_CELL, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT
        while not record_files(results) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None and record_files(results), proc.communicate()
        time.sleep(1.0)  # into the second cell's wait
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, (proc.returncode, stdout, stderr)
    assert "Traceback" not in stderr and "Aborted!" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"bench: {words}: 1 cell(s) finished in this run"), lines
    assert str(results) in lines[-1] and "rerun the same command to resume" in lines[-1]
    assert len(record_files(results)) == 1 and not leftovers(results)

    resumed = bench(*args)
    assert resumed.exit_code == 0, (resumed.output, resumed.exception)
    assert sorted(statuses(resumed).values()) == ["done", "skipped"]


def test_sigterm_handler_is_put_back_after_bench_run(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    bench("run", "--dataset", "no-such-data-set", "--results-dir", str(tmp_path / "r"))
    assert signal.getsignal(signal.SIGTERM) is before


# -- 7. bench run's table: robust means right when clean and attacked, then the worst case per budget ---------------

def test_the_run_table_counts_robust_only_where_clean_is_right_and_ends_with_the_worst_case(results: Path) -> None:
    def half_wrong_when_clean(rec: dict[str, Any]) -> None:
        n = rec["config"]["n"]
        rec["outcomes"]["clean_correct"] = [0] * 5 + [1] * (n - 5)  # wrong on five clean inputs ...
        rec["outcomes"]["adv_correct"] = [[1] * n for _ in rec["config"]["eps"]]  # ... right on all attacked ones

    spoil(results, half_wrong_when_clean)
    shown = bench("run", *ONE_CELL, "--results-dir", str(results))
    assert shown.exit_code == 0, (shown.output, shown.exception)
    assert statuses(shown) == {("none", "fgsm"): "skipped"}
    cells, worst = shown.stdout.split("\n\n", 1)
    (row,) = [line.split() for line in cells.splitlines()[2:] if line.strip()]
    clean, robust = float(row[3]), float(row[5])
    assert clean == 75.0 and robust == 75.0 and robust <= clean  # plain adversarial accuracy would say 100
    assert worst.startswith("worst case over these attacks, per budget")
    (worst_row,) = [line.split() for line in worst.splitlines()[3:] if line.strip()]
    assert worst_row[:2] == ["none", "8/255"] and float(worst_row[2]) == float(worst_row[3]) == 75.0
    assert worst_row[4:] == ["53-89", "20"]  # the 95% Wilson interval of 15 of 20
