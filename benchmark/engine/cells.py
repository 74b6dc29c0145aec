"""One evaluation cell (defense x attack), computed by the same function under every executor.

:func:`evaluate_cell` returns a cell's record without writing it: the local executor and the Ray driver write it. A
:class:`Workbench` holds what the cells of a run share, computed on first use and kept: classifiers (one per training
configuration), prepared defenses and their clean evaluations, and the latest adversarial inputs (one set per attacked
model and attack, see :mod:`benchmark.engine.adversarial`): the classifier (oblivious) or the substitute (transfer) for
every defense at once, the defended pipeline (adaptive) per defense (see :mod:`benchmark.engine.threats`). The local
executor keeps one workbench for the whole grid; a Ray task builds its own, seeded with what other tasks computed. Every
random draw is seeded per batch from the run's seed, so a cell's outcomes do not depend on the process that computed it
or on what ran there before.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from benchmark.core.attack import Attack
from benchmark.core.defense import Defense, DefenseContext, build_defense
from benchmark.core.errors import CellFailed
from benchmark.core.registry import ATTACKS
from benchmark.core.vocab import AttackKind, Threat
from benchmark.data.dataset import Dataset, Split, load_dataset
from benchmark.engine.adversarial import AdversarialSet, batch_seed, generate, predict
from benchmark.engine.checks import check_defended
from benchmark.engine.grid import CellResult, RunPlan, cell_config, why_stale
from benchmark.engine.provenance import git_commit, versions
from benchmark.engine.sanity import largest_perturbations, probe_defense
from benchmark.engine.threats import adaptive_target, eval_draws, substitute_for
from benchmark.store import records
from benchmark.store.hashing import config_hash
from benchmark.store.model_store import ModelStore, instances
from benchmark.training.zoo import UserModel, classifier_spec, get_classifier, user_classifier


@dataclass(frozen=True)
class AttackSource:
    """The model an attack runs on for a cell, and what the cell's record says about it."""

    model: nn.Module
    cache_key: dict[str, Any]  # of the adversarial inputs: cells with equal keys share them
    attack_options: dict[str, Any]  # recorded beside the attack's own options (adaptive: gradients, EOT)
    substitute: dict[str, Any] | None  # transfer: the attacked substitute


@dataclass(frozen=True)
class CleanEval:
    """The defended pipeline on the clean test points: computed once per defense, shared by its records."""

    correct: torch.Tensor
    detected: torch.Tensor | None
    ms_per_image: torch.Tensor
    checks: dict[str, Any]  # the defense's sanity probes (benchmark.engine.sanity)
    draw_counts: torch.Tensor  # per example, the evaluation draws it was right in


@dataclass(frozen=True)
class SharedAdversarial:
    """Adversarial inputs of one source and the undefended classifier's verdict on them: what cells whose sources
    have the same cache key reuse (in one process, or sent to other Ray tasks)."""

    adv: AdversarialSet
    undefended_correct: list[torch.Tensor]  # per budget, per example


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


