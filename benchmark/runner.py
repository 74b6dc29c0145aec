"""Running a grid of evaluation cells (defense x attack) and writing one record per cell.

A cell whose record exists is skipped, so an interrupted run resumes where it stopped; each record is written
atomically the moment its cell finishes, so Ctrl-C or a kill never loses a finished cell. Classifiers are built once
per training configuration and adversarial inputs once per (attacked model, attack) (see :mod:`benchmark.adversarial`):
the classifier (oblivious) or the substitute (transfer) for every defense at once, the defended pipeline (adaptive)
per defense (see :mod:`benchmark.threats`).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import records
from .adversarial import AdversarialSet, batch_seed, generate, predict
from .attack import Attack
from .checks import check_defended
from .data import Dataset, Split, load_dataset
from .defense import Defense, DefenseContext, build_defense
from .device import resolve_device
from .errors import BenchError, CellFailed
from .hashing import config_hash
from .progress import progress
from .sanity import largest_perturbations, probe_defense
from .provenance import git_commit, versions
from .registry import ATTACKS, DATASETS, MODELS
from .store import ModelStore
from .threats import ThreatOptions, adaptive_target, config_options, eval_draws, substitute_for
from .vocab import AttackKind, Threat
from .zoo import classifier_spec, get_classifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    dataset: str = "mnist5k"
    model: str = "resnet"
    defenses: tuple[str, ...] = ("none",)
    attacks: tuple[str, ...] = ("fgsm",)
    eps: tuple[float, ...] | None = None  # None: the data set's defaults (the paper's budgets)
    n: int | None = 100
    threat: Threat = Threat.OBLIVIOUS
    threat_options: ThreatOptions = ThreatOptions()
    seed: int = 0
    device: str = "auto"
    results_dir: Path = Path("results")
    batch_size: int = 250
    data_root: str | None = None
    download: bool = False


@dataclass
class CellResult:
    defense: str
    attack: str
    status: str  # "done", "skipped" (record existed) or "failed"
    record: dict[str, Any] | None = None
    message: str = ""


@dataclass(frozen=True)
class _Source:
    """The model an attack runs on for some defenses, and what their records say about it."""

    defenses: list[str]
    model: nn.Module
    cache_key: dict[str, Any]
    attack_options: dict[str, Any]  # recorded beside the attack's own options (adaptive: gradients, EOT)
    substitute: dict[str, Any] | None  # transfer: the attacked substitute


@dataclass
class _CleanEval:
    """The defended pipeline on the clean test points: computed once per defense, shared by its records."""

    correct: torch.Tensor
    detected: torch.Tensor | None
    ms_per_image: torch.Tensor
    checks: dict[str, Any]  # the defense's sanity probes (benchmark.sanity)


def ensure_writable(results_dir: Path) -> None:
    try:
        records.records_dir(results_dir).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=records.records_dir(results_dir), prefix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BenchError(f"results directory {results_dir} is not writable ({exc.strerror}); "
                         "choose another with --results-dir") from None


def cell_config(plan: RunPlan, defense: str, attack: str, eps: tuple[float, ...], n: int) -> dict[str, Any]:
    """The cell's config; ``eps`` are the attack's own budgets (:meth:`Attack.budgets`)."""
    return records.normalise_config({
        "dataset": plan.dataset, "model": plan.model, "defense": defense, "attack": attack,
        "threat": plan.threat.value, "eps": list(eps), "n": n, "seed": plan.seed,
        records.THREAT_OPTIONS: config_options(plan.threat, plan.model, plan.seed, plan.threat_options),
    })


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def defended_predictions(
    defense: Defense, classifier: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device, seed: int,
    draw: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(predictions, detector flags or None, defense milliseconds per example) of the defended pipeline on ``x``.

    ``draw`` numbers independent draws of a randomised pipeline (draw 0 is seeded as before draws existed)."""
    preds, flags, ms = [], [], []
    label = "defense:" + defense.name + (f"#draw{draw}" if draw else "")
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        torch.manual_seed(batch_seed(seed, label, start))
        _sync(device)
        t0 = time.perf_counter()
        purified = defense.purify(xb) if defense.purifies else xb
        if defense.classifies:  # the decision is the defense's own (a vote): its cost is the defense's too
            with torch.no_grad():
                decided = defense.classify(classifier, purified).argmax(1)
        _sync(device)
        elapsed_ms = (time.perf_counter() - t0) * 1000
        check_defended(xb, purified, defense.name)
        preds.append((decided if defense.classifies else predict(classifier, purified)).cpu())
        detected = defense.detect(xb, classifier) if defense.detects else None
        if detected is not None:
            flags.append(detected.cpu())
        ms.append(torch.full((len(xb),), elapsed_ms / len(xb)))
    return torch.cat(preds), (torch.cat(flags) if flags else None), torch.cat(ms)


