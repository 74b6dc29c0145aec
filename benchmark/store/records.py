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
``checks``      sanity checks (:mod:`benchmark.engine.sanity`): the defense's probes (``randomness`` declared, observed
                across seeds and repeatable for a seed; ``optimises_in_forward``; input ``gradients`` through the
                adaptive pipeline, shares of all-zero and non-finite ones; ``probe_points``) and
                ``largest_perturbation`` per budget in the budget's norm (absent from records that predate it)
``substitute``  transfer: store key, architecture, seed, test accuracy and weights' SHA-256 of the attacked substitute;
                else null
``classifier``  store key, clean test accuracy and training-time defense of the classifier
``models``      the weights measured: every checkpoint of the defended pipeline (classifier, the defense's own models)
                as ``"<kind>/<key>": weights SHA-256`` (absent from records that predate it; see
                :mod:`benchmark.report.instances`)
``test_points_sha256``  hash of the exact test points (pixels and labels)
``outcomes``    per example (lists of length n; per-budget lists aligned with ``config.eps``):
                ``label``; ``clean_correct`` (defended pipeline on the clean input); ``adv_correct`` (defended
                pipeline on the adversarial input, per budget); ``undefended_adv_correct`` (the classifier alone,
                per budget); ``defense_ms`` (defense time per example); ``unbounded`` (minimal attacks: whether the
                unclipped attack fooled the classifier, and its L0/L2/Linf size; null for fixed-eps attacks);
                ``detected`` and ``clean_detected`` (defenses that detect; else null); ``draws_correct``
                (a pipeline evaluated over ``defense.eval_draws`` > 1 draws: per example the draws it was right
                in, ``clean`` and ``adv`` per budget; ``clean_correct``/``adv_correct`` hold "right in all")
``summary``     clean_accuracy and robust_accuracy per budget (derived from outcomes, for humans; over several draws
                also robust_accuracy_mean_over_draws)
``provenance``  package versions, git commit, device, start time, wall seconds

Every record is checked against this schema whenever it is read or written (:func:`validate`). The machine-readable
form is ``benchmark/store/record.schema.json`` (JSON Schema 2020-12, shipped in the package), checked with the
``jsonschema`` package:

- ``schema`` is 1; ``id`` 16 hex digits.
- ``config``: exactly the keys above. ``threat`` one of oblivious, adaptive, transfer; ``dataset`` a data set name
  (``[a-z0-9][a-z0-9._-]*``); ``model`` a model name, which may carry ``@`` and a weights prefix (``resnet@1a2b3c4d``);
  ``defense`` and ``attack`` registered names (``[a-z0-9][a-z0-9._@-]*``), each optionally with options
  ``name(key=value,...)``, joined by ``+`` into compositions (``jpeg(quality=50)+pixeldefend(eps_defend=16/255)``);
  ``eps`` a non-empty list of numbers >= 0; ``n`` a positive integer; ``seed`` an integer; ``threat_options`` an
  object (eot_samples and eval_draws positive integers, substitute a model name, substitute_seed an integer).
- ``models``: an object from checkpoint names ``"<kind>/<key>"`` (``classifier/82a1969ff823d696``: lower-case
  letters, digits, '.', '_', '-' on either side of one '/') to 64-hex SHA-256 digests; ``substitute`` null or an
  object whose ``key`` is a store key and ``weights_sha256`` a SHA-256.
- ``outcomes``: ``label`` non-negative integers; ``clean_correct``, ``found`` (of ``unbounded``) and
  ``clean_detected`` 0/1; ``adv_correct``, ``undefended_adv_correct`` and ``detected`` lists of 0/1 lists;
  ``defense_ms`` and the ``unbounded`` sizes numbers; ``unbounded``, ``detected``, ``clean_detected`` may be null.
- ``checks`` (when present): ``randomness`` {declared, observed, repeatable: booleans}; ``optimises_in_forward``
  {declared, observed, differentiated: booleans} (a plain boolean in records of the probe's first version);
  ``gradients`` {zero, nonfinite: shares in [0, 1]}; ``probe_points`` an integer >= 0; ``largest_perturbation``
  numbers >= 0. Keys the schema does not name are allowed in every object but ``config``.
- ``attack``, ``defense``, ``classifier``, ``summary``: objects whose known fields have the types above (norm one of
  linf, l2, l0; kind one of fixed-eps, minimal; accuracies in [0, 1]).

What JSON Schema cannot say is checked in Python: ``id`` is the hash of ``config``; every per-example list holds
``config.n`` values and every per-budget list (``adv_correct``, ``undefended_adv_correct``, ``detected``,
``checks.largest_perturbation``) one entry per budget of ``config.eps``; a record read from a file sits at
``records/<config.dataset>/<id>.json``. A record that breaks any of this is named with the field and the reason, and
no leaderboard is built while one exists.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Iterable

from benchmark.core.errors import BenchError
from benchmark.store.fileio import atomic_write_text
from benchmark.store.hashing import config_hash

log = logging.getLogger(__name__)

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


SCHEMA_FILE = "record.schema.json"  # beside this module, shipped as package data


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise ValueError(what)


def _fast_items(standard: Any) -> Any:
    """The ``items`` keyword, with a fast path for the long per-example lists of a record: when every item passes a
    plain Python test that implies the item schema (0/1 integers, integers >= 0, numbers), the list is valid without
    validating each item through jsonschema (which takes a minute over the committed records); otherwise the
    standard implementation finds and words the error. The schema file stays standard JSON Schema."""
    tests = {  # each runs at C speed (no Python call per item); bool is not int here, as in JSON Schema
        '{"enum": [0, 1]}': lambda xs: set(map(type, xs)) <= {int} and set(xs) <= {0, 1},
        '{"minimum": 0, "type": "integer"}': lambda xs: set(map(type, xs)) <= {int} and min(xs, default=0) >= 0,
        '{"type": "number"}': lambda xs: set(map(type, xs)) <= {int, float},
    }

    def items(validator: Any, subschema: Any, instance: Any, schema: Any) -> Any:
        if isinstance(instance, list) and isinstance(subschema, dict) and "prefixItems" not in schema:
            test = tests.get(json.dumps(subschema, sort_keys=True))
            if test is not None and test(instance):
                return
        yield from standard(validator, subschema, instance, schema)

    return items


@lru_cache(maxsize=1)
def schema_validator() -> Any:
    """A jsonschema validator of :data:`SCHEMA_FILE` (checked itself against its metaschema)."""
    import jsonschema

    schema = json.loads(files("benchmark.store").joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    fast = jsonschema.validators.extend(cls, {"items": _fast_items(cls.VALIDATORS["items"])})
    return fast(schema)


def _field(path: Iterable[Any]) -> str:
    """``outcomes.adv_correct[0][3]``: where in a record a value is."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the record"


def _schema_problem(error: Any) -> str:
    """One line for the most relevant jsonschema error: the field and the reason."""
    from jsonschema.exceptions import best_match

    if error.validator in ("oneOf", "anyOf") and error.context:
        types = [e.validator_value for e in error.context if e.validator == "type" and not e.relative_path]
        if len(types) == len(error.context):  # null or an object, and the value is neither
            return f"{_field(error.absolute_path)}: {error.instance!r} is not of type {' or '.join(map(str, types))}"
        deeper = [e for e in error.context if not (e.validator == "type" and not e.relative_path)]
        return _schema_problem(best_match(deeper))
    described = error.schema.get("description") if isinstance(error.schema, dict) else None
    if error.validator == "pattern" and described:
        reason = f"{error.instance!r} is not {described}"
    elif error.validator == "enum":
        reason = f"{error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
    else:
        reason = error.message
    if "propertyNames" in error.absolute_schema_path:
        return f"{_field(error.absolute_path)}: key {reason}"
    return f"{_field(error.absolute_path)}: {reason}"


def validate(record: Any, path: Path | None = None) -> None:
    """Raise ValueError naming the field of ``record`` that is wrong and why (the schema of the module docstring);
    ``path``: the file it was read from, which must be ``records/<dataset>/<id>.json``."""
    from jsonschema.exceptions import best_match

    error = best_match(schema_validator().iter_errors(record))
    if error is not None:
        raise ValueError(_schema_problem(error))
    config, out = record["config"], record["outcomes"]
    n, n_eps = config["n"], len(config["eps"])
    _check(record["id"] == record_id(config), f"id: {record['id']} is not the hash of its config "
                                              f"({record_id(config)}); the config was edited")

    def per_example(name: str, values: list[Any]) -> None:
        _check(len(values) == n, f"{name}: holds {len(values)} values, not one per example (config.n = {n})")

    def per_budget(name: str, rows: list[Any]) -> None:
        _check(len(rows) == n_eps, f"{name}: holds {len(rows)} entries, not one per budget of config.eps ({n_eps})")

    for key in ("label", "clean_correct", "defense_ms"):
        per_example(f"outcomes.{key}", out[key])
    for key in ("adv_correct", "undefended_adv_correct", "detected"):
        if out.get(key) is not None:
            per_budget(f"outcomes.{key}", out[key])
            for i, row in enumerate(out[key]):
                per_example(f"outcomes.{key}[{i}]", row)
    if out.get("clean_detected") is not None:
        per_example("outcomes.clean_detected", out["clean_detected"])
    draws = out.get("draws_correct")
    if draws is not None:
        most = int((record.get("defense") or {}).get("eval_draws", 1))
        per_example("outcomes.draws_correct.clean", draws["clean"])
        per_budget("outcomes.draws_correct.adv", draws["adv"])
        for name, row in [("clean", draws["clean"])] + [(f"adv[{i}]", r) for i, r in enumerate(draws["adv"])]:
            per_example(f"outcomes.draws_correct.{name}", row)
            _check(max(row, default=0) <= most, f"outcomes.draws_correct.{name}: counts up to {max(row)} correct "
                                                f"draws, more than defense.eval_draws ({most})")
    for key, values in (out.get("unbounded") or {}).items():
        if isinstance(values, list):
            per_example(f"outcomes.unbounded.{key}", values)
    largest = (record.get("checks") or {}).get("largest_perturbation")
    if largest is not None:
        per_budget("checks.largest_perturbation", largest)
    if path is not None:
        path = Path(path)
        _check(path.parent.name == config["dataset"],
               f"config.dataset: {config['dataset']!r} does not match the folder the record is in "
               f"({path.parent.name}/); records of {config['dataset']} belong in records/{config['dataset']}/")
        _check(path.name == f"{record['id']}.json", f"id: the file is named {path.name}, not {record['id']}.json")


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


def load_one(results_dir: Path, config: dict[str, Any], warn: bool = True) -> dict[str, Any] | None:
    """The cell's record, or None when there is none or it does not parse or validate (then the cell is simply run
    again; an invalid record is named in a warning first, unless ``warn`` is false)."""
    path = record_path(results_dir, config)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        validate(data, path)
    except ValueError as exc:
        if warn:
            log.warning("record %s is invalid (%s); running its cell again", path, exc)
        return None
    return data


def load_all(results_dir: Path) -> list[LoadedRecord]:
    """Every record under ``results_dir``, sorted by path. One that does not parse or validate is a BenchError
    naming it: a leaderboard is never built from a record that was silently skipped."""
    root = records_dir(results_dir)
    found: list[LoadedRecord] = []
    bad: list[str] = []
    for path in sorted(root.rglob("*.json")) if root.exists() else []:
        try:
            data = json.loads(path.read_text())
            validate(data, path)
        except (ValueError, KeyError, TypeError) as exc:
            bad.append(f"{path}: {exc}")
            continue
        found.append(LoadedRecord(path, data))
    if bad:
        raise BenchError(f"{len(bad)} record(s) do not parse or validate; fix or delete them: " + "; ".join(bad))
    return found
