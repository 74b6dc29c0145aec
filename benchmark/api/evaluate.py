"""``evaluate()``: measure a model, with or without defenses, against attacks, from Python.

The RobustBench pattern (``benchmark(model, dataset=..., threat_model=..., n_examples=...)``) for this project's
grid: every (defense, attack) cell is evaluated by the same engine as ``bench run`` (which calls this function), and
its record is exactly the one ``bench run`` writes. With a ``results_dir`` the records land there and a rerun resumes;
without one nothing is written.
"""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from torch import nn

from benchmark.api.naming import spec_of
from benchmark.api.results import Results
from benchmark.core.attack import Attack
from benchmark.core.budgets import parse_eps
from benchmark.core.defense import Defense, build_defense
from benchmark.core.errors import BenchError, WriteFailed
from benchmark.core.progress import is_quiet, set_quiet
from benchmark.core.registry import ATTACKS, DEFENSES
from benchmark.core.vocab import Threat
from benchmark.data.dataset import Dataset, load_dataset
from benchmark.engine.grid import RunPlan
from benchmark.engine.runner import run as run_grid
from benchmark.engine.threats import ThreatOptions
from benchmark.training.zoo import UserModel, build_classifier

THREAT_OPTIONS = {"eot_samples": int, "eval_draws": int, "real_forward": bool}
DEFAULT_BATCH_SIZE = 250


def evaluate(model: str | nn.Module, defense: Any = None, dataset: str = "mnist5k", attacks: Any = "paper",
             eps: Sequence[float | str] | None = None, threat: str = "oblivious", n: int | None = 100, seed: int = 0,
             device: str = "auto", results_dir: str | Path | None = None, batch_size: int | None = None,
             progress: bool = True, *, weights: str | Path | None = None, data_root: str | None = None,
             download: bool = False, executor: Any = None, **threat_options: Any) -> Results:
    """Evaluate ``model`` behind each defense against each attack; one record per (defense, attack) cell.

    Args:
        model: a registered classifier name (trained by the project, or restored from its shipped weights), or any
            ``nn.Module`` mapping NCHW images in [0, 1] to logits; records name it by its weights' SHA-256.
        defense: a registered name, a name with options (``"jpeg(quality=50)"``), a ``+`` composition, a
            :class:`~benchmark.core.defense.Defense` instance, or a list of any of these; None means no defense.
        dataset: a registered data set, or ``"folder:PATH"`` for images in PATH/train/<class>/ and PATH/test/<class>/.
        attacks: names, groups (``"paper"``), ``"all"``, wildcards, names with options (``"pgd(steps=200)"``), or
            :class:`~benchmark.core.attack.Attack` instances (one or a list).
        eps: budgets in [0, 1] (floats or text such as ``"8/255"``); None: the data set's (the paper's).
        threat: ``"oblivious"``, ``"adaptive"`` or ``"transfer"``.
        n: test points (the first n of the stratified test order).
        results_dir: where records are written and looked up to resume; None writes nothing.
        weights: with a registered ``model`` name: a ``.safetensors`` or ``.pt`` state dict trained elsewhere.
        threat_options: ``eot_samples``, ``eval_draws``, ``real_forward`` (the adaptive threat model's knobs).

    Returns: the :class:`~benchmark.api.results.Results` of every cell.
    """
    with _progress(progress):
        options = _threat_options(threat_options)
        threat_model = _threat(threat)
        data = load_dataset(str(dataset), data_root, download)
        user = _user_model(model, weights, data)
        model_name = user.name if user is not None else str(model)
        defenses = _defenses(defense)
        attack_map = _attacks(attacks, list(defenses.values()), list(defenses), threat_model)
        budgets = _budgets(eps)
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise BenchError(f"batch_size must be a positive integer, not {batch_size!r}")
        with _results_folder(results_dir) as folder:
            plan = RunPlan(dataset=data.name, model=model_name, defenses=tuple(defenses), attacks=tuple(attack_map),
                           eps=budgets, n=n, threat=threat_model, threat_options=options, seed=seed, device=device,
                           results_dir=folder, batch_size=batch_size or DEFAULT_BATCH_SIZE, data_root=data_root,
                           download=download)
            try:
                cells = run_grid(plan, executor=executor, defenses={k: v for k, v in defenses.items() if v is not None},
                                 attacks={k: v for k, v in attack_map.items() if v is not None}, user_model=user)
            except WriteFailed as exc:  # a full disk stopped the grid: the finished cells' results go with it
                exc.results = Results(exc.cells, data.default_eps if budgets is None else budgets)
                raise
        return Results(cells, data.default_eps if budgets is None else budgets)


@contextmanager
def _progress(show: bool) -> Iterator[None]:
    before = is_quiet()
    set_quiet(before or not show)
    try:
        yield
    finally:
        set_quiet(before)


@contextmanager
def _results_folder(results_dir: str | Path | None) -> Iterator[Path]:
    """The folder records go to; without one, a temporary folder that is removed afterwards (nothing is kept)."""
    if results_dir is not None:
        yield Path(results_dir)
        return
    with tempfile.TemporaryDirectory(prefix="defensebench-") as tmp:
        yield Path(tmp)