def correct_draws(
    defense: Defense, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
    device: torch.device, seed: int, draws: int = 1,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Per example, in how many of ``draws`` independent draws the pipeline classifies ``x`` correctly (Croce et al.
    2022 re-evaluate a randomised defense's final inputs this way); detector flags and timings of the first draw."""
    preds, flags, ms = defended_predictions(defense, classifier, x, batch_size, device, seed)
    counts = (preds == y).long()
    for draw in range(1, draws):
        counts += (defended_predictions(defense, classifier, x, batch_size, device, seed, draw)[0] == y).long()
    return counts, flags, ms


def defended_correct(
    defense: Defense, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
    device: torch.device, seed: int, draws: int = 1,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Per example, whether the pipeline classifies ``x`` correctly in every one of ``draws`` independent draws (one
    lucky draw must not make a randomised defense look robust); detector flags and timings of the first draw."""
    counts, flags, ms = correct_draws(defense, classifier, x, y, batch_size, device, seed, draws)
    return counts == draws, flags, ms


@torch.no_grad()
def predict_all(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    return torch.cat([predict(model, x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


def adversarial_key(classifier_meta: dict[str, Any], name: str, attack: Attack, eps: Sequence[float], test_hash: str,
                    seed: int, batch_size: int, threat: Threat) -> dict[str, Any]:
    """The cache key of adversarial inputs crafted on a classifier (``bench run``'s cells and ``bench detect``
    share them): its weights, not only its training config, so that inputs crafted on other weights are never
    reused."""
    return {"classifier": classifier_meta["key"], "weights": classifier_meta["weights_sha256"], "attack": name,
            "options": attack.options(), "eps": list(eps), "test": test_hash, "seed": seed, "batch_size": batch_size,
            "threat": threat.value}


class Workbench:
    """What the cells of one run share, computed on first use. A failure (:class:`CellFailed`) is kept like a value,
    so every cell that needs the failed part reports the same error without recomputing it."""

    def __init__(self, plan: RunPlan, device: torch.device, store: ModelStore, defenses: dict[str, Defense] | None = None,
                 attacks: dict[str, Attack] | None = None, dataset: Dataset | None = None,
                 user_model: UserModel | None = None) -> None:
        """``defenses`` and ``attacks`` map names to instances to use instead of building them from the registries
        (a user's own objects); ``user_model`` is a classifier with the user's weights, used for every defense in
        place of the project's training of ``plan.model``."""
        self.plan, self.device, self.store = plan, device, store
        self.defenses = defenses if defenses is not None else {}
        self.attacks = attacks if attacks is not None else {}
        self.user_model = user_model
        self._user_classifier: tuple[nn.Module, dict[str, Any]] | None = None
        self.dataset = dataset or load_dataset(plan.dataset, plan.data_root, plan.download)
        self.points: Split = self.dataset.test_points(plan.n)
        self.test_hash = self.points.sha256()
        self.eps = plan.eps or self.dataset.default_eps
        self._classifiers: dict[str, tuple[nn.Module, dict[str, Any]]] = {}
        self._substitute: tuple[nn.Module, dict[str, Any]] | None = None
        self._models: dict[str, dict[str, str]] = {}  # defense -> the model instances its pipeline is made of
        self._clean: dict[str, CleanEval | CellFailed] = {}
        # the latest adversarial inputs only (they can be large), with the hash of their source's cache key
        self._adversarial: tuple[str, SharedAdversarial | CellFailed] | None = None

    # -- parts, each built once --------------------------------------------------------------------------------------
    def defense(self, name: str) -> Defense:
        if name not in self.defenses:
            self.defenses[name] = build_defense(name)
        return self.defenses[name]

    def attack(self, name: str) -> Attack:
        if name not in self.attacks:
            self.attacks[name] = ATTACKS.build(name)
        return self.attacks[name]

    def classifier_key(self, defense: str) -> str:
        """Defenses with the same key share a classifier (the same training configuration)."""
        if self.user_model is not None:
            return self.classifier(defense)[1]["key"]
        return config_hash(classifier_spec(self.dataset, self.plan.model, self.defense(defense), self.plan.seed))

    def classifier(self, defense: str) -> tuple[nn.Module, dict[str, Any]]:
        if self.user_model is not None:
            if self._user_classifier is None:
                u = self.user_model
                self._user_classifier = user_classifier(u.module, self.dataset, u.name, u.sha256, self.device,
                                                        self.store)
            return self._user_classifier
        key = self.classifier_key(defense)
        if key not in self._classifiers:
            self._classifiers[key] = get_classifier(self.dataset, self.plan.model, self.defense(defense),
                                                    self.plan.seed, self.device, self.store)
        return self._classifiers[key]

    def substitute(self) -> tuple[nn.Module, dict[str, Any]]:
        """Transfer: the separately trained classifier that is attacked instead, and its description."""
        if self._substitute is None:
            arch, seed = substitute_for(self.plan.model, self.plan.seed)
            model, meta = get_classifier(self.dataset, arch, build_defense("none"), seed, self.device, self.store)
            self._substitute = (model, {"key": meta["key"], "arch": arch, "seed": seed,
                                        "test_accuracy": meta["metrics"]["test_accuracy"],
                                        "weights_sha256": meta["weights_sha256"]})
        return self._substitute

    def prepare_defense(self, defense: str) -> nn.Module:
        """The defense's classifier, with the defense prepared on it (its own models built or loaded)."""
        classifier, meta = self.classifier(defense)
        with self.store.recording() as used:
            self.defense(defense).prepare(DefenseContext(self.dataset, classifier, self.device, self.store,
                                                         self.plan.seed))
        self._models.setdefault(defense, {}).update({**instances(meta), **used})
        return classifier

    def models(self, defense: str) -> dict[str, str]:
        """The model instances of ``defense``'s pipeline (its classifier and the defense's own models), as
        ``"<kind>/<key>": weights SHA-256``: the same training config retrained elsewhere gives other weights, and
        records of other weights must not be merged (see :mod:`benchmark.report.instances`)."""
        if defense not in self._models:
            self.prepare_defense(defense)
        return dict(sorted(self._models[defense].items()))

    def why_stale(self, record: dict[str, Any], defense: str, attack: str) -> str | None:
        """Why ``record`` of the cell (defense, attack) must be measured again, or None when it stands
        (:func:`benchmark.engine.grid.why_stale`, on the prepared defense)."""
        models = self.models(defense)  # prepares the defense, which settles its options
        return why_stale(record, self.attack(attack), models, self.defense(defense))

    def prepare(self, defense: str) -> None:
        """Build what the defense and its cells need (classifier, the defense's own models, the transfer substitute):
        a Ray model task calls this ahead of the cells."""
        self.prepare_defense(defense)
        if self.plan.threat == Threat.TRANSFER:
            self.substitute()

    def probe(self, defense: str) -> dict[str, Any]:
        """The defense's sanity probes (:func:`benchmark.engine.sanity.probe_defense`) on the prepared defense; they do not
        depend on the attack."""
        classifier, _ = self.classifier(defense)
        return probe_defense(classifier, self.defense(defense), self.points.x.to(self.device),
                             self.points.y.to(self.device), self.plan.threat_options.eot_samples, self.plan.seed)

    def clean(self, defense: str) -> CleanEval:
        if defense not in self._clean:
            try:
                self.prepare(defense)
                classifier, _ = self.classifier(defense)
                draws = eval_draws(self.plan.threat, self.defense(defense), self.plan.threat_options)
                counts, flags, ms = correct_draws(self.defense(defense), classifier, self.points.x, self.points.y,
                                                  self.plan.batch_size, self.device, self.plan.seed, draws)
                self._clean[defense] = CleanEval(counts == draws, flags, ms, self.probe(defense), counts)
            except CellFailed as exc:
                self._clean[defense] = exc
        return _value(self._clean[defense])

    def source(self, defense: str, attack: str) -> AttackSource:
        """Whom ``attack`` runs on for ``defense``'s cell. The oblivious key is extended by the others, so that no
        adversarial inputs are ever shared by mistake."""
        classifier, meta = self.classifier(defense)
        a = self.attack(attack)
        key = adversarial_key(meta, attack, a, a.budgets(self.eps), self.test_hash, self.plan.seed,
                              self.plan.batch_size, self.plan.threat)
        if self.plan.threat == Threat.OBLIVIOUS:
            return AttackSource(classifier, key, {}, None)
        if self.plan.threat == Threat.TRANSFER:
            model, info = self.substitute()
            # the substitute's inputs do not depend on the target either: any classifier of the data set reuses them
            return AttackSource(model, {**key, "classifier": info["key"], "weights": info["weights_sha256"]}, {}, info)
        d = self.defense(defense)
        model, how = adaptive_target(classifier, d, self.plan.threat_options, a)
        return AttackSource(model, {**key, "defense": defense, "defense_options": d.options(), **how,
                                    "models": self.models(defense)}, how, None)

    def adversarial(self, defense: str, attack: str) -> tuple[AttackSource, SharedAdversarial]:
        source = self.source(defense, attack)
        key = config_hash(source.cache_key)
        if self._adversarial is None or self._adversarial[0] != key:
            a = self.attack(attack)
            value: SharedAdversarial | CellFailed
            try:
                adv = generate(a, source.model, self.points.x, self.points.y, a.budgets(self.eps), self.plan.seed,
                               self.plan.batch_size, self.device, source.cache_key)
                classifier, _ = self.classifier(defense)
                undefended = [predict_all(classifier, x_adv, self.plan.batch_size, self.device) == self.points.y
                              for x_adv in adv.per_eps]
                value = SharedAdversarial(adv, undefended)
            except CellFailed as exc:
                value = exc
            self._adversarial = (key, value)
        return source, _value(self._adversarial[1])

    def shareable_adversarial(self, defense: str, attack: str) -> tuple[str, SharedAdversarial | CellFailed]:
        """The adversarial inputs of ``defense``'s cell for ``attack`` (or why they failed), keyed, to be handed to
        :meth:`share` in other processes."""
        try:
            self.adversarial(defense, attack)
        except CellFailed:
            pass
        assert self._adversarial is not None
        return self._adversarial

    def share(self, keyed: tuple[str, SharedAdversarial | CellFailed]) -> None:
        """Use adversarial inputs computed elsewhere; only cells whose source has the same key take them."""
        self._adversarial = keyed


def _value(memo: Any) -> Any:
    if isinstance(memo, CellFailed):
        raise memo
    return memo


def evaluate_cell(bench: Workbench, defense: str, attack: str) -> CellResult:
    """The cell's result with its record (not yet written), or "failed" with the harness check that failed."""
    started = time.time()
    d, a = bench.defense(defense), bench.attack(attack)
    draws = eval_draws(bench.plan.threat, d, bench.plan.threat_options)
    try:
        clean = bench.clean(defense)
        source, shared = bench.adversarial(defense, attack)
        classifier, meta = bench.classifier(defense)
        t0 = time.perf_counter()
        adv_counts, detected = [], []
        for x_adv in shared.adv.per_eps:
            counts, flags, _ = correct_draws(d, classifier, x_adv, bench.points.y, bench.plan.batch_size,
                                             bench.device, bench.plan.seed, draws)
            adv_counts.append(counts)
            if flags is not None:
                detected.append(flags)
    except CellFailed as exc:
        return CellResult(defense, attack, "failed", message=str(exc))
    config = cell_config(bench.plan, defense, attack, a.budgets(bench.eps), len(bench.points))
    record = build_record(config, a, d, meta, bench.points, bench.test_hash, clean, shared.adv, adv_counts,
                          shared.undefended_correct, detected or None, bench.device, started,
                          time.perf_counter() - t0, source, draws, models=bench.models(defense))
    return CellResult(defense, attack, "done", record=record)


def _ints(t: torch.Tensor) -> list[int]:
    return [int(v) for v in t.tolist()]


def _floats(t: torch.Tensor, digits: int = 5) -> list[float]:
    return [round(float(v), digits) for v in t.tolist()]


def build_record(
    config: dict[str, Any], attack: Attack, defense: Defense, classifier_meta: dict[str, Any], points: Split,
    test_hash: str, clean: CleanEval, adv: AdversarialSet, adv_counts: list[torch.Tensor],
    undefended_correct: list[torch.Tensor], detected: list[torch.Tensor] | None, device: torch.device,
    started: float, defense_seconds: float, source: AttackSource | None = None, draws: int = 1, *,
    models: dict[str, str],
) -> dict[str, Any]:
    """``adv_counts``: per budget, per example, the draws (of ``draws``) in which the defended pipeline was right;
    an example counts as correct only if it was right in all of them."""
    n_eps = len(config["eps"])
    adv_correct = [c == draws for c in adv_counts]
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
        # a randomised pipeline's per-draw record: the mean over draws beside the worst case (Croce et al. 2022)
        "draws_correct": None if draws == 1 else {
            "clean": _ints(clean.draw_counts),
            "adv": [_ints(c) for c in adv_counts],
        },
    }
    assert len(adv_correct) == n_eps
    return {
        "schema": records.SCHEMA,
        "id": records.record_id(config),
        "config": config,
        "attack": {"norm": attack.norm.value, "kind": attack.kind.value, "implementation": attack.library,
                   "options": {**attack.options(), **(source.attack_options if source else {})},
                   "randomised": attack.randomised, "needs_gradients": attack.needs_gradients,
                   "runs_black_box": attack.runs_black_box},
        "defense": {"traits": defense.traits(), "options": defense.options(), "eval_draws": draws},
        "checks": {**clean.checks, "largest_perturbation": largest_perturbations(
            points.x, adv.per_eps, attack.norm.value if attack.kind == AttackKind.FIXED else "linf")},
        "substitute": source.substitute if source else None,
        "classifier": {"key": classifier_meta["key"], "test_accuracy": classifier_meta["metrics"]["test_accuracy"],
                       "training_defense": classifier_meta["spec"].get("training_defense")},
        "models": models,
        "test_points_sha256": test_hash,
        "outcomes": outcomes,
        "summary": {"clean_accuracy": round(float(clean.correct.float().mean()), 5),
                    "robust_accuracy": [round(r, 5) for r in robust],
                    **({} if draws == 1 else {"robust_accuracy_mean_over_draws": [
                        round(float(c.float().mean()) / draws, 5) for c in adv_counts]})},
        "provenance": {
            "versions": versions(), "git_commit": git_commit(), "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "attack_seconds": round(adv.seconds, 3), "defense_seconds": round(defense_seconds, 3),
        },
    }