def defended_correct(
    defense: Defense, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
    device: torch.device, seed: int, draws: int = 1,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Per example, whether the pipeline classifies ``x`` correctly in every one of ``draws`` independent draws (one
    lucky draw must not make a randomised defense look robust); detector flags and timings of the first draw."""
    preds, flags, ms = defended_predictions(defense, classifier, x, batch_size, device, seed)
    correct = preds == y
    for draw in range(1, draws):
        correct &= defended_predictions(defense, classifier, x, batch_size, device, seed, draw)[0] == y
    return correct, flags, ms


def _ints(t: torch.Tensor) -> list[int]:
    return [int(v) for v in t.tolist()]


def _floats(t: torch.Tensor, digits: int = 5) -> list[float]:
    return [round(float(v), digits) for v in t.tolist()]


def build_record(
    config: dict[str, Any], attack: Attack, defense: Defense, classifier_meta: dict[str, Any], points: Split,
    test_hash: str, clean: _CleanEval, adv: AdversarialSet, adv_correct: list[torch.Tensor],
    undefended_correct: list[torch.Tensor], detected: list[torch.Tensor] | None, device: torch.device,
    started: float, defense_seconds: float, source: _Source | None = None, draws: int = 1,
) -> dict[str, Any]:
    n_eps = len(config["eps"])
    robust = [float(c.float().mean()) for c in adv_correct]
    outcomes = {
        "label": _ints(points.y),
        "clean_correct": _ints(clean.correct),
        "adv_correct": [_ints(c) for c in adv_correct],
        "undefended_adv_correct": [_ints(c) for c in undefended_correct],
        "defense_ms": _floats(clean.ms_per_image, 4),
        "unbounded": None if adv.unbounded is None else {
            "found": _ints(adv.unbounded["found"]),
            **{k: _floats(adv.unbounded[k]) for k in ("l0", "l2", "linf")},
        },
        "detected": None if detected is None else [_ints(d) for d in detected],
        "clean_detected": None if clean.detected is None else _ints(clean.detected),
    }
    assert len(adv_correct) == n_eps
    return {
        "schema": records.SCHEMA,
        "id": records.record_id(config),
        "config": config,
        "attack": {"norm": attack.norm.value, "kind": attack.kind.value, "implementation": attack.library,
                   "options": {**attack.options(), **(source.attack_options if source else {})},
                   "randomised": attack.randomised, "needs_gradients": attack.needs_gradients},
        "defense": {"traits": defense.traits(), "options": defense.options(), "eval_draws": draws},
        "checks": {**clean.checks, "largest_perturbation": largest_perturbations(
            points.x, adv.per_eps, attack.norm.value if attack.kind == AttackKind.FIXED else "linf")},
        "substitute": source.substitute if source else None,
        "classifier": {"key": classifier_meta["key"], "test_accuracy": classifier_meta["metrics"]["test_accuracy"],
                       "training_defense": classifier_meta["spec"].get("training_defense")},
        "test_points_sha256": test_hash,
        "outcomes": outcomes,
        "summary": {"clean_accuracy": round(float(clean.correct.float().mean()), 5),
                    "robust_accuracy": [round(r, 5) for r in robust]},
        "provenance": {
            "versions": versions(), "git_commit": git_commit(), "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "attack_seconds": round(adv.seconds, 3), "defense_seconds": round(defense_seconds, 3),
        },
    }


def _resolve(plan: RunPlan) -> tuple[dict[str, Defense], dict[str, Attack]]:
    """Check every name before any work starts: a typo must not surface an hour into a run."""
    DATASETS.get(plan.dataset)
    MODELS.get(plan.model)
    if plan.threat == Threat.TRANSFER:
        MODELS.get(substitute_for(plan.model, plan.seed)[0])
    for name, value in vars(plan.threat_options).items():
        if value < 1:
            raise BenchError(f"--{name.replace('_', '-')} {value} must be a positive integer")
    defenses = {name: build_defense(name) for name in plan.defenses}
    attacks = {name: ATTACKS.get(name).factory() for name in plan.attacks}
    if plan.batch_size < 1:
        raise BenchError(f"--batch-size {plan.batch_size} must be a positive integer")
    return defenses, attacks


def run(plan: RunPlan, store: ModelStore | None = None) -> list[CellResult]:
    """Evaluate every (defense, attack) cell of ``plan``; returns one result per cell, in grid order."""
    defenses, attacks = _resolve(plan)
    git_commit()  # pin the commit of the code this process loaded, before anyone commits during a long run
    device = resolve_device(plan.device)
    ensure_writable(plan.results_dir)
    store = store or ModelStore()
    dataset = load_dataset(plan.dataset, plan.data_root, plan.download)
    points = dataset.test_points(plan.n)
    eps = plan.eps or dataset.default_eps
    test_hash = points.sha256()
    n = len(points)

    results: dict[tuple[str, str], CellResult] = {}
    todo: dict[str, list[str]] = {}
    missing_checks: dict[str, list[dict[str, Any]]] = {}
    for d in defenses:
        for a in attacks:
            old = records.load_one(plan.results_dir, cell_config(plan, d, a, attacks[a].budgets(eps), n))
            changed = None if old is None else attack_changed(old, attacks[a])
            if old is not None and changed is None:
                results[(d, a)] = CellResult(d, a, "skipped", message="record exists")
                if "checks" not in old:
                    missing_checks.setdefault(d, []).append(old)
            else:
                if changed:
                    log.warning("%s x %s: %s; running the cell again", d, a, changed)
                todo.setdefault(d, []).append(a)

    _add_missing_checks(plan, dataset, points, defenses, missing_checks, device, store)

    # defenses that share a training configuration share a classifier and its adversarial inputs
    groups: dict[str, list[str]] = {}
    for d in todo:
        key = config_hash(classifier_spec(dataset, plan.model, defenses[d], plan.seed))
        groups.setdefault(key, []).append(d)

    substitute = None
    if plan.threat == Threat.TRANSFER and todo:
        arch, seed = substitute_for(plan.model, plan.seed)
        model, meta = get_classifier(dataset, arch, build_defense("none"), seed, device, store)
        substitute = (model, {"key": meta["key"], "arch": arch, "seed": seed,
                              "test_accuracy": meta["metrics"]["test_accuracy"]})

    cells_bar = progress(total=sum(len(a) for a in todo.values()), desc="cells", unit="cell", position=0, leave=True)
    for members in groups.values():
        _run_group(plan, dataset, points, test_hash, eps, {d: defenses[d] for d in members}, attacks, todo, device,
                   store, results, cells_bar, substitute)
    cells_bar.close()
    return [results[(d, a)] for d in defenses for a in attacks]


def _probe(plan: RunPlan, classifier: nn.Module, defense: Defense, points: Split, device: torch.device
           ) -> dict[str, Any]:
    return probe_defense(classifier, defense, points.x.to(device), points.y.to(device),
                         plan.threat_options.eot_samples, plan.seed)


def _add_missing_checks(plan: RunPlan, dataset: Dataset, points: Split, defenses: dict[str, Defense],
                        stale: dict[str, list[dict[str, Any]]], device: torch.device, store: ModelStore) -> None:
    """Records written before sanity checks existed get the defense's probes added (they do not depend on the
    attack), so that every record carries them without re-running its attack."""
    for d, recs in stale.items():
        classifier, _ = get_classifier(dataset, plan.model, defenses[d], plan.seed, device, store)
        defenses[d].prepare(DefenseContext(dataset, classifier, device, store, plan.seed))
        checks = _probe(plan, classifier, defenses[d], points, device)
        for rec in recs:
            records.save(plan.results_dir, {**rec, "checks": checks})
        log.info("%s: sanity checks added to %d earlier record(s)", d, len(recs))


def attack_changed(record: dict[str, Any], attack: Attack) -> str | None:
    """Why ``record`` no longer describes what ``attack`` does now (its implementation or one of its options
    changed since it was written), or None. Record ids hash the cell, not the attack's settings, so that tuning an
    attack re-runs its cells instead of leaving numbers from the old attack on the leaderboard."""
    want = json.loads(json.dumps({"implementation": attack.library, "options": attack.options()}))
    have = record.get("attack") or {}
    have_options = have.get("options") or {}
    if have.get("implementation") != want["implementation"]:
        return f"the attack's implementation changed ({have.get('implementation')} -> {want['implementation']})"
    diff = sorted(k for k, v in want["options"].items() if have_options.get(k) != v)
    if diff:
        return f"the attack's options changed ({', '.join(diff)})"
    return None


def _run_group(plan, dataset: Dataset, points: Split, test_hash: str, eps, defenses: dict[str, Defense],
               attacks: dict[str, Attack], todo: dict[str, list[str]], device, store, results, cells_bar,
               substitute: tuple[nn.Module, dict[str, Any]] | None = None) -> None:
    first = next(iter(defenses.values()))
    classifier, meta = get_classifier(dataset, plan.model, first, plan.seed, device, store)
    clean: dict[str, _CleanEval] = {}
    for name, defense in defenses.items():
        try:
            defense.prepare(DefenseContext(dataset, classifier, device, store, plan.seed))
            draws = eval_draws(plan.threat, defense, plan.threat_options)
            correct, flags, ms = defended_correct(defense, classifier, points.x, points.y, plan.batch_size, device,
                                                  plan.seed, draws)
            clean[name] = _CleanEval(correct, flags, ms, _probe(plan, classifier, defense, points, device))
        except CellFailed as exc:
            for a in todo[name]:
                results[(name, a)] = CellResult(name, a, "failed", message=str(exc))
                cells_bar.update(1)
    for a, attack in attacks.items():
        users = [d for d in clean if a in todo[d]]
        if not users:
            continue
        attack_eps = attack.budgets(eps)
        key = {"classifier": meta["key"], "attack": a, "options": attack.options(), "eps": list(attack_eps),
               "test": test_hash, "seed": plan.seed, "batch_size": plan.batch_size, "threat": plan.threat.value}
        for source in _sources(plan, attack, users, defenses, classifier, key, substitute):
            started = time.time()
            try:
                adv = generate(attack, source.model, points.x, points.y, attack_eps, plan.seed, plan.batch_size,
                               device, source.cache_key)
            except CellFailed as exc:
                for d in source.defenses:
                    results[(d, a)] = CellResult(d, a, "failed", message=str(exc))
                    cells_bar.update(1)
                continue
            undefended = [predict_all(classifier, x_adv, plan.batch_size, device) == points.y for x_adv in adv.per_eps]
            for d in source.defenses:
                results[(d, a)] = _evaluate_cell(plan, d, a, attack, defenses[d], classifier, meta, points, test_hash,
                                                 attack_eps, clean[d], adv, undefended, device, started, source)
                cells_bar.update(1)


def _sources(plan: RunPlan, attack: Attack, users: list[str], defenses: dict[str, Defense], classifier: nn.Module,
             key: dict[str, Any], substitute: tuple[nn.Module, dict[str, Any]] | None) -> list[_Source]:
    """Whom the attack runs on for the defenses ``users``: one shared source (oblivious, transfer) or one per defense
    (adaptive). ``key`` is the oblivious cache key; the others extend it, so no artifact is ever shared by mistake."""
    if plan.threat == Threat.OBLIVIOUS:
        return [_Source(users, classifier, key, {}, None)]
    if plan.threat == Threat.TRANSFER:
        assert substitute is not None
        model, info = substitute
        # the substitute's inputs do not depend on the target either: any classifier of the data set reuses them
        return [_Source(users, model, {**key, "classifier": info["key"]}, {}, info)]
    sources = []
    for d in users:
        model, how = adaptive_target(classifier, defenses[d], plan.threat_options, attack.needs_gradients)
        cache_key = {**key, "defense": d, "defense_options": defenses[d].options(), **how}
        sources.append(_Source([d], model, cache_key, how, None))
    return sources


@torch.no_grad()
def predict_all(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    return torch.cat([predict(model, x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


def _evaluate_cell(plan, d, a, attack, defense, classifier, meta, points, test_hash, eps, clean, adv, undefended,
                   device, started, source: _Source | None = None) -> CellResult:
    config = cell_config(plan, d, a, eps, len(points))
    draws = eval_draws(plan.threat, defense, plan.threat_options)
    t0 = time.perf_counter()
    try:
        adv_correct, detected = [], []
        for x_adv in adv.per_eps:
            correct, flags, _ = defended_correct(defense, classifier, x_adv, points.y, plan.batch_size, device,
                                                 plan.seed, draws)
            adv_correct.append(correct)
            if flags is not None:
                detected.append(flags)
    except CellFailed as exc:
        return CellResult(d, a, "failed", message=str(exc))
    record = build_record(config, attack, defense, meta, points, test_hash, clean, adv, adv_correct, undefended,
                          detected or None, device, started, time.perf_counter() - t0, source, draws)
    records.save(plan.results_dir, record)
    return CellResult(d, a, "done", record=record)
