"""Speed benchmarks (``bench perf ...``): ratios measured in one run, on this machine, never in unit tests.

* ``overhead``: the harness's attack path (:func:`benchmark.engine.adversarial.generate`, with its checks) against
  calling the attack directly on the same model and inputs: foolbox's FGSM, torchattacks' BIM, our CW's bare
  ``run``. Calls are interleaved and the best of ``repeats`` is kept for each, so that noise from other processes
  hurts both sides alike (:func:`benchmark.perf.timing.best_of`, after ``warmup`` untimed calls of each).
* ``grid``: ``bench run --defense feature-squeezing --attack all`` on mnist5k with n=100, first with an empty cache
  and no shipped weights (training the classifier included), then with the classifier cached (adversarial inputs
  regenerated); also each attack's own seconds in both runs, from its records. ``first-command``
  (:mod:`benchmark.perf.jobs`) times the job as a new user meets it, with the shipped weights.
* ``attacks`` (:mod:`benchmark.perf.attacks`): attacks made cheaper against the implementation and settings they
  replaced: time, success, median size and accuracy per budget.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmark.perf.timing import best_of, timed


def harness_overhead(n: int = 200, batch_size: int = 100, repeats: int = 3, device: str = "auto", warmup: int = 1
                     ) -> list[dict[str, Any]]:
    import foolbox as fb
    import torchattacks

    from attacks.gradient import paper_bim_steps
    from benchmark.core.defense import build_defense
    from benchmark.core.device import resolve_device
    from benchmark.core.registry import ATTACKS
    from benchmark.data.dataset import load_dataset
    from benchmark.engine.adversarial import generate
    from benchmark.store.model_store import ModelStore
    from benchmark.training.zoo import get_classifier

    dev = resolve_device(device)
    data = load_dataset("mnist5k")
    model, _ = get_classifier(data, "resnet", build_defense("none"), 0, dev, ModelStore())
    eps = 25 / 255
    cw = ATTACKS.build("cw")
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=dev)

    def direct(name: str, x: torch.Tensor, y: torch.Tensor) -> None:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size].to(dev), y[i : i + batch_size].to(dev)
            if name == "fgsm":
                fb.attacks.LinfFastGradientAttack()(fmodel, xb, yb, epsilons=eps)
            elif name == "bim":
                torchattacks.BIM(model, eps=eps, alpha=1 / 255, steps=paper_bim_steps(eps))(xb, yb)
            else:  # ours: its bare run, without the harness's seeding, checks and bookkeeping
                cw.run(model, xb, yb, None)

    rows = []
    for name, count in (("fgsm", n), ("bim", n), ("cw", max(batch_size, n // 4))):
        x, y = data.test.x[:count], data.test.y[:count]
        attack = ATTACKS.build(name)
        best = best_of({"direct": lambda name=name, x=x, y=y: direct(name, x, y),
                        "harness": lambda a=attack, x=x, y=y: generate(a, model, x, y, (eps,), 0, batch_size, dev)},
                       repeats=repeats, warmup=warmup, device=dev)
        d, h = best["direct"], best["harness"]
        rows.append({"attack": name, "n": count, "direct_s": round(d, 3), "harness_s": round(h, 3),
                     "overhead_pct": round(100 * (h / d - 1), 1)})
    return rows


def grid_time(n: int = 100, attack: str = "all") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Wall time of the README's main job, cold (empty cache: trains the classifier) and with the classifier cached;
    and each attack's own seconds in either run (from its records), slowest first."""
    import json

    root = Path(tempfile.mkdtemp(prefix="bench-perf-"))
    env = {**os.environ, "BENCH_CACHE": str(root / "cache"), "BENCH_QUIET": "1"}
    cmd = [sys.executable, "-m", "benchmark.cli", "run", "--dataset", "mnist5k", "--defense", "feature-squeezing",
           "--attack", attack, "--n", str(n), "--quiet"]
    try:
        timings: dict[str, float] = {}
        per_attack: dict[str, dict[str, Any]] = {}
        for label in ("cold", "cached"):
            results = root / f"results-{label}"
            shutil.rmtree(root / "cache" / "adversarial", ignore_errors=True)  # regenerate attacks, keep models
            args = [*cmd, "--results-dir", str(results)]
            seconds, _ = timed(lambda args=args: subprocess.run(args, env=env, check=True, capture_output=True))
            timings[f"{label}_s"] = round(seconds, 1)
            for path in sorted((results / "records").rglob("*.json")):
                record = json.loads(path.read_text())
                row = per_attack.setdefault(record["config"]["attack"], {"attack": record["config"]["attack"]})
                row[f"{label}_s"] = round(record["provenance"]["attack_seconds"], 1)
        attacks = sorted(per_attack.values(), key=lambda r: -r.get("cached_s", 0.0))
        return {"command": " ".join(cmd[3:]), **timings}, attacks
    finally:
        shutil.rmtree(root, ignore_errors=True)
