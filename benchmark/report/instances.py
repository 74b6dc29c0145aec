"""Which model weights a record measured, and which records may be combined into one row.

A record's ``models`` names every checkpoint of the defended pipeline (classifier, PixelCNN, GAN...) with its weights'
SHA-256 (see :meth:`benchmark.store.model_store.ModelStore.recording`). The same training configuration retrained on
another machine gives other weights, and other numbers, so a per-example worst case over records of different weights
describes no model at all. Records written before fingerprints existed have no ``models``: their weights are
"unrecorded", one group of their own.

Per (data set, classifier model, defense, seed), the leaderboard combines the records of one set of weights: the one
with the most records (ties: the most recently started). The others are set aside and shown apart.
"""
from __future__ import annotations

from typing import Any, Iterable

from benchmark.store.hashing import config_hash
from benchmark.store.records import LoadedRecord

UNRECORDED = "unrecorded"


def weights_id(record: dict[str, Any]) -> str:
    """A short name of the weights ``record`` measured (a hash of its ``models``), or "unrecorded"."""
    models = record.get("models")
    return UNRECORDED if models is None else config_hash(models)


def _defense_key(rec: LoadedRecord) -> tuple[str, ...]:
    c = rec.data["config"]
    return str(c["dataset"]), str(c["model"]), str(c["defense"]), str(c["seed"])


def _started(rec: LoadedRecord) -> str:
    return str((rec.data.get("provenance") or {}).get("started", ""))


def split_by_weights(records: Iterable[LoadedRecord]) -> tuple[list[LoadedRecord], list[LoadedRecord]]:
    """(combined, set aside): per defense, the records of its chosen weights, and those of any other weights."""
    groups: dict[tuple[str, ...], dict[str, list[LoadedRecord]]] = {}
    for rec in records:
        groups.setdefault(_defense_key(rec), {}).setdefault(weights_id(rec.data), []).append(rec)
    combined: list[LoadedRecord] = []
    aside: list[LoadedRecord] = []
    for by_weights in groups.values():
        chosen = max(by_weights, key=lambda w: (len(by_weights[w]), max(_started(r) for r in by_weights[w]), w))
        for weights, recs in by_weights.items():
            (combined if weights == chosen else aside).extend(recs)
    return combined, aside
