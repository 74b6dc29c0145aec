"""``bench perf gan``: batched projection and deep image prior fits against one image at a time, same outputs.

Projection: all images and restarts as one (B*R, latent) tensor against a loop over images (each image's R restarts
still batched, the form a per-image implementation takes), same L and R, same seed, so the same starts. Deep image
prior: B networks fit at once (grouped convolutions) against one plain network per image. Both report the ratio, ms
per image and the largest difference between the outputs.

How far each is from what the CPU can do: the share of the peak, the FLOPs of the work (counted by
:class:`torch.utils.flop_counter.FlopCounterMode`) over the time, divided by the rate of a dense 1024x1024 float32
matrix product on one thread (:func:`benchmark.perf.timing.matmul_peak`), measured in the same run. The headline is
the per-image loop's share (``each_peak_share``): batching cannot run the work faster than the peak, so about
1 / ``each_peak_share`` bounds what it can gain on this machine. The work runs on ``threads`` torch threads (1 by
default, so that it is compared with the peak of as many threads). The old batching targets (10x for projection, 5x
for the deep image prior) are retired in favour of that share. An earlier peak of 3.3 GFLOP/s was taken under
oversubscription (two processes of two threads each on two cores) while one idle thread reaches about 100: hence the
machine record beside every number.

Speed does not depend on the weights, so untrained networks of the default size serve (``28x28x1``, ``32x32x3``);
a data set name uses its trained GAN instead.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from benchmark.perf.timing import best_of, matmul_peak, pinned_threads


def one_thread_peak(device: Any = "cpu") -> float:
    """FLOP/s of :func:`benchmark.perf.timing.matmul_peak` on one torch thread (restored afterwards)."""
    with pinned_threads(1):
        return matmul_peak(device)


def _batched_and_each(batched: Callable[[], Any], each: Callable[[], Any], repeats: int, device: torch.device
                      ) -> tuple[float, float, Any, Any]:
    """Best seconds of the batched and the per-image version, interleaved, and each one's last output."""
    out: dict[str, Any] = {}
    best = best_of({"batched": lambda: out.__setitem__("batched", batched()),
                    "each": lambda: out.__setitem__("each", each())}, repeats=repeats, warmup=0, device=device)
    return best["batched"], best["each"], out["batched"], out["each"]


def _flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _shape(case: str) -> tuple[int, int, int]:
    h, w, c = (int(v) for v in case.split("x"))
    return c, h, w


def _generator(case: str, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor | None, str]:
    """The generator of a case and, for a data set, its test images."""
    if "x" in case and case[0].isdigit():
        from models.gan import Generator

        torch.manual_seed(0)
        return Generator(_shape(case)).to(device).eval().requires_grad_(False), None, "no (random weights)"
    from benchmark.data.dataset import load_dataset
    from benchmark.store.model_store import ModelStore
    from benchmark.training.gan import get_gan

    data = load_dataset(case)
    gan, meta = get_gan(data, device, ModelStore())
    return gan.generator, data.test.x, f"yes ({100 * meta['metrics']['projected_accuracy']:.1f}% on projections)"


def projection_speed(case: str = "28x28x1", n: int = 16, steps: int = 200, restarts: int = 10, device: str = "auto",
                     peak: float | None = None, repeats: int = 1) -> dict[str, Any]:
    """One row: the projection of ``n`` images, batched and one image at a time (best of ``repeats`` each, after a
    small warm-up), against ``peak`` FLOP/s (default: :func:`one_thread_peak`, measured now)."""
    from benchmark.core.device import resolve_device
    from models.projection import (
        Projection,
        project,
        project_each,
        reconstruction_errors,
    )

    dev = resolve_device(device)
    generator, images, trained = _generator(case, dev)
    gen = torch.Generator().manual_seed(1)
    x = (images[:n] if images is not None else torch.rand(n, *generator.shape, generator=gen)).to(dev)
    cfg = Projection(steps=steps, restarts=restarts)
    project(generator, x[:1], Projection(steps=2, restarts=restarts))  # warm-up
    batched_s, each_s, (batched, _, _), each = _batched_and_each(
        lambda: project(generator, x, cfg), lambda: project_each(generator, x, cfg), repeats, dev)
    z = cfg.starts(generator.latent).to(dev).requires_grad_(True)
    step_flops = _flops(lambda: reconstruction_errors(generator, z, x[:1]).sum().backward())
    flops = step_flops * steps * n  # per image and step: R generator passes forward and back to z
    return {"case": case, "trained": trained, "images": n, "L": steps, "R": restarts,
            **_comparison(n, batched_s, each_s, batched, each, flops, peak)}


def dip_speed(case: str = "28x28x1", n: int = 16, iterations: int = 100, device: str = "auto",
              peak: float | None = None, repeats: int = 1) -> dict[str, Any]:
    """One row: deep image prior fits of ``n`` images, batched and one image at a time, like
    :func:`projection_speed`."""
    from benchmark.core.device import resolve_device
    from models.dip import DIPFit, fit, fit_each

    dev = resolve_device(device)
    shape = _shape(case) if case[0].isdigit() else None
    if shape is None:
        from benchmark.data.dataset import load_dataset

        x = load_dataset(case).test.x[:n].to(dev)
    else:
        x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(1)).to(dev)
    cfg = DIPFit(iterations)
    fit(x[:2], DIPFit(2))  # warm-up
    batched_s, each_s, (batched, _, _), each = _batched_and_each(lambda: fit(x, cfg), lambda: fit_each(x, cfg),
                                                                 repeats, dev)
    net, code = DIPFit(1).network(tuple(x.shape[1:]))

    def one_step() -> None:
        (net(code) - x[:1]).square().mean().backward()

    flops = _flops(one_step) * iterations * n
    return {"case": case, "images": n, "iterations": iterations,
            **_comparison(n, batched_s, each_s, batched, each, flops, peak)}


def _comparison(n: int, batched_s: float, each_s: float, batched: torch.Tensor, each: torch.Tensor, flops: float,
                peak: float | None) -> dict[str, Any]:
    """Batched against one image at a time: times, speed-up, agreement, and each one's share of the one-thread matrix
    product peak (the per-image loop's is the headline)."""
    peak = peak or one_thread_peak()
    return {
        "batched_s": round(batched_s, 2), "batched_ms_per_image": round(1000 * batched_s / n, 1),
        "each_s": round(each_s, 2), "each_ms_per_image": round(1000 * each_s / n, 1),
        "speedup": round(each_s / batched_s, 2), "max_abs_diff": float((batched - each).abs().max()),
        "mflop_per_image": round(flops / n / 1e6, 1),
        "each_peak_share": round(flops / peak / each_s, 3), "batched_peak_share": round(flops / peak / batched_s, 3),
        "matmul_gflops_1_thread": round(peak / 1e9, 1), "torch_threads": torch.get_num_threads(),
    }
