"""``bench perf gan``: batched projection and deep image prior fits against one image at a time, same outputs.

Projection: all images and restarts as one (B*R, latent) tensor against a loop over images (each image's R restarts
still batched, the form a per-image implementation takes), same L and R, same seed, so the same starts. Deep image
prior: B networks fit at once (grouped convolutions) against one plain network per image. Both report the ratio, ms
per image, the largest difference between the outputs, and the share of the FLOP floor reached: the FLOPs of the work
(counted by :class:`torch.utils.flop_counter.FlopCounterMode`) over the time a large matrix product takes for as many
FLOPs on this machine, in the same run. Speed does not depend on the weights, so untrained networks of the default
size serve (``28x28x1``, ``32x32x3``); a data set name uses its trained GAN instead.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch


def _seconds(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def matmul_flops_per_second(size: int = 1024, repeats: int = 5) -> float:
    """Dense float32 matrix products on this machine: the attainable peak the floor is measured against."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    return max(2 * size**3 / _seconds(lambda: a @ b)[0] for _ in range(repeats))


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
    from .data import load_dataset
    from .gan_training import get_gan
    from .store import ModelStore

    data = load_dataset(case)
    gan, meta = get_gan(data, device, ModelStore())
    return gan.generator, data.test.x, f"yes ({100 * meta['metrics']['projected_accuracy']:.1f}% on projections)"


def projection_speed(case: str = "28x28x1", n: int = 16, steps: int = 200, restarts: int = 10, device: str = "auto",
                     peak: float | None = None) -> dict[str, Any]:
    from defenses.invert_and_classify import Projection, project, project_each, reconstruction_errors

    from .device import resolve_device

    dev = resolve_device(device)
    generator, images, trained = _generator(case, dev)
    gen = torch.Generator().manual_seed(1)
    x = (images[:n] if images is not None else torch.rand(n, *generator.shape, generator=gen)).to(dev)
    cfg = Projection(steps=steps, restarts=restarts)
    project(generator, x[:1], Projection(steps=2, restarts=restarts))  # warm-up
    batched_s, (batched, _, _) = _seconds(lambda: project(generator, x, cfg))
    each_s, each = _seconds(lambda: project_each(generator, x, cfg))
    z = cfg.starts(generator.latent).to(dev).requires_grad_(True)
    step_flops = _flops(lambda: reconstruction_errors(generator, z, x[:1]).sum().backward())
    flops = step_flops * steps * n  # per image and step: R generator passes forward and back to z
    return {"case": case, "trained": trained, "images": n, "L": steps, "R": restarts,
            **_comparison(n, batched_s, each_s, batched, each, flops, peak)}


def dip_speed(case: str = "28x28x1", n: int = 16, iterations: int = 100, device: str = "auto",
              peak: float | None = None) -> dict[str, Any]:
    from defenses.deep_image_prior import DIPFit, fit, fit_each

    from .device import resolve_device

    dev = resolve_device(device)
    shape = _shape(case) if case[0].isdigit() else None
    if shape is None:
        from .data import load_dataset

        x = load_dataset(case).test.x[:n].to(dev)
    else:
        x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(1)).to(dev)
    cfg = DIPFit(iterations)
    fit(x[:2], DIPFit(2))  # warm-up
    batched_s, (batched, _, _) = _seconds(lambda: fit(x, cfg))
    each_s, each = _seconds(lambda: fit_each(x, cfg))
    net, code = DIPFit(1).network(tuple(x.shape[1:]))

    def one_step() -> None:
        (net(code) - x[:1]).square().mean().backward()

    flops = _flops(one_step) * iterations * n
    return {"case": case, "images": n, "iterations": iterations,
            **_comparison(n, batched_s, each_s, batched, each, flops, peak)}


def _comparison(n: int, batched_s: float, each_s: float, batched: torch.Tensor, each: torch.Tensor, flops: float,
                peak: float | None) -> dict[str, Any]:
    """Batched against one image at a time: times, speed-up, agreement and the share of the FLOP floor reached."""
    peak = peak or matmul_flops_per_second()
    return {
        "batched_s": round(batched_s, 2), "batched_ms_per_image": round(1000 * batched_s / n, 1),
        "each_s": round(each_s, 2), "each_ms_per_image": round(1000 * each_s / n, 1),
        "speedup": round(each_s / batched_s, 2), "max_abs_diff": float((batched - each).abs().max()),
        "mflop_per_image": round(flops / n / 1e6, 1),
        "floor_share_batched": round(flops / peak / batched_s, 3), "floor_share_each": round(flops / peak / each_s, 3),
        "matmul_gflops": round(peak / 1e9, 1),
    }
