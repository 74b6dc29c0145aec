"""The model store: safetensors checkpoints with metadata, verified on load, rebuilt when corrupted."""
from __future__ import annotations

import json
import logging
import pickle
import struct
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmark.store.hashing import file_sha256
from benchmark.store.model_store import META, WEIGHTS, ModelStore

SPEC = {"dataset": "toy", "arch": "tiny", "seed": 0, "train": {"epochs": 1}}


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.register_buffer("scale", torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scale


def _tiny(seed: int) -> Tiny:
    torch.manual_seed(seed)
    return Tiny()


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def store_logs(caplog: pytest.LogCaptureFixture):
    """Warnings of benchmark.store.model_store, even after a CLI test turned off propagation of the ``benchmark`` logger."""
    logger = logging.getLogger("benchmark")
    old = logger.propagate
    logger.propagate = True
    caplog.set_level(logging.WARNING, logger="benchmark.store.model_store")
    yield caplog
    logger.propagate = old


def test_save_load_roundtrip(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    saved = _tiny(1)
    saved.scale.fill_(3.0)
    meta = store.save("classifier", SPEC, saved, {"test_accuracy": 0.9, "val_accuracy": 0.8})

    folder = store.folder("classifier", SPEC)
    assert folder.parent == tmp_path / "classifier"
    assert (folder / WEIGHTS).is_file() and (folder / META).is_file()
    assert meta["metrics"] == {"test_accuracy": 0.9, "val_accuracy": 0.8}
    assert meta["spec"] == SPEC and meta["key"] == folder.name
    assert meta["weights_sha256"] == file_sha256(folder / WEIGHTS)
    assert json.loads((folder / META).read_text()) == meta

    loaded = _tiny(2)
    assert not _same(loaded, saved)
    meta2 = store.load("classifier", SPEC, loaded)
    assert meta2 == meta
    assert _same(loaded, saved)  # parameters and buffers


def test_load_absent_returns_none(tmp_path: Path, store_logs) -> None:
    assert ModelStore(tmp_path).load("classifier", SPEC, _tiny(0)) is None
    assert not store_logs.records  # absent is not corrupted: no warning


def test_other_spec_is_another_checkpoint(tmp_path: Path, store_logs) -> None:
    store = ModelStore(tmp_path)
    store.save("classifier", SPEC, _tiny(1), {})
    other = {**SPEC, "seed": 1}
    assert store.folder("classifier", other) != store.folder("classifier", SPEC)
    assert store.load("classifier", other, _tiny(0)) is None
    assert store.load("detector", SPEC, _tiny(0)) is None  # the kind is part of the location
    assert not store_logs.records


def test_spec_mismatch_inside_a_checkpoint_is_corruption(tmp_path: Path, store_logs) -> None:
    store = ModelStore(tmp_path)
    store.save("classifier", SPEC, _tiny(1), {})
    meta_path = store.folder("classifier", SPEC) / META
    meta = json.loads(meta_path.read_text())
    meta["spec"] = {**SPEC, "seed": 7}  # a checkpoint filed under the wrong key
    meta_path.write_text(json.dumps(meta))
    assert store.load("classifier", SPEC, _tiny(0)) is None
    assert any("corrupted" in r.getMessage() and "spec" in r.getMessage() for r in store_logs.records)


@pytest.mark.parametrize("damage", ["flip-byte", "truncate", "delete", "garbage"])
def test_tampered_weights_are_rejected_with_a_warning(tmp_path: Path, store_logs, damage: str) -> None:
    store = ModelStore(tmp_path)
    store.save("classifier", SPEC, _tiny(1), {"test_accuracy": 0.5})
    weights = store.folder("classifier", SPEC) / WEIGHTS
    data = bytearray(weights.read_bytes())
    if damage == "flip-byte":
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "delete":
        weights.unlink()
    else:
        weights.write_bytes(b"not a checkpoint")

    target = _tiny(2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    assert store.load("classifier", SPEC, target) is None
    messages = [r.getMessage() for r in store_logs.records if r.levelno == logging.WARNING]
    assert len(messages) == 1 and "corrupted" in messages[0] and str(store.folder("classifier", SPEC)) in messages[0]
    # a rejected checkpoint leaves the module untouched
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_checkpoint_of_another_architecture_is_rejected(tmp_path: Path, store_logs) -> None:
    """Hash and spec check out, but the tensors do not fit the module (the architecture's code changed)."""
    store = ModelStore(tmp_path)
    store.save("classifier", SPEC, nn.Linear(4, 2), {})
    assert store.load("classifier", SPEC, _tiny(0)) is None
    assert any("corrupted" in r.getMessage() for r in store_logs.records)


class TinyPlus(Tiny):
    """Tiny with one more layer: the architecture's code changed while its spec stayed the same."""

    def __init__(self) -> None:
        super().__init__()
        self.extra = nn.Linear(2, 2)


def test_partly_fitting_checkpoint_leaves_the_module_untouched(tmp_path: Path, store_logs) -> None:
    store = ModelStore(tmp_path)
    store.save("classifier", SPEC, _tiny(1), {})
    torch.manual_seed(2)
    target = TinyPlus()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    assert store.load("classifier", SPEC, target) is None
    assert any("corrupted" in r.getMessage() for r in store_logs.records)
    # get_or_build would otherwise train from these half-loaded weights
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_get_or_build_builds_once_then_loads(tmp_path: Path, store_logs) -> None:
    store = ModelStore(tmp_path)
    calls: list[int] = []

    def build(module: nn.Module) -> dict:
        calls.append(1)
        with torch.no_grad():
            module.fc.weight.fill_(0.25)
        return {"test_accuracy": 1.0}

    first = _tiny(1)
    meta = store.get_or_build("classifier", SPEC, first, build)
    assert len(calls) == 1 and meta["metrics"] == {"test_accuracy": 1.0}

    second = _tiny(2)
    meta2 = store.get_or_build("classifier", SPEC, second, build)
    assert len(calls) == 1, "the second call must load, not build"
    assert meta2 == meta and _same(first, second)
    assert torch.all(second.fc.weight == 0.25)
    assert not store_logs.records

    # a corrupted checkpoint is rebuilt (and reported), then loads again
    weights = store.folder("classifier", SPEC) / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    third = _tiny(3)
    store.get_or_build("classifier", SPEC, third, build)
    assert len(calls) == 2
    assert any("corrupted" in r.getMessage() for r in store_logs.records)
    assert store.load("classifier", SPEC, _tiny(4)) is not None


def test_get_or_build_reports_a_corrupted_checkpoint_once(tmp_path: Path, store_logs) -> None:
    store = ModelStore(tmp_path)
    store.save("classifier", SPEC, _tiny(1), {})
    (store.folder("classifier", SPEC) / WEIGHTS).write_bytes(b"garbage")
    store.get_or_build("classifier", SPEC, _tiny(2), lambda m: {})
    assert len([r for r in store_logs.records if "corrupted" in r.getMessage()]) == 1


def test_weights_file_is_safetensors(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    module = _tiny(1)
    store.save("classifier", SPEC, module, {})
    raw = (store.folder("classifier", SPEC) / WEIGHTS).read_bytes()
    # safetensors: 8-byte little-endian header length, a JSON header, then raw tensor bytes (no pickle, no zip)
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    assert set(header) - {"__metadata__"} == set(module.state_dict())
    assert header["fc.weight"]["shape"] == [2, 3] and header["fc.weight"]["dtype"] == "F32"
    assert not raw.startswith(b"PK") and raw[:1] != b"\x80"

    from safetensors.torch import load_file

    tensors = load_file(str(store.folder("classifier", SPEC) / WEIGHTS))
    assert all(torch.equal(tensors[k], v) for k, v in module.state_dict().items())


class _Payload:
    """Unpickling this runs code: it creates a marker folder."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.mkdir, (str(self.marker),))


def test_loading_runs_no_code_from_the_file(tmp_path: Path, store_logs) -> None:
    """A pickle placed as the weights (with a matching recorded hash) is refused, and its code never runs."""
    store = ModelStore(tmp_path / "store")
    store.save("classifier", SPEC, _tiny(1), {})
    folder = store.folder("classifier", SPEC)
    marker = tmp_path / "pwned"
    for payload in (pickle.dumps(_Payload(marker)), None):
        if payload is None:  # also torch.save's zip format
            torch.save({"fc.weight": _Payload(marker)}, folder / WEIGHTS)
        else:
            (folder / WEIGHTS).write_bytes(payload)
        meta = json.loads((folder / META).read_text())
        meta["weights_sha256"] = file_sha256(folder / WEIGHTS)
        (folder / META).write_text(json.dumps(meta))
        assert store.load("classifier", SPEC, _tiny(0)) is None
        assert not marker.exists()


def test_recording_names_the_weights_handed_out(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)

    def build(module: nn.Module) -> dict:
        return {"test_accuracy": 1.0}

    other = {**SPEC, "seed": 1}
    store.get_or_build("classifier", SPEC, _tiny(1), build)
    with store.recording() as outer:
        meta = store.get_or_build("classifier", SPEC, _tiny(2), build)  # loaded
        with store.recording() as inner:
            meta_other = store.get_or_build("classifier", other, _tiny(3), build)  # built
    store.get_or_build("classifier", SPEC, _tiny(4), build)  # after the blocks: noted nowhere
    assert meta["weights_sha256"] == file_sha256(store.folder("classifier", SPEC) / WEIGHTS)
    assert outer == {f"classifier/{meta['key']}": meta["weights_sha256"],
                     f"classifier/{meta_other['key']}": meta_other["weights_sha256"]}
    assert inner == {f"classifier/{meta_other['key']}": meta_other["weights_sha256"]}
    assert not store._recorders


def test_a_shipped_checkpoint_is_restored_checked_and_never_replaced(tmp_path: Path, store_logs) -> None:
    shipped = tmp_path / "results" / "models"
    first = ModelStore(tmp_path / "a", shipped=None)
    trained = _tiny(1)
    meta = first.get_or_build("classifier", SPEC, trained, lambda m: {"test_accuracy": 1.0})
    name = f"classifier/{meta['key']}"
    assert first.ship([name], shipped) == [] and first.ship([name], shipped) == []  # idempotent
    (problem,) = first.ship([name, "classifier/absent"], shipped)
    assert "not in this machine's cache" in problem

    def refuse(module: nn.Module) -> dict:
        raise AssertionError("a shipped checkpoint must be restored, not trained again")

    fresh = _tiny(2)
    assert ModelStore(tmp_path / "b", shipped=shipped).get_or_build("classifier", SPEC, fresh, refuse) == meta
    assert _same(trained, fresh)

    # other weights of the same spec are not shipped over the ones earlier records measured
    other = ModelStore(tmp_path / "c", shipped=None)
    other.get_or_build("classifier", SPEC, _tiny(3), lambda m: {"test_accuracy": 0.5})
    (problem,) = other.ship([name], shipped)
    assert "holds other weights" in problem
    assert json.loads((shipped / name / META).read_text()) == meta

    # a damaged shipped checkpoint is reported and rebuilt like a damaged cached one
    weights = shipped / name / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    built: list[int] = []
    ModelStore(tmp_path / "d", shipped=shipped).get_or_build("classifier", SPEC, _tiny(4),
                                                             lambda m: built.append(1) or {"test_accuracy": 1.0})
    assert built == [1] and any("corrupted" in r.getMessage() for r in store_logs.records)


def test_an_unfinished_training_is_shipped_and_resumed_elsewhere(tmp_path):
    """A training left unfinished on one machine (its partial state shipped beside the records) resumes from that
    state on another, whose cache has none, instead of starting over."""
    from benchmark.store.model_store import ModelStore

    spec = {"dataset": "digits", "arch": "toy", "seed": 0}
    here = ModelStore(root=tmp_path / "cache-a", shipped=tmp_path / "results" / "models")
    folder = here.folder("classifier", spec)
    folder.mkdir(parents=True)
    (folder / "partial.safetensors").write_bytes(b"state")
    (folder / "partial.json").write_text('{"epoch": 3}')
    assert here.ship_partial("classifier", spec, tmp_path / "results" / "models")
    there = ModelStore(root=tmp_path / "cache-b", shipped=tmp_path / "results" / "models")
    seen = {}

    def build(module):
        seen["state"] = (there.folder("classifier", spec) / "partial.json").read_text()
        return {"test_accuracy": 1.0}

    there.get_or_build("classifier", spec, torch.nn.Linear(1, 1), build)
    assert seen["state"] == '{"epoch": 3}'
    # once finished and shipped, the finished weights replace the unfinished state beside the records
    name = f"classifier/{there.folder('classifier', spec).name}"
    assert there.ship([name], tmp_path / "results" / "models") == []
    shipped = sorted(p.name for p in (tmp_path / "results" / "models" / name).iterdir())
    assert shipped == ["meta.json", "weights.safetensors"]
    assert not ModelStore(root=tmp_path / "c", shipped=None).ship_partial("classifier", spec, tmp_path / "x")
