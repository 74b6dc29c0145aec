"""The model store: trained networks keyed by (data set, architecture, training config, seed).

A checkpoint is a folder ``<cache>/models/<kind>/<key>/`` with ``weights.safetensors`` (tensors only: loading runs no
code from the file) and ``meta.json`` (the spec it was built from, its measured metrics, the weights' SHA-256).
A checkpoint whose hash or format does not check out is reported and rebuilt, never used.

The weights' SHA-256 names the model *instance*: the same spec retrained elsewhere (another CPU, another thread count)
gives other weights and other numbers. :meth:`ModelStore.recording` collects the instances a piece of work used, so
that a record can say which models it measured.

The weights a record measured travel with it: :meth:`ModelStore.ship` copies a checkpoint into the results folder
(``results/models/<kind>/<key>/``, committed with the records), and a store whose cache lacks a checkpoint restores it
from there (checked like any other) before it would train one. Another machine then measures the same weights.

Shipped weights are checked against the records, not only against their own ``meta.json`` (which whoever edits the
weights can edit too): a shipped checkpoint whose weights are not the ones the records of its results folder name for
its ``"<kind>/<key>"`` (``models``, or ``substitute`` for a transfer substitute) is refused with a
:class:`~benchmark.core.errors.BenchError` that names those records and their SHA-256, and so is a corrupted one
(weights that do not match their own ``meta.json``) that records cite: it is never silently trained over. A corrupted
checkpoint no record cites is only a cache: it is reported as corrupted and rebuilt. A corrupted copy in the cache is
restored from the shipped one when there is one. Failing to write a checkpoint (a full disk) is a warning: the model
is used from memory in this run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from filelock import FileLock
from torch import nn

from benchmark.core.errors import BenchError
from benchmark.store.checkpoint import PARTIAL_META, PARTIAL_SPEC, PARTIAL_STATE
from benchmark.store.fileio import atomic_write_bytes, atomic_write_text
from benchmark.store.hashing import canonical_json, config_hash, file_sha256
from benchmark.store.paths import cache_dir

log = logging.getLogger(__name__)

WEIGHTS = "weights.safetensors"
META = "meta.json"
MODELS_SUBDIR = "models"  # of a results folder: the checkpoints its records measured
SHIPPED = Path("results") / MODELS_SUBDIR  # relative to the working folder, like `bench run`'s default results folder


class ModelStore:
    def __init__(self, root: Path | None = None, shipped: Path | None = SHIPPED) -> None:
        """``root``: the cache's model folder; ``shipped``: where checkpoints that records measured are kept, to be
        restored from when the cache lacks them (None: nowhere)."""
        self.root = Path(root) if root is not None else cache_dir() / "models"
        self.shipped = Path(shipped) if shipped is not None else None
        self._recorders: list[dict[str, str]] = []

    @contextmanager
    def recording(self) -> Iterator[dict[str, str]]:
        """Inside the block, every checkpoint :meth:`get_or_build` hands out is noted in the yielded dict as
        ``"<kind>/<key>": weights SHA-256`` (blocks may nest; each sees what was handed out while it was open)."""
        seen: dict[str, str] = {}
        self._recorders.append(seen)
        try:
            yield seen
        finally:
            self._recorders.remove(seen)

    def _note(self, meta: dict[str, Any]) -> dict[str, Any]:
        for seen in self._recorders:
            seen.update(instances(meta))
        return meta

    def folder(self, kind: str, spec: dict[str, Any]) -> Path:
        return self.root / kind / config_hash(spec)

    def load(self, kind: str, spec: dict[str, Any], module: nn.Module) -> dict[str, Any] | None:
        """Fill ``module`` from the checkpoint of ``spec``; its metadata, or None when absent or corrupted (then the
        caller rebuilds it). A BenchError when the shipped copy it would come from contradicts the records."""
        folder = self.folder(kind, spec)
        restored = False
        if not (folder / META).exists():
            if not self._restore(folder):
                return None
            restored = True
        try:
            return self._fill(folder, spec, module)
        except Exception as exc:  # corrupted: say so, then restore the shipped copy or let the caller rebuild
            if not restored and self._restore(folder):
                log.warning("checkpoint %s is corrupted (%s); restored it from %s", folder, exc, self.shipped)
                try:
                    return self._fill(folder, spec, module)
                except Exception as again:
                    exc = again
            log.warning("checkpoint %s is corrupted (%s); rebuilding it", folder, exc)
            return None

    @staticmethod
    def _fill(folder: Path, spec: dict[str, Any], module: nn.Module) -> dict[str, Any]:
        """The checkpoint in ``folder`` checked (spec, weights' SHA-256, tensor names and shapes), then loaded into
        ``module``; raises when anything does not check out, leaving ``module`` untouched."""
        from safetensors.torch import load_file

        weights, meta_path = folder / WEIGHTS, folder / META
        meta = json.loads(meta_path.read_text())
        if canonical_json(meta["spec"]) != canonical_json(spec):
            raise ValueError("its spec does not match its key")
        if file_sha256(weights) != meta["weights_sha256"]:
            raise ValueError("its weights do not match their recorded SHA-256")
        state = load_file(str(weights))
        expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        if {k: tuple(v.shape) for k, v in state.items()} != expected:  # check before touching the module
            raise ValueError("its tensors do not fit the model (names or shapes differ)")
        module.load_state_dict(state)
        return meta

    def _restore(self, folder: Path) -> bool:
        """Copy the shipped checkpoint of ``folder`` into the cache, if there is one (weights first, metadata last: a
        checkpoint without metadata counts as absent); :meth:`load` then checks it like any other.

        The shipped weights must be the ones the records beside them name: else, or when they are corrupted while
        records cite them, a BenchError says which records name which SHA-256 and what to do. A corrupted shipped
        copy that no record cites is reported and left alone (the caller rebuilds the model)."""
        if self.shipped is None:
            return False
        name = folder.relative_to(self.root).as_posix()
        source = self.shipped / name
        if not (source / META).is_file() or not (source / WEIGHTS).is_file():
            return False
        weights, meta = (source / WEIGHTS).read_bytes(), (source / META).read_bytes()
        sha = hashlib.sha256(weights).hexdigest()
        broken = corruption(meta, sha)
        cited = cited_weights(self.shipped.parent, name)
        if cited and (broken or sha not in cited):
            raise BenchError(refusal(name, source, sha, broken, cited))
        if broken:
            log.warning("shipped checkpoint %s is corrupted (%s) and no record cites it; building it anew", source,
                        broken)
            return False
        log.info("restoring checkpoint %s from %s", name, self.shipped)
        write_checkpoint(folder, weights, meta)
        return True

    def ship(self, names: Iterable[str], dest: Path) -> list[str]:
        """Copy checkpoints ``names`` ("<kind>/<key>") from the cache to ``dest/<kind>/<key>/``; why any of them is
        not there now. Shipped weights are never replaced (records measured them), unless they are corrupted and the
        cache holds the weights the records name (a repair). A failed copy (a full disk) is one of the reasons."""
        problems = []
        for name in dict.fromkeys(names):
            source, target = self.root / name, Path(dest) / name
            try:
                problem = self._ship_one(name, source, target, Path(dest).parent)
            except OSError as exc:
                problem = f"could not copy checkpoint {name} to {target} ({describe_os_error(exc)})"
            if problem:
                problems.append(problem)
        return problems

    def _ship_one(self, name: str, source: Path, target: Path, results_dir: Path) -> str | None:
        if not (source / META).is_file() or not (source / WEIGHTS).is_file():
            return f"checkpoint {name} is not in this machine's cache ({self.root})"
        if not (target / META).is_file():
            write_checkpoint(target, (source / WEIGHTS).read_bytes(), (source / META).read_bytes())
            for stale in (PARTIAL_STATE, PARTIAL_META, PARTIAL_SPEC):  # the unfinished training that led here
                (target / stale).unlink(missing_ok=True)
            return None
        want = json.loads((source / META).read_text())["weights_sha256"]
        shipped_meta = (target / META).read_bytes()
        if _meta_sha(shipped_meta) == want:
            return None
        sha = file_sha256(target / WEIGHTS) if (target / WEIGHTS).is_file() else ""
        broken = corruption(shipped_meta, sha)
        cited = cited_weights(results_dir, name)
        if broken and set(cited) <= {want}:
            log.warning("shipped checkpoint %s is corrupted (%s); replacing it with the cache's copy, the weights "
                        "its records name", target, broken)
            write_checkpoint(target, (source / WEIGHTS).read_bytes(), (source / META).read_bytes())
            return None
        if broken:
            return (f"shipped checkpoint {target} is corrupted ({broken}); restore it from git "
                    f"(git checkout -- {target})")
        if cited and sha not in cited:
            return (f"shipped weights {target / WEIGHTS} have SHA-256 {sha}, not the weights records name for {name} "
                    f"({', '.join(cited)}); restore them from git (git checkout -- {target})")
        return f"{target} holds other weights of {name}, which earlier records measured"

    def save(self, kind: str, spec: dict[str, Any], module: nn.Module, metrics: dict[str, Any]) -> dict[str, Any]:
        """Write ``module``'s checkpoint of ``spec``; its metadata. A failed write (a full disk) is a warning: the
        metadata still describes the weights in ``module``, which the caller goes on using."""
        from safetensors.torch import save as serialise

        folder = self.folder(kind, spec)
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        weights = serialise(state)  # the exact bytes of the file, so their SHA-256 is the file's
        meta = {
            "kind": kind,
            "key": config_hash(spec),
            "spec": spec,
            "metrics": metrics,
            "weights_sha256": hashlib.sha256(weights).hexdigest(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "torch": torch.__version__,
        }
        try:
            write_checkpoint(folder, weights, json.dumps(meta, indent=2, sort_keys=True).encode("utf-8"))
        except OSError as exc:
            log.warning("could not write checkpoint %s (%s); using the model from memory in this run only", folder,
                        describe_os_error(exc))
        return meta

    def get_frozen(self, kind: str, spec: dict[str, Any], seed: int, make: Callable[[], nn.Module],
                   build: Callable[[nn.Module], dict[str, Any]], device: torch.device
                   ) -> tuple[nn.Module, dict[str, Any]]:
        """:meth:`get_or_build` on a module made by ``make()`` under ``seed`` (its initial weights depend on the seed
        only, not on the process's history), then frozen in eval mode on ``device``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = make()
        meta = self.get_or_build(kind, spec, module, build)
        module.to(device).eval()
        for p in module.parameters():
            p.requires_grad_(False)
        return module, meta

    def get_or_build(
        self,
        kind: str,
        spec: dict[str, Any],
        module: nn.Module,
        build: Callable[[nn.Module], dict[str, Any]],
    ) -> dict[str, Any]:
        """Load ``spec`` into ``module``, or train it with ``build(module) -> metrics`` and save it.

        A file lock makes concurrent processes wait for one builder instead of training the same model twice.
        """
        folder = self.folder(kind, spec)
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / ".lock")):  # loaded under the lock: another process may be writing it
            meta = self.load(kind, spec, module)
            if meta is None:
                self._restore_partial(folder)
                meta = self.save(kind, spec, module, build(module))
            return self._note(meta)

    def _restore_partial(self, folder: Path) -> None:
        """A training that another machine left unfinished and shipped (``partial.*`` under the shipped folder, see
        benchmark.store.checkpoint): copied into the cache when the cache has none, so the training resumes from it
        instead of starting over. The checkpoint is checked when it is loaded, like every other."""
        if self.shipped is None or (folder / PARTIAL_STATE).exists():
            return
        source = self.shipped / folder.relative_to(self.root)
        if (source / PARTIAL_STATE).is_file() and (source / PARTIAL_META).is_file():
            log.info("resuming the training of %s from %s", folder.relative_to(self.root).as_posix(), source)
            atomic_write_bytes(folder / PARTIAL_STATE, (source / PARTIAL_STATE).read_bytes())
            atomic_write_bytes(folder / PARTIAL_META, (source / PARTIAL_META).read_bytes())

    def ship_partial(self, kind: str, spec: dict[str, Any], dest: Path) -> bool:
        """Copy the unfinished training state of ``spec`` from the cache to ``dest/<kind>/<key>/`` (to resume it on
        another machine, e.g. in a later session); whether there was one."""
        folder = self.folder(kind, spec)
        if not (folder / PARTIAL_STATE).is_file():
            return False
        target = Path(dest) / kind / folder.name
        atomic_write_bytes(target / PARTIAL_STATE, (folder / PARTIAL_STATE).read_bytes())
        atomic_write_bytes(target / PARTIAL_META, (folder / PARTIAL_META).read_bytes())
        # what is being trained, for readers of the shipped folder (the leaderboard's models table)
        atomic_write_text(target / PARTIAL_SPEC, json.dumps({"kind": kind, "spec": spec}, indent=1, sort_keys=True))
        return True