def _threat(threat: str | Threat) -> Threat:
    try:
        return Threat(threat)
    except ValueError:
        valid = ", ".join(t.value for t in Threat)
        raise BenchError(f"unknown threat model {threat!r}; choose one of {valid}") from None


def _threat_options(given: dict[str, Any]) -> ThreatOptions:
    unknown = [k for k in given if k not in THREAT_OPTIONS]
    if unknown:
        raise BenchError(f"evaluate() got an unknown option {unknown[0]!r}; threat options: "
                         f"{', '.join(THREAT_OPTIONS)}")
    for key, kind in THREAT_OPTIONS.items():
        value = given.get(key)
        if value is None:
            continue
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise BenchError(f"{key} must be a positive integer, not {value!r}")
        if kind is bool and not isinstance(value, bool):
            raise BenchError(f"{key} must be True or False, not {value!r}")
    defaults = ThreatOptions()
    return ThreatOptions(eot_samples=given.get("eot_samples", defaults.eot_samples),
                         eval_draws=given.get("eval_draws", defaults.eval_draws),
                         stand_ins=not given.get("real_forward", False))


def _user_model(model: Any, weights: Any, data: Dataset) -> UserModel | None:
    """None for a registered classifier trained by the project; else the user's weights, named."""
    if isinstance(model, nn.Module):
        if weights is not None:
            raise BenchError("weights= applies to a registered model name; an nn.Module brings its own weights")
        return UserModel.of(model)
    if not isinstance(model, str):
        raise BenchError(f"model must be a registered classifier name or an nn.Module, not {type(model).__name__}")
    if weights is None:
        return None
    from benchmark.store.weights import load_weights

    module = build_classifier(data, model)
    sha = load_weights(module, Path(weights), model)
    return UserModel.of(module, arch=model, sha256=sha)


def _defenses(defense: Any) -> dict[str, Defense | None]:
    """Record name -> the user's instance (None: built from the registry by that name), in the order given."""
    items = [None] if defense is None else (list(defense) if isinstance(defense, (list, tuple)) else [defense])
    out: dict[str, Defense | None] = {}
    for item in items:
        if item is None:
            out.setdefault("none", None)
        elif isinstance(item, Defense):
            item.name = spec_of(item)  # the name its records (and its per-batch seeds) go by
            out[item.name] = item
        elif isinstance(item, str):
            for name in DEFENSES.select(item):
                build_defense(name)  # every part and option checked now, not in the middle of the grid
                out.setdefault(name, None)
        else:
            raise BenchError(f"a defense is a name, a Defense instance or a list of them, not {type(item).__name__}")
    return out


def _attacks(attacks: Any, instances: list[Defense | None], names: list[str], threat: Threat
             ) -> dict[str, Attack | None]:
    items = list(attacks) if isinstance(attacks, (list, tuple)) else [attacks]
    out: dict[str, Attack | None] = {}
    defenses = [d if d is not None else build_defense(name) for d, name in zip(instances, names)]
    for item in items:
        if isinstance(item, Attack):
            item.name = spec_of(item)
            out[item.name] = item
        elif isinstance(item, str):
            out.update({name: None for name in applicable_attacks(item, defenses, names, threat) if name not in out})
        else:
            raise BenchError(f"an attack is a name, an Attack instance or a list of them, not {type(item).__name__}")
    if not out:
        raise BenchError("no attack given; name one (fgsm), a group (paper), or all")
    return out


def applicable_attacks(spec: str, defenses: list[Defense], names: list[str], threat: Threat) -> list[str]:
    """The selected attacks, less those that ``all``, a group or a wildcard brought in but that apply to none of the
    defenses under this threat model (each left out with a warning)."""
    import logging

    log = logging.getLogger("benchmark")
    chosen, named = ATTACKS.select(spec), ATTACKS.named(spec)
    kept = []
    for name in chosen:
        reasons = [ATTACKS.configure(name).entry.factory.applies_to(d, threat) for d in defenses]
        if name not in named and all(reasons):
            log.warning("leaving out %s: %s", name, reasons[0])
        else:
            kept.append(name)
    if not kept:
        raise BenchError(f"no attack of {spec!r} applies to {', '.join(names)} under --threat {threat.value}")
    return kept


def _budgets(eps: Any) -> tuple[float, ...] | None:
    if eps is None:
        return None
    values = [eps] if isinstance(eps, (int, float, str)) else list(eps)
    parsed = set()
    for value in values:
        if isinstance(value, str):
            parsed.update(parse_eps(part) for part in value.split(",") if part.strip())
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
            parsed.add(float(value))
        else:
            raise BenchError(f"budget {value!r} is not in [0, 1]; write 8/255 or 0.0314")
    if not parsed:
        raise BenchError("no budget given; use e.g. eps=['8/255', '25/255']")
    return tuple(sorted(parsed))
