"""The leaderboard's headline: per defense, the per-example worst case over every attack run on it, under every
threat model (docs/design.md, "Threat models": adaptive attacks included), with the sanity checks of its records.

A defense's records on one data set, classifier and seed are combined at the section's headline budgets (the budget
set most records share, L-infinity). Records on different n use the same stratified test order, so they are combined on
their common prefix: an example is robust at a budget only if the defended pipeline classifies it correctly when clean
and under every attack of every threat model. A record whose attack was run again on more points, under the same
threat model and at its headline budgets, is left out: the larger record measures its points again. Records with
other budgets count at the headline budgets they contain (a robustness curve's records, a costly attack run at one
budget); L2-budget records do not count (they are in the details table).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from benchmark.core.budgets import format_eps
from benchmark.core.errors import BenchError
from benchmark.engine.sanity import (
    black_box_beats_white_box,
    defense_flags,
    masking_side,
)
from benchmark.store.records import THREAT_OPTIONS, LoadedRecord

THREATS = ("oblivious", "adaptive", "transfer")
Group = list[tuple[LoadedRecord, list]]  # records with their headline-budget indices (None: a budget not run)


@dataclass(frozen=True)
class Combined:
    """Per-example worst case of some records on their first ``n`` common test points."""

    n: int
    clean: int  # examples correct when clean (in every record)
    worst: tuple[int | None, ...]  # per headline budget: robust examples (None: no record ran that budget)


@dataclass(frozen=True)
class Headline:
    defense: str
    seed: int
    overall: Combined
    per_threat: dict[str, Combined]  # only threats with records
    flags: tuple[str, ...]  # sanity-check findings (empty: nothing found)
    unchecked: int  # records without sanity checks (written before they existed)

    @property
    def not_adaptive(self) -> bool:
        """Evaluated only by attackers who do not know the defense (oblivious, transfer)."""
        return "adaptive" not in self.per_threat


INFERENCE_TRAITS = {"purifies", "classifies", "detects"}


def white_box_when_oblivious(rec: LoadedRecord) -> bool:
    """A defense with no inference-time part (adversarial training, label smoothing, none) is its classifier: the
    oblivious attacker, who attacks that classifier, sees the whole pipeline, so its attacks are adaptive ones."""
    traits = {t.strip() for t in str((rec.data.get("defense") or {}).get("traits", "")).split(",")}
    return not traits & INFERENCE_TRAITS


def _counts_as(rec: LoadedRecord, threat: str) -> bool:
    own = rec.data["config"]["threat"]
    return own == threat or (threat == "adaptive" and own == "oblivious" and white_box_when_oblivious(rec))


def _key(e: float) -> float:
    return round(float(e), 9)


def headline_eps(records: Sequence[LoadedRecord]) -> tuple[float, ...] | None:
    """The L-infinity budget set that most records of a section share (ties: the first in sorted order)."""
    counts: dict[tuple[float, ...], int] = {}
    for rec in records:
        if _linf(rec):
            eps = tuple(float(e) for e in rec.data["config"]["eps"])
            counts[eps] = counts.get(eps, 0) + 1
    if not counts:
        return None
    return min(counts, key=lambda eps: (-counts[eps], eps))


def _linf(rec: LoadedRecord) -> bool:
    attack = rec.data.get("attack") or {}
    return attack.get("kind") != "fixed-eps" or attack.get("norm", "linf") == "linf"


def _budget_indices(rec: LoadedRecord, eps: Sequence[float]) -> list[int | None] | None:
    """Where each headline budget sits in the record's budgets (None for one it lacks); None if the record has none
    of them (or is not L-infinity)."""
    if not _linf(rec):
        return None
    own = [_key(e) for e in rec.data["config"]["eps"]]
    idx = [own.index(_key(e)) if _key(e) in own else None for e in eps]
    return idx if any(i is not None for i in idx) else None


def _covers(records: Sequence[tuple[LoadedRecord, list[int | None]]]) -> bool:
    """Whether every headline budget is measured by at least one of ``records``."""
    return bool(records) and all(any(idx[b] is not None for _, idx in records) for b in range(len(records[0][1])))


def _superseded(rec: LoadedRecord, idx: list[int | None], other: LoadedRecord, other_idx: list[int | None]) -> bool:
    """Whether ``other`` re-ran ``rec``'s cell on more test points: the same attack under the same threat model (and
    threat options), at every headline budget ``rec`` ran."""
    mine, theirs = rec.data["config"], other.data["config"]
    return (int(theirs["n"]) > int(mine["n"])
            and all(mine.get(k) == theirs.get(k) for k in ("attack", "threat", THREAT_OPTIONS))
            and all(o is not None for i, o in zip(idx, other_idx) if i is not None))


def _without_superseded(records: Group) -> Group:
    """The records not re-run on more points. Records share one stratified test order, so a smaller record's points
    are the first of the larger one's, which measures them again; kept, it would cap the headline's n (the common
    prefix of all records) where the attack has since been run on more points."""
    return [(r, idx) for r, idx in records
            if not any(_superseded(r, idx, other, other_idx) for other, other_idx in records)]


def _complete(records: Group) -> Group:
    """The records that measured every headline budget."""
    return [(r, idx) for r, idx in records if None not in idx]


def combine(records: Sequence[tuple[LoadedRecord, list[int | None]]], at_most: int | None = None) -> Combined:
    """Per-example worst case over ``records`` (each with its headline-budget indices, None where it did not run
    that budget) on their common points (the first ``at_most`` of them, if given): at each budget, over the records
    that ran it. A record run at one budget only (a costly attack, a separate setting) counts there like any other."""
    n = min([int(r.data["config"]["n"]) for r, _ in records] + ([at_most] if at_most is not None else []))
    first = records[0][0]
    labels = first.data["outcomes"]["label"][:n]
    for rec, _ in records[1:]:
        if rec.data["outcomes"]["label"][:n] != labels:
            raise BenchError(f"{rec.path} and {first.path} have the same data set and seed but different test "
                             "points; they cannot be combined")
    clean = [all(r.data["outcomes"]["clean_correct"][i] for r, _ in records) for i in range(n)]
    n_eps = len(records[0][1])
    worst: list[int | None] = []
    for b in range(n_eps):
        ran = [(r, idx[b]) for r, idx in records if idx[b] is not None]
        robust = [c and all(r.data["outcomes"]["adv_correct"][j][i] for r, j in ran) for i, c in enumerate(clean)]
        worst.append(sum(robust) if ran else None)
    return Combined(n, sum(clean), tuple(worst))


def _robust(rec: LoadedRecord, budget: int) -> list[bool]:
    """Per example: correct when clean and under the record's attack at the budget with this index."""
    out = rec.data["outcomes"]
    return [bool(c and a) for c, a in zip(out["clean_correct"], out["adv_correct"][budget])]