def instance_name(meta: dict[str, Any]) -> str:
    """``"<kind>/<key>"``: which checkpoint of the store ``meta`` describes."""
    return f"{meta['kind']}/{meta['key']}"


def instances(*metas: dict[str, Any]) -> dict[str, str]:
    """The model instances ``metas`` describe, as a record names them: ``"<kind>/<key>": weights SHA-256``."""
    return {instance_name(m): m["weights_sha256"] for m in sorted(metas, key=instance_name)}


def describe_os_error(exc: OSError) -> str:
    """``No space left on device`` (the reason of an OSError, without its errno and file name)."""
    return exc.strerror or str(exc) or type(exc).__name__


def _meta_sha(meta: bytes) -> str | None:
    try:
        sha = json.loads(meta)["weights_sha256"]
    except (ValueError, KeyError, TypeError):
        return None
    return sha if isinstance(sha, str) else None


def corruption(meta: bytes, weights_sha256: str) -> str | None:
    """Why a checkpoint whose ``meta.json`` holds ``meta`` and whose weights hash to ``weights_sha256`` is corrupted,
    or None when its weights are the ones its metadata names."""
    recorded = _meta_sha(meta)
    if recorded is None:
        return "its meta.json does not parse or names no weights_sha256"
    if recorded != weights_sha256:
        return "its weights do not match the SHA-256 in its meta.json"
    return None


