"""Result records: one JSON file per evaluation cell, the source of truth for the leaderboard.

A cell is (data set, classifier, defense, attack, threat model, budgets, n, seed); its record id is a hash of that
normalised config, so a rerun finds finished cells and skips them. Records are written atomically, so an interrupted
run never leaves a partial one. The schema (version 1):

``config``      the cell: dataset, model, defense, attack, threat, eps (sorted floats, in the attack's own norm for a
                fixed-eps attack: L2 for pgd-l2, else L-infinity), n, seed; and, under the adaptive and transfer
                threat models only (so that oblivious ids never changed), ``threat_options``: adaptive
                {eot_samples, eval_draws}, transfer {substitute, substitute_seed}
``attack``      norm, kind, implementation and options of the attack; ``randomised``, ``needs_gradients`` and
                ``runs_black_box`` (a gradient attack with a gradient-free member, as AutoAttack runs Square; absent
                in records older than it: false) (adaptive: plus ``gradients``, how each purifier is
                differentiated: exact, bpda-surrogate or bpda-identity, and ``eot_samples``, draws per gradient)
``defense``     traits and options of the defense; ``eval_draws``, draws of the pipeline per evaluated input (an
                example is correct only if correct in all; above 1 only for randomised defenses under adaptive)
``checks``      sanity checks (:mod:`benchmark.sanity`): the defense's probes (``randomness`` declared, observed
                across seeds and repeatable for a seed; ``optimises_in_forward``; input ``gradients`` through the
                adaptive pipeline, shares of all-zero and non-finite ones; ``probe_points``) and
                ``largest_perturbation`` per budget in the budget's norm (absent from records that predate it)
``substitute``  transfer: store key, architecture, seed, test accuracy and weights' SHA-256 of the attacked substitute;
                else null
``classifier``  store key, clean test accuracy and training-time defense of the classifier
``models``      the weights measured: every checkpoint of the defended pipeline (classifier, the defense's own models)
                as ``"<kind>/<key>": weights SHA-256`` (absent from records that predate it; see
                :mod:`benchmark.instances`)
``test_points_sha256``  hash of the exact test points (pixels and labels)
``outcomes``    per example (lists of length n; per-budget lists aligned with ``config.eps``):
                ``label``; ``clean_correct`` (defended pipeline on the clean input); ``adv_correct`` (defended
                pipeline on the adversarial input, per budget); ``undefended_adv_correct`` (the classifier alone,
                per budget); ``defense_ms`` (defense time per example); ``unbounded`` (minimal attacks: whether the
                unclipped attack fooled the classifier, and its L0/L2/Linf size; null for fixed-eps attacks);
                ``detected`` and ``clean_detected`` (defenses that detect; else null)
``summary``     clean_accuracy and robust_accuracy per budget (derived from outcomes, for humans)
``provenance``  package versions, git commit, device, start time, wall seconds
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BenchError
from .fileio import atomic_write_text
from .hashing import config_hash

SCHEMA = 1
RECORDS_SUBDIR = "records"
CONFIG_KEYS = ("dataset", "model", "defense", "attack", "threat", "eps", "n", "seed")
THREAT_OPTIONS = "threat_options"  # in the config of adaptive and transfer cells only


def normalise_config(config: dict[str, Any]) -> dict[str, Any]:
    out = {k: config[k] for k in CONFIG_KEYS}
    out["eps"] = sorted(float(e) for e in out["eps"])
    out["n"], out["seed"] = int(out["n"]), int(out["seed"])
    if config.get(THREAT_OPTIONS) is not None:
        out[THREAT_OPTIONS] = dict(config[THREAT_OPTIONS])
    return out


def record_id(config: dict[str, Any]) -> str:
    return config_hash(normalise_config(config))


def records_dir(results_dir: Path) -> Path:
    return Path(results_dir) / RECORDS_SUBDIR


def record_path(results_dir: Path, config: dict[str, Any]) -> Path:
    c = normalise_config(config)
    return records_dir(results_dir) / c["dataset"] / f"{record_id(c)}.json"


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise ValueError(what)


def validate(record: dict[str, Any]) -> None:
    """Raise ValueError naming the first thing wrong with ``record``."""
    _check(record.get("schema") == SCHEMA, f"schema is {record.get('schema')!r}, expected {SCHEMA}")
    config = record.get("config")
    _check(isinstance(config, dict) and all(k in config for k in CONFIG_KEYS), f"config lacks one of {CONFIG_KEYS}")
    _check(record.get("id") == record_id(config), "id does not match the hash of its config")
    n, n_eps = config["n"], len(config["eps"])
    out = record.get("outcomes")
    _check(isinstance(out, dict), "outcomes missing")

    def per_example(name: str, values: Any) -> None:
        _check(isinstance(values, list) and len(values) == n, f"outcomes.{name} must hold n={n} values")

    for key in ("label", "clean_correct", "defense_ms"):
        per_example(key, out.get(key))
    for key in ("adv_correct", "undefended_adv_correct"):
        rows = out.get(key)
        _check(isinstance(rows, list) and len(rows) == n_eps, f"outcomes.{key} must hold one list per budget")
        for row in rows:
            per_example(key, row)
            _check(all(v in (0, 1) for v in row), f"outcomes.{key} must hold 0 or 1")
    _check(all(v in (0, 1) for v in out["clean_correct"]), "outcomes.clean_correct must hold 0 or 1")
    _check(isinstance(record.get("checks", {}), dict), "checks must be an object")
    unbounded = out.get("unbounded")
    if unbounded is not None:
        for key in ("found", "l0", "l2", "linf"):
            per_example(f"unbounded.{key}", unbounded.get(key))
    if out.get("detected") is not None:
        _check(len(out["detected"]) == n_eps, "outcomes.detected must hold one list per budget")
        per_example("clean_detected", out.get("clean_detected"))


@dataclass(frozen=True)
class LoadedRecord:
    path: Path
    data: dict[str, Any]


def save(results_dir: Path, record: dict[str, Any]) -> Path:
    validate(record)
    path = record_path(results_dir, record["config"])
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return path


def exists(results_dir: Path, config: dict[str, Any]) -> bool:
    return record_path(results_dir, config).exists()


def load_one(results_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The cell's record, or None when there is none or it does not parse (then the cell is simply run again)."""
    try:
        return json.loads(record_path(results_dir, config).read_text())
    except (OSError, ValueError):
        return None


def load_all(results_dir: Path) -> list[LoadedRecord]:
    """Every record under ``results_dir``, sorted by path. One that does not parse or validate is a BenchError
    naming it: a leaderboard is never built from a record that was silently skipped."""
    root = records_dir(results_dir)
    found: list[LoadedRecord] = []
    bad: list[str] = []
    for path in sorted(root.rglob("*.json")) if root.exists() else []:
        try:
            data = json.loads(path.read_text())
            validate(data)
        except (ValueError, KeyError, TypeError) as exc:
            bad.append(f"{path}: {exc}")
            continue
        found.append(LoadedRecord(path, data))
    if bad:
        raise BenchError(f"{len(bad)} record(s) do not parse or validate; fix or delete them: " + "; ".join(bad))
    return found
