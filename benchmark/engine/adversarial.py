"""Generating adversarial inputs against a classifier, checked by the harness, cached by key.

Under the oblivious (and transfer) threat model the adversarial inputs depend only on the attacked classifier, the
attack, the budgets and the test points, not on the defense: they are generated once, kept as an artifact in the
cache (safetensors, keyed by all of the above) and reused for every defense that shares the classifier.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from benchmark.core.attack import Attack
from benchmark.core.budgets import format_eps
from benchmark.core.errors import CellFailed
from benchmark.core.progress import progress
from benchmark.core.vocab import AttackKind, Norm
from benchmark.engine.checks import check_adversarial, norms, project_linf
from benchmark.store.hashing import config_hash
from benchmark.store.paths import cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdversarialSet:
    """Adversarial inputs for one attack on one classifier: one tensor per budget, plus unclipped sizes for minimal
    attacks (``found``, ``l0``, ``l2``, ``linf`` per example) and the attack's wall time."""

    per_eps: list[torch.Tensor]
    unbounded: dict[str, torch.Tensor] | None
    seconds: float


def batch_seed(seed: int, attack: str, start: int) -> int:
    """Random draws of a batch depend on the run's seed, the attack and the batch's first index only."""
    return (seed * 1_000_003 + zlib.crc32(attack.encode()) + start) % (2**63)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(1)


def _artifact_path(key: dict) -> Path:
    return cache_dir() / "adversarial" / f"{config_hash(key)}.safetensors"


def _load_artifact(path: Path, n_eps: int, minimal: bool, shape: tuple[int, ...] | None = None
                   ) -> AdversarialSet | None:
    """The cached inputs at ``path``, or None when they are corrupt (said in one line; the caller regenerates them):
    unreadable, missing a tensor, or of another shape than the test points' (``shape``)."""
    from safetensors.torch import load_file

    try:
        t = load_file(str(path))
        per_eps = [t[f"eps{i}"] for i in range(n_eps)]
        unbounded = {k: t[f"unbounded.{k}"] for k in ("found", "l0", "l2", "linf")} if minimal else None
        if shape is not None:
            bad = [tuple(x.shape) for x in per_eps if tuple(x.shape) != shape]
            bad += [tuple(v.shape) for v in (unbounded or {}).values() if tuple(v.shape) != shape[:1]]
            if bad:
                raise ValueError(f"a tensor of shape {bad[0]}, for test points of shape {shape}")
        return AdversarialSet(per_eps, unbounded, float(t["seconds"]))
    except Exception as exc:  # a damaged artifact is regenerated, never used
        log.warning("cached adversarial inputs %s are corrupt (%s); regenerating them", path, exc)
        return None


def _save_artifact(path: Path, adv: AdversarialSet) -> None:
    from safetensors.torch import save_file

    tensors = {f"eps{i}": t.contiguous().cpu() for i, t in enumerate(adv.per_eps)}
    if adv.unbounded is not None:
        tensors.update({f"unbounded.{k}": v.contiguous().cpu() for k, v in adv.unbounded.items()})
    tensors["seconds"] = torch.tensor(adv.seconds)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a temporary name of its own: two runs (or Ray workers) may write the same artifact at once
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def generate(
    attack: Attack,
    classifier: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: tuple[float, ...],
    seed: int,
    batch_size: int,
    device: torch.device,
    cache_key: dict | None = None,
) -> AdversarialSet:
    """Run ``attack`` on ``classifier`` for test points (x, y) at every budget; every output is checked.

    Fixed-eps attacks run once per budget. Minimal attacks run once; their result is projected into each
    L-infinity budget (the PixelDefend paper clips every attack to eps_attack) and their unclipped size is kept.
    """
    minimal = attack.kind == AttackKind.MINIMAL
    path = _artifact_path(cache_key) if cache_key is not None else None
    if path is not None and path.exists():
        cached = _load_artifact(path, len(eps), minimal, tuple(x.shape))
        if cached is not None:
            return cached
    per_eps: list[list[torch.Tensor]] = [[] for _ in eps]
    sizes: dict[str, list[torch.Tensor]] = {"found": [], "l0": [], "l2": [], "linf": []}
    start_time = time.perf_counter()
    bar = progress(total=len(x) * (1 if minimal else len(eps)), desc=f"attack {attack.name}", unit="img")
    with passes_shown(classifier, bar):
        _run_batches(attack, classifier, x, y, eps, seed, batch_size, device, minimal, per_eps, sizes, bar)
    bar.close()
    result = AdversarialSet(
        per_eps=[torch.cat(parts) for parts in per_eps],
        unbounded={k: torch.cat(v) for k, v in sizes.items()} if minimal else None,
        seconds=time.perf_counter() - start_time,
    )
    if path is not None:
        try:
            _save_artifact(path, result)
        except OSError as exc:  # a full disk: the inputs are only a cache, the cell goes on with them
            log.warning("could not cache adversarial inputs in %s (%s); going on without the cache", path,
                        exc.strerror or exc)
    return result


@contextmanager
def passes_shown(model: nn.Module, bar: Any) -> Iterator[None]:
    """Count the attack's passes through ``model`` on ``bar`` (a forward hook, so any attack, ours or a library's,
    moves the bar at every step, restart or query batch, not only when a batch of images is finished)."""
    if bar.disable:
        yield
        return
    count = [0]
    started = time.perf_counter()

    def tick(*_: Any) -> None:
        count[0] += 1
        rate = count[0] / max(time.perf_counter() - started, 1e-9)
        bar.set_postfix_str(f"{count[0]} passes, {rate:.1f} passes/s", refresh=False)
        bar.update(0)  # redraws when tqdm's refresh interval has passed: elapsed time and passes move

    handle = model.register_forward_hook(tick)
    try:
        yield
    finally:
        handle.remove()


def _run_batches(attack: Attack, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: tuple[float, ...],
                 seed: int, batch_size: int, device: torch.device, minimal: bool,
                 per_eps: list[list[torch.Tensor]], sizes: dict[str, list[torch.Tensor]], bar: Any) -> None:
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)
        torch.manual_seed(batch_seed(seed, attack.name, start))
        if minimal:
            adv = attack.run(classifier, xb, yb, None).detach()
            check_adversarial(xb, adv, None, None, f"attack {attack.name}")
            found = predict(classifier, adv) != yb
            delta = torch.where(found.view(-1, 1, 1, 1), adv - xb, torch.zeros_like(xb))
            sizes["found"].append(found.float().cpu())
            for name, value in norms(delta).items():
                sizes[name].append(value.cpu())
            for i, e in enumerate(eps):
                projected = project_linf(xb, torch.where(found.view(-1, 1, 1, 1), adv, xb), e)
                check_adversarial(xb, projected, Norm.LINF, e, f"attack {attack.name} at {format_eps(e)}")
                per_eps[i].append(projected.cpu())
            bar.update(len(xb))
        else:
            for i, e in enumerate(eps):
                adv = attack.run(classifier, xb, yb, e).detach()
                check_adversarial(xb, adv, attack.norm, e, f"attack {attack.name} at {format_eps(e)}")
                per_eps[i].append(adv.cpu())
                bar.update(len(xb))


__all__ = ["AdversarialSet", "CellFailed", "generate", "predict", "batch_seed"]
