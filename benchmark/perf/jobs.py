"""Whole ``bench run`` jobs timed as a user runs them: a fresh process each (``python -m benchmark.cli run ...``).

* ``bench perf first-command`` (:func:`first_command`): the README's main job, ``bench run --defense
  feature-squeezing --attack paper`` on mnist5k, the first thing a new user runs. Targets: 300 s cold, 90 s warm.

  - ``cold``: an empty ``BENCH_CACHE``, as on a fresh clone. The classifier is not trained: a run restores the
    checkpoints its records measured from its results folder's ``models/`` (``ModelStore(shipped=<results>/models)``
    in :func:`benchmark.engine.runner.run`), so the repository's ``results/models`` is copied into the run's fresh
    results folder first, as a clone has it under its default ``results``. ``models_restored`` and ``models_trained``
    say which happened (a model the copy lacks is trained, and that time counted).
  - ``warm``: the same job again with the caches the first run filled (the restored classifier, the decoded data and
    the adversarial inputs, which depend only on the classifier, the attack, the budgets and the points), into a fresh
    results folder: a user's second run of the job. The 90 s target.
  - ``attacks recomputed``: the same cache with its adversarial inputs removed, into a fresh results folder: every
    attack runs again, the cost of the attacks themselves on a warm process. No target.
  - ``cold, --attack all`` (with ``--all``): every registered attack from an empty cache; long, so optional.

* ``bench perf threads`` (:func:`concurrency`): two ``bench run`` processes at once on a machine with few cores. A
  small grid (digits, none against fgsm, bim, pgd, n=360) runs alone, then twice concurrently (separate results
  folders), per OpenMP wait policy, with ``threads`` torch threads per process. Two processes do twice the work on
  the same cores, so the pair should take about twice as long as one alone: ``ratio`` (concurrent / alone) at most
  about 2 means that they share the cores; well above 2, that they fight for them (on two cores with two threads
  each, a spinning wait policy, ``ACTIVE``, burns the core the other process needs). The CLI sets ``PASSIVE`` by
  default before torch loads. Each row's environment is passed explicitly (``OMP_WAIT_POLICY``,
  ``OMP_NUM_THREADS``; and ``--threads`` when ``bench run`` takes it), so it says what it measured. Models and data
  come from one cache, trained by an untimed warm-up run; each timed process gets an empty adversarial cache of its
  own (a cache folder whose other entries link to the shared ones), so that no run reuses another's attacks.

Each process's output is captured; a failing run raises with the tail of its stderr.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from benchmark.perf.timing import best_of, timed

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "results" / "models"  # the checkpoints the committed records measured
MAIN_JOB = ("--dataset", "mnist5k", "--defense", "feature-squeezing")
TARGETS_S = {"cold": 300.0, "warm": 90.0}  # the README's main job: --attack paper, n=100
SMALL_GRID = ("--dataset", "digits", "--defense", "none")


def bench_argv(*args: str) -> list[str]:
    """``bench ARGS`` as a fresh Python process of this interpreter."""
    return [sys.executable, "-m", "benchmark.cli", *args]


def shown(args: Sequence[str]) -> str:
    """``bench ARGS`` as a user would type it (temporary folders left out)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--results-dir":
            skip = True
            continue
        out.append(a)
    return " ".join(["bench", *out])


def child_env(cache: Path, **omp: str | None) -> dict[str, str]:
    """This process's environment with ``BENCH_CACHE`` = ``cache``, the repository importable, and each OpenMP
    variable in ``omp`` set (None: removed, so that the child's own default applies)."""
    env = {**os.environ, "BENCH_CACHE": str(cache), "BENCH_QUIET": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    for key, value in omp.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _check(proc: subprocess.CompletedProcess | subprocess.Popen, args: Sequence[str], stderr: str) -> None:
    if proc.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"`{shown(args)}` exited with {proc.returncode}:\n{tail}")


def run_bench(args: Sequence[str], env: dict[str, str], cwd: Path) -> None:
    """One ``bench`` process, to its end; raises if it fails."""
    proc = subprocess.run(bench_argv(*args), check=False, env=env, cwd=cwd, capture_output=True, text=True)
    _check(proc, args, proc.stderr)


def run_concurrently(jobs: Sequence[tuple[Sequence[str], dict[str, str]]], cwd: Path) -> None:
    """``bench`` processes started together; returns when all have ended (output to files: no pipe can fill)."""
    procs = []
    for i, (args, env) in enumerate(jobs):
        out = open(cwd / f".proc-{i}.out", "w+")  # noqa: SIM115 (closed below)
        procs.append((subprocess.Popen(bench_argv(*args), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT),
                      args, out))
    for proc, _, _ in procs:
        proc.wait()
    for proc, args, out in procs:
        out.seek(0)
        text = out.read()
        out.close()
        _check(proc, args, text)


def run_takes_threads() -> bool:
    """Whether ``bench run`` has a ``--threads`` option (then the thread count is passed that way too)."""
    from benchmark.cli.run import run

    return any("--threads" in getattr(p, "opts", ()) for p in run.params)


def _model_sources(cache: Path, shipped: Path) -> tuple[int, int]:
    """Checkpoints in ``cache`` restored from ``shipped`` (same weights) and trained here."""
    restored = trained = 0
    for meta in sorted((cache / "models").glob("*/*/meta.json")):
        source = shipped / meta.parent.relative_to(cache / "models") / "meta.json"
        same = source.is_file() and \
            json.loads(source.read_text())["weights_sha256"] == json.loads(meta.read_text())["weights_sha256"]
        restored, trained = restored + same, trained + (not same)
    return restored, trained


