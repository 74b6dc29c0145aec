"""Executors: claims on cells shared by concurrent runs, grid progress, checkpoints as bytes, and the Ray executor
(same records as the local one, killed workers retried, a killed driver resumed) on a two-node Ray cluster started on
this machine's loopback. The Ray tests are skipped when Ray is not installed (``pip install -e ".[ray]"``)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmark.engine.ray_executor import local_cluster_env
from benchmark.store import records
from benchmark.store.locks import CellClaims

# a Ray cluster started by these tests listens on loopback only and is patient with workers that start slowly on a
# busy machine (Ray reads these when it is imported and when its processes start)
local_cluster_env()

from test_cli import bench, record_files, stderr_lines  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GRID = ["--dataset", "digits", "--defense", "none,feature-squeezing", "--attack", "fgsm,deepfool", "--n", "40"]

pytestmark = pytest.mark.usefixtures("restore_cli_state", "digits_classifier")  # the classifier: trained once


def table(stdout: str) -> dict[tuple[str, str], str]:
    """(defense, attack) -> status, from `bench run`'s table."""
    cells = stdout.split("\n\n")[0]  # the per-budget worst case follows a blank line
    return {(r[0], r[1]): r[2] for r in (line.split() for line in cells.splitlines()[2:] if line.strip())}


def outcomes(results: Path) -> dict[str, dict]:
    """Record id -> per-example outcomes, less the defense's measured milliseconds (a timing, never reproducible)."""
    out = {}
    for path in record_files(results):
        rec = json.loads(path.read_text())
        records.validate(rec)
        kept = {k: v for k, v in rec["outcomes"].items() if k != "defense_ms"}
        out[rec["id"]] = {"outcomes": kept, "classifier": rec["classifier"], "config": rec["config"]}
    return out


def leaderboard_without_timings(results: Path, tmp_path: Path) -> str:
    board, site = tmp_path / f"lb-{results.name}.md", tmp_path / f"site-{results.name}"
    result = bench("leaderboard", "--results-dir", str(results), "--output", str(board), "--html", str(site))
    assert result.exit_code == 0, result.output
    text = (site / "full.md").read_text()  # every table, the per-cell timings (ms/img) included
    header = next(line for line in text.splitlines() if "| ms/img" in line)
    column = [c.strip() for c in header.split("|")].index("ms/img")
    lines = []
    for line in text.splitlines():
        cells = line.split("|")
        if len(cells) > column and line.startswith("|") and "---" not in line and "ms/img" not in line:
            cells[column] = " <ms> "
        lines.append("|".join(cells))
    return "\n".join(lines)


# -- several local runs on one results directory ----------------------------------------------------------------

def test_a_claimed_cell_is_left_to_its_owner(tmp_path: Path) -> None:
    results = tmp_path / "results"
    args = ["run", "--dataset", "digits", "--defense", "none", "--attack", "fgsm,bim", "--eps", "8/255", "--n", "20",
            "--results-dir", str(results)]
    config = records.normalise_config({"dataset": "digits", "model": "resnet", "defense": "none", "attack": "bim",
                                       "threat": "oblivious", "eps": [8 / 255], "n": 20, "seed": 0})
    other_run = CellClaims(results)  # plays a second `bench run` that is evaluating none x bim right now
    assert other_run.try_claim(records.record_id(config))

    first = bench(*args, BENCH_QUIET=None)
    assert first.exit_code == 0, (first.output, first.exception)
    assert table(first.stdout) == {("none", "fgsm"): "done", ("none", "bim"): "busy"}
    assert not records.exists(results, config)
    assert "running" in first.stderr and "failed 0" in first.stderr  # the grid's bar
    assert re.search(r"^bench: 2 cells: 1 done, 1 busy in [\d.]+ s$", first.stderr, re.M), first.stderr

    other_run.release_all()
    second = bench(*args, "-q")
    assert second.exit_code == 0 and second.stderr == ""
    assert table(second.stdout) == {("none", "fgsm"): "skipped", ("none", "bim"): "done"}
    assert records.exists(results, config)