def cited_weights(results_dir: Path, name: str) -> dict[str, list[Path]]:
    """The weights that records under ``results_dir`` name for checkpoint ``name`` ("<kind>/<key>"), as SHA-256 ->
    the records naming it (in ``models``, or as their transfer ``substitute``). Records that do not parse are left to
    ``bench leaderboard`` to report."""
    root = Path(results_dir) / "records"  # benchmark.store.records.RECORDS_SUBDIR
    kind, _, key = name.partition("/")
    found: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
        try:
            text = path.read_text()
            if key not in text:  # most records name other checkpoints: skip them without parsing
                continue
            data = json.loads(text)
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        shas = set()
        models, sub = data.get("models"), data.get("substitute")
        if isinstance(models, dict) and isinstance(models.get(name), str):
            shas.add(models[name])
        if kind == "classifier" and isinstance(sub, dict) and sub.get("key") == key \
                and isinstance(sub.get("weights_sha256"), str):
            shas.add(sub["weights_sha256"])
        for sha in sorted(shas):
            found.setdefault(sha, []).append(path)
    return found


def refusal(name: str, source: Path, sha: str, broken: str | None, cited: dict[str, list[Path]]) -> str:
    """One line: the shipped checkpoint ``source`` is not what the records ``cited`` measured, and what to do."""
    def some(paths: list[Path]) -> str:
        shown = ", ".join(str(p) for p in paths[:3])
        return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")

    named = "; ".join(f"{len(paths)} record(s) name SHA-256 {want} ({some(paths)})" for want, paths in cited.items())
    what = (f"shipped checkpoint {source} is corrupted ({broken})" if broken else
            f"shipped weights {source / WEIGHTS} have SHA-256 {sha}, not the weights the records measured")
    return (f"{what}: {named} for {name}; restore the checkpoint from git (git checkout -- {source}), or delete those "
            "records to measure new weights")


def write_checkpoint(folder: Path, weights: bytes, meta: bytes) -> None:
    """Write a checkpoint's two files, weights first and metadata last: one without metadata counts as absent, so a
    reader never sees half of it."""
    atomic_write_bytes(folder / WEIGHTS, weights)
    atomic_write_bytes(folder / META, meta)