def _flags(records: Group) -> tuple[tuple[str, ...], int]:
    flags: list[str] = []
    unchecked = 0
    for rec, _ in records:
        checks = rec.data.get("checks")
        unchecked += checks is None
        flags += defense_flags(checks)
    # only where the attacks saw the defense: an oblivious gradient attack never differentiated through it; the
    # comparison pairs budgets across attacks, so it takes the records that ran them all
    for threat in ("adaptive",):
        mine = [(r, idx) for r, idx in _complete(records) if r.data["config"]["threat"] == threat]
        outcomes = [(str(r.data["config"]["attack"]), masking_side(r.data.get("attack") or {}),
                     [_robust(r, i) for i in idx]) for r, idx in mine]
        flags += [f"{a} ({threat}) beats every gradient attack (p={p:.2g})"
                  for a, p in black_box_beats_white_box(outcomes)]
    return tuple(dict.fromkeys(flags)), unchecked  # each finding once, in order of discovery


def _classifier_weights(rec: LoadedRecord) -> str | None:
    """The SHA-256 of the classifier weights a record measured (None for records that predate ``models``)."""
    return next((sha for name, sha in (rec.data.get("models") or {}).items() if name.startswith("classifier/")), None)


def _base_finding(defense: str, recs: Group, base: str, base_recs: Group, eps: Sequence[float]) -> str | None:
    """Croce et al. (2022) compare a test-time defense with its static base classifier under the same attacks: the
    finding, if the defense is less robust than its base on their common attacks and test points at some budget."""
    mine = {_attack_name(r) for r, _ in recs}
    theirs = {_attack_name(r) for r, _ in base_recs}
    common = mine & theirs
    if not common:
        return None
    n = min(int(r.data["config"]["n"]) for r, _ in recs + base_recs)
    ours = combine([item for item in recs if _attack_name(item[0]) in common], n)
    base_case = combine([item for item in base_recs if _attack_name(item[0]) in common], n)
    worse = [f"{format_eps(e)}: {round(100 * a / n)}% vs {round(100 * b / n)}%"
             for e, a, b in zip(eps, ours.worst, base_case.worst) if a < b]
    if not worse:
        return None
    return f"less robust than its base {base} under the same {len(common)} attacks ({'; '.join(worse)}; n={n})"