def test_two_runs_at_once_evaluate_each_cell_once(tmp_path: Path) -> None:
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "benchmark.cli", "run", "--dataset", "digits", "--defense", "none",
           "--attack", "fgsm,bim,deepfool,fgm,pgd,uniform-noise", "--eps", "8/255", "--n", "30",
           "--results-dir", str(results), "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    try:
        outputs = [run.communicate(timeout=900) for run in runs]  # two imports of torch on a busy machine: minutes
    finally:
        for run in runs:
            run.kill()  # no-op for a finished run; never leave one behind a failed test
    for run, (out, err) in zip(runs, outputs):
        assert run.returncode == 0, err
    statuses = [table(out) for out, _ in outputs]
    cells = set(statuses[0])
    assert len(cells) == 6 and set(statuses[1]) == cells
    for cell in cells:
        done = [s[cell] for s in statuses].count("done")
        assert done == 1, (cell, statuses)  # never twice, never lost
        assert {s[cell] for s in statuses} <= {"done", "skipped", "busy"}
    files = record_files(results)
    assert len(files) == 6 and len(outcomes(results)) == 6  # one valid record per cell
    assert sorted(p for p in records.records_dir(results).rglob("*") if p.is_file()) == files  # nothing partial


# -- checkpoints as bytes ---------------------------------------------------------------------------------------

def test_a_model_pack_carries_checkpoints_to_another_store(tmp_path: Path, digits) -> None:
    import torch

    from benchmark.core.defense import build_defense
    from benchmark.store.model_store import ModelStore
    from benchmark.store.modelpack import RecordingStore, unpack
    from benchmark.training.zoo import get_classifier

    recording = RecordingStore()  # the session's store: the classifier is there already
    model, meta = get_classifier(digits, "resnet", build_defense("none"), 0, torch.device("cpu"), recording)
    pack = recording.pack()
    assert list(pack) == [f"classifier/{meta['key']}"]

    elsewhere = ModelStore(tmp_path / "worker-store")
    unpack(elsewhere, pack)
    copy, copy_meta = get_classifier(digits, "resnet", build_defense("none"), 0, torch.device("cpu"), elsewhere)
    assert copy_meta == meta
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), copy.state_dict().values()))
    unpack(elsewhere, pack)  # already there: nothing is written
    with pytest.raises(ValueError, match="not a checkpoint folder"):
        unpack(elsewhere, {"../escape": pack[f"classifier/{meta['key']}"]})


# -- the Ray executor without Ray, and its options without it -----------------------------------------------------

def test_ray_executor_without_ray_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails, as where Ray is not installed
    result = bench("run", "--dataset", "digits", "--defense", "none", "--attack", "fgsm", "--executor", "ray",
                   "--results-dir", str(tmp_path / "results"))
    assert result.exit_code == 2, (result.output, result.exception)
    (line,) = stderr_lines(result)
    assert line.startswith("bench: error: ") and 'pip install -e ".[ray]"' in line
    assert not (tmp_path / "results").exists()


def test_ray_options_need_the_ray_executor(tmp_path: Path) -> None:
    result = bench("run", "--dataset", "digits", "--defense", "none", "--attack", "fgsm", "--address", "auto",
                   "--results-dir", str(tmp_path / "results"))
    assert result.exit_code == 2
    (line,) = stderr_lines(result)
    assert line.startswith("bench: error: --address needs --executor ray"), line


# -- the Ray executor on a two-node cluster on loopback ---------------------------------------------------------