def first_command(n: int = 100, attack: str = "paper", include_all: bool = False, threads: int | None = None,
                  shipped: Path = SHIPPED, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Rows ``cold``, ``warm``, ``attacks recomputed`` (and ``cold, --attack all``): wall seconds of the main job, each a fresh
    ``bench run`` process; ``threads`` sets ``OMP_NUM_THREADS`` (and ``--threads``) of the children (None: theirs)."""
    root = Path(tempfile.mkdtemp(prefix="bench-perf-first-"))
    omp = {"OMP_NUM_THREADS": str(threads)} if threads is not None else {}
    flags = ["--threads", str(threads)] if threads is not None and run_takes_threads() else []
    is_main_job = attack == "paper" and n == 100
    rows: list[dict[str, Any]] = []

    def job(label: str, cache: Path, attack_spec: str, cache_state: str, target: str | None) -> None:
        if progress:
            progress(label)
        results = root / f"results-{len(rows)}"
        if shipped.is_dir():
            shutil.copytree(shipped, results / "models")  # as a clone has them under its default results folder
        args = ["run", *MAIN_JOB, "--attack", attack_spec, "--n", str(n), *flags, "--quiet",
                "--results-dir", str(results)]
        seconds, _ = timed(lambda: run_bench(args, child_env(cache, **omp), root))
        restored, trained = _model_sources(cache, shipped)
        goal = TARGETS_S[target] if target and is_main_job and attack_spec == attack else None
        rows.append({"run": label, "command": shown(args), "cache": cache_state, "seconds": round(seconds, 1),
                     "target_s": goal, "meets_target": None if goal is None else seconds <= goal,
                     "models_restored": restored, "models_trained": trained})

    try:
        cache = root / "cache"
        job("cold", cache, attack, "empty (shipped weights in the results folder)", "cold")
        job("warm", cache, attack, "warm (models, data and adversarial inputs cached)", "warm")
        shutil.rmtree(cache / "adversarial", ignore_errors=True)
        job("attacks recomputed", cache, attack, "warm; adversarial inputs removed (every attack runs)", None)
        if include_all:
            job("cold, --attack all", root / "cache-all", "all", "empty (shipped weights in the results folder)", None)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def _private_cache(shared: Path, folder: Path) -> Path:
    """A cache folder whose entries link to ``shared``'s, but for an empty adversarial folder of its own."""
    folder.mkdir(parents=True)
    for entry in shared.iterdir():
        if entry.name != "adversarial":
            (folder / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return folder


def concurrency(n: int = 360, attacks: str = "fgsm,bim,pgd", policies: Sequence[str] = ("PASSIVE", "ACTIVE"),
                threads: int = 2, processes: int = 2, repeats: int = 1,
                progress: Callable[[str], None] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per wait policy: the small grid alone and ``processes`` copies at once (best of ``repeats``, interleaved);
    rows and a note of the job. A policy ``unset`` leaves ``OMP_WAIT_POLICY`` out of the children's environment."""
    root = Path(tempfile.mkdtemp(prefix="bench-perf-threads-"))
    shared = root / "cache"
    shared.mkdir()
    flags = ["--threads", str(threads)] if run_takes_threads() else []
    grid = ["run", *SMALL_GRID, "--attack", attacks, "--n", str(n), *flags, "--quiet"]
    counter = [0]

    def env_of(policy: str, cache: Path) -> dict[str, str]:
        return child_env(cache, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY=None if policy == "unset" else policy)

    def one(policy: str) -> tuple[list[str], dict[str, str]]:
        counter[0] += 1
        cache = _private_cache(shared, root / f"cache-{counter[0]}")
        return [*grid, "--results-dir", str(root / f"results-{counter[0]}")], env_of(policy, cache)

    queued: dict[str, list[Any]] = {}

    def solo(name: str) -> Callable[[], None]:
        def go() -> None:
            if progress:
                progress(name)
            run_bench(*queued[name].pop(0), root)
        return go

    def together(name: str) -> Callable[[], None]:
        def go() -> None:
            if progress:
                progress(name)
            run_concurrently(queued[name].pop(0), root)
        return go

    try:
        if progress:
            progress("warm-up (trains and caches the classifier)")
        run_bench([*grid, "--results-dir", str(root / "results-warm-up")], env_of(policies[0], shared), root)
        # every run's folders are made before any clock starts; each call of a candidate takes the next of its own
        for policy in policies:
            queued[f"{policy} alone"] = [one(policy) for _ in range(repeats)]
            queued[f"{policy} concurrent"] = [[one(policy) for _ in range(processes)] for _ in range(repeats)]
        candidates = {name: (solo if name.endswith("alone") else together)(name) for name in queued}
        best = best_of(candidates, repeats=repeats, warmup=0)  # interleaved rounds: every run, in order, per round
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = []
    for policy in policies:
        a, c = best[f"{policy} alone"], best[f"{policy} concurrent"]
        rows.append({"OMP_WAIT_POLICY": policy, "OMP_NUM_THREADS": threads, "processes": processes,
                     "alone_s": round(a, 2), "concurrent_s": round(c, 2), "ratio": round(c / a, 2),
                     "meets_target": c / a <= 2.0})
    note = {"job": shown(grid), "threads_flag": bool(flags)}
    return rows, note