def _attack_name(rec: LoadedRecord) -> str:
    return str(rec.data["config"]["attack"])


def _base_findings(groups: dict[tuple[str, int], Group], eps: Sequence[float]) -> dict[tuple[str, int], str]:
    """For each defense with an inference-time part, the finding against its base: the defense of the same section
    with no inference-time part whose records measured the same classifier weights (``none`` for the plain
    classifier, ``adv-fgsm`` for ``adv-fgsm+pixeldefend``)."""
    bases: dict[tuple[str, int], str] = {}
    for (defense, seed), recs in groups.items():
        weights = {_classifier_weights(r) for r, _ in recs}
        if len(weights) == 1 and None not in weights and all(white_box_when_oblivious(r) for r, _ in recs):
            bases[(weights.pop(), seed)] = defense
    found = {}
    for (defense, seed), recs in groups.items():
        if all(white_box_when_oblivious(r) for r, _ in recs):
            continue
        weights = {_classifier_weights(r) for r, _ in recs}
        base = bases.get((weights.pop(), seed)) if len(weights) == 1 else None
        if base is not None:
            finding = _base_finding(defense, recs, base, groups[(base, seed)], eps)
            if finding:
                found[(defense, seed)] = finding
    return found


def headlines(records: Sequence[LoadedRecord], eps: Sequence[float]) -> list[Headline]:
    """One headline per (defense, seed) of one section's records, sorted by the worst case (largest budget first,
    highest first), ties by name."""
    groups: dict[tuple[str, int], Group] = {}
    for rec in records:
        idx = _budget_indices(rec, eps)
        if idx is not None:
            c = rec.data["config"]
            groups.setdefault((str(c["defense"]), int(c["seed"])), []).append((rec, idx))
    groups = {key: sorted(_without_superseded(recs), key=lambda item: str(item[0].path))
              for key, recs in groups.items() if _covers(recs)}
    # the sanity checks and the base comparison pair budgets across attacks: records that ran them all
    complete = {key: _complete(recs) for key, recs in groups.items() if _complete(recs)}
    against_base = _base_findings(complete, eps)
    out = []
    for (defense, seed), recs in groups.items():
        # a threat model run at some of the budgets only shows those (the others: None)
        per_threat = {t: combine(mine) for t in THREATS if (mine := [r for r in recs if _counts_as(r[0], t)])}
        flags, unchecked = _flags(recs)
        if (defense, seed) in against_base:
            flags += (against_base[(defense, seed)],)
        out.append(Headline(defense, seed, combine(recs), per_threat, flags, unchecked))

    def order(h: Headline) -> tuple[Any, ...]:
        rates = tuple(-k / max(h.overall.n, 1) for k in reversed(h.overall.worst))
        return (rates, h.defense, h.seed)

    return sorted(out, key=order)