def _ray_processes() -> set[int]:
    """Ray's processes started from this directory (their command line names Ray's package, or Ray titled them
    ray::...; they inherit the working directory of the process that started the node)."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes()
            here = os.readlink(proc / "cwd") == os.getcwd()
        except OSError:
            continue
        if here and (b"/site-packages/ray/" in command or command.startswith(b"ray::")):
            found.add(int(proc.name))
    return found


def _kill(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def ray_cluster():
    """Two Ray nodes of one CPU each on this machine (Ray's own test utility), for the module's tests."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    failures = []
    for _ in range(3):
        before = _ray_processes()
        cluster = Cluster()
        try:
            cluster.add_node(num_cpus=1)  # the head
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes(timeout=300)
            break
        except Exception as exc:
            cluster.shutdown()
            # what a node that failed to start left behind (cluster.shutdown never knew of it): else they outlive
            # the tests, and the test process waits for them at its exit
            _kill(_ray_processes() - before)
            failures.append(f"{type(exc).__name__}: {exc}")
    else:
        # a raylet waits about 15 s (not configurable in Ray 2.60) for its dashboard agent to import Ray and report
        # its ports, then aborts: on an overloaded machine (seen at load 15 to 28 on 2 cores, where importing Ray
        # took 100 s of wall time for 0.8 s of CPU) the agent misses that, which says nothing about the executor
        pytest.skip(f"a Ray node could not start on this machine now ({'; '.join(failures)})")
    yield cluster
    cluster.shutdown()


def test_ray_gives_the_local_records_and_leaderboard(tmp_path: Path, ray_cluster) -> None:
    local, distributed = tmp_path / "local", tmp_path / "ray"
    first = bench("run", *GRID, "--results-dir", str(local), "-q")
    assert first.exit_code == 0, (first.output, first.exception)
    # the workers get a cache of their own: they train the classifier and attack it afresh
    second = bench("run", *GRID, "--results-dir", str(distributed), "--executor", "ray", "--address",
                   ray_cluster.address, "--worker-cache", str(tmp_path / "worker-cache"), "-q")
    assert second.exit_code == 0, (second.output, second.exception, second.stderr)
    assert set(table(second.stdout).values()) == {"done"}
    assert (tmp_path / "worker-cache" / "models" / "classifier").is_dir()
    assert outcomes(distributed) == outcomes(local)
    assert leaderboard_without_timings(distributed, tmp_path) == leaderboard_without_timings(local, tmp_path)


def _kill_cell_workers(plan: dict[str, int], killed: dict[str, int], stop: threading.Event) -> None:
    """Kill (SIGKILL) each Ray worker that is evaluating the cell named by a key of ``plan``, until that cell's
    workers were killed ``plan[cell]`` times. Ray titles a worker busy with a task ``ray::<task name>``.

    A killed worker keeps its title until it has exited, which on a loaded machine can take longer than one pass over
    /proc: each process is counted once, else one death would count as two and the cell's retry would be spared."""
    signalled: set[int] = set()
    while not stop.is_set():
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            pid = int(proc.name)
            for cell, times in plan.items():
                if title.startswith(f"ray::cell {cell}") and killed.get(cell, 0) < times and pid not in signalled:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    signalled.add(pid)
                    killed[cell] = killed.get(cell, 0) + 1
        time.sleep(0.01)


def test_a_killed_worker_is_retried_then_reported(tmp_path: Path, ray_cluster) -> None:
    results = tmp_path / "results"
    # none x bim dies once (then succeeds on its retry); none x fgsm dies every time (then fails); deepfool is spared
    plan, killed, stop = {"none x bim": 1, "none x fgsm": 2}, {}, threading.Event()
    killer = threading.Thread(target=_kill_cell_workers, args=(plan, killed, stop), daemon=True)
    killer.start()
    try:
        result = bench("run", "--dataset", "digits", "--defense", "none", "--attack", "fgsm,bim,deepfool",
                       "--eps", "8/255", "--n", "20", "--results-dir", str(results), "--executor", "ray",
                       "--address", ray_cluster.address, "--cell-retries", "1", "-q")
    finally:
        stop.set()
        killer.join()
    assert killed == plan
    assert result.exit_code == 2, (result.output, result.exception)
    assert table(result.stdout) == {("none", "fgsm"): "failed", ("none", "bim"): "done", ("none", "deepfool"): "done"}
    (line,) = stderr_lines(result)
    assert line.startswith("bench: error: cell none x fgsm failed: ") and "after 1 retries" in line, line
    assert sorted(r["config"]["attack"] for r in outcomes(results).values()) == ["bim", "deepfool"]


@pytest.mark.slow  # a second Python process (the driver) on top of the cluster
def test_a_killed_driver_resumes_without_duplicates(tmp_path: Path, ray_cluster) -> None:
    results = tmp_path / "results"
    args = ["run", "--dataset", "digits", "--defense", "none,feature-squeezing", "--attack", "fgsm,bim,deepfool",
            "--eps", "8/255", "--n", "30", "--results-dir", str(results), "--executor", "ray",
            "--address", ray_cluster.address, "-q"]
    driver = subprocess.Popen([sys.executable, "-m", "benchmark.cli", *args], cwd=ROOT, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not record_files(results) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert driver.poll() is None, f"the driver ended before it could be killed: {driver.stderr.read()}"
        assert record_files(results), "no record within the deadline"
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and anything it started, mid-grid
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    before = outcomes(results)  # every record the killed driver left parses and validates
    assert 1 <= len(before) < 6

    resumed = bench(*args)
    assert resumed.exit_code == 0, (resumed.output, resumed.exception, resumed.stderr)
    statuses = table(resumed.stdout)
    assert sorted(statuses.values()).count("skipped") == len(before)
    assert set(statuses.values()) == {"skipped", "done"}
    after = outcomes(results)
    assert len(after) == len(record_files(results)) == 6  # one record per cell, none twice
    assert {k: v for k, v in after.items() if k in before} == before  # finished records untouched
