"""``bench perf pixeldefend``: the production purification against the reference, same PixelCNN and images, one run.

Everything is per image. The production path purifies a batch of the defense's default ``batch_size``. The reference
(:func:`defenses.pixeldefend.purify_reference`) runs the whole network once per sub-pixel: H*W*C forward passes, each
the same cost. It runs on the first 64 images of the batch (a larger batch only makes its forward passes slower per
image) and, by default, on the first ``reference_rows`` rows, its time scaled to the whole image (exact for a cost that
is the same per sub-pixel; ``reference_rows=0`` runs it in full). The outputs are compared on the rows both computed:
rows are purified in order, so the reference's first rows are final. The floor is one forward pass of the network at
the batch size where it is fastest per image (the PixelCNN's forward pass is memory-bound: larger batches are slower
per image, while the purifier's per-position work amortises over them); the production path aims at most twice that.
Both are the best of three runs (the forward pass after a warm-up call).
"""
from __future__ import annotations

from typing import Any

import torch

from benchmark.perf.timing import best_of, timed


def _compare(fast: torch.Tensor, ref: torch.Tensor, margins: torch.Tensor, rows: int, tol: float) -> dict[str, int]:
    """Images whose purified first rows are equal, and those whose first difference is a near tie of the reference."""
    b = fast.shape[0]
    diff = (fast[:, :, :rows] != ref[:, :, :rows]).permute(0, 2, 3, 1).reshape(b, -1)
    margin = margins[:, :, :rows].permute(0, 2, 3, 1).reshape(b, -1)
    equal = ties = other = 0
    for i in range(b):
        if not diff[i].any():
            equal += 1
        elif margin[i, int(diff[i].nonzero()[0, 0])] < tol:
            ties += 1
        else:
            other += 1
    return {"images_equal": equal, "images_near_tie": ties, "images_different": other}


FORWARD_BATCHES = (16, 32, 64, 128, 256)
REFERENCE_BATCH = 64


def pixeldefend_speed(case: str, batch: int | None = None, reference_rows: int = 2, device: str = "auto",
                      tol: float = 1e-3, data_root: Any = None) -> dict[str, Any]:
    """One row of the benchmark. ``case``: a data set whose trained PixelCNN is used (e.g. mnist5k), or ``32x32x3``
    (an untrained PixelCNN of the default size: the speed of a network does not depend on its weights). ``batch``:
    images purified at once, by default the defense's ``batch_size``."""
    from benchmark.core.device import resolve_device
    from benchmark.data.dataset import load_dataset
    from benchmark.store.model_store import ModelStore
    from benchmark.training.pixelcnn import PixelCNNConfig, build_pixelcnn, get_pixelcnn
    from defenses.pixeldefend import EPS_DEFEND, PixelDefend, eps_levels, purify, purify_reference

    dev = resolve_device(device)
    batch = batch or PixelDefend().batch_size
    if case == "32x32x3":
        torch.manual_seed(0)
        from models.pixelcnn import sharpen_

        model = sharpen_(build_pixelcnn((3, 32, 32), PixelCNNConfig()).eval()).to(dev)
        x = torch.rand(batch, 3, 32, 32, device=dev)
        eps, trained = eps_levels(EPS_DEFEND["cifar"]), "no (random sharpened weights, random images)"
    else:
        data = load_dataset(case, data_root)
        model, meta = get_pixelcnn(data, dev, ModelStore())
        x = data.test.x[:batch].to(dev)
        eps, trained = eps_levels(EPS_DEFEND[data.family]), f"yes ({meta['metrics']['test_bpd']:.3f} bits/dim)"
    batch = len(x)
    c, h, w = x.shape[1:]
    rows = h if reference_rows <= 0 else min(reference_rows, h)
    forward = {}
    with torch.no_grad():
        for b in sorted({*(b for b in FORWARD_BATCHES if b < batch), batch}):
            forward[b] = best_of({"forward": lambda: model(x[:b])}, repeats=3, warmup=1, device=dev)["forward"] / b
    forward_batch = min(forward, key=forward.__getitem__)
    # the best of three, as the forward pass: both sides of the ratio alike (the first run is its own warm-up)
    kept: dict[str, torch.Tensor] = {}
    fast_s = best_of({"fast": lambda: kept.update(fast=purify(model, x, eps))}, repeats=3, warmup=0,
                     device=dev)["fast"]
    fast = kept["fast"]
    ref_x = x[:REFERENCE_BATCH]
    ref_part_s, ref = timed(lambda: purify_reference(model, ref_x, eps, rows=rows), dev)
    ref_per_image = ref_part_s * h / rows / len(ref_x)  # every sub-pixel costs the reference one full forward pass
    fast_per_image = fast_s / batch
    return {
        "case": case, "trained": trained, "shape": f"{h}x{w}x{c}", "batch": batch, "eps_defend": f"{eps}/255",
        "forward_ms_per_image": round(1000 * forward[forward_batch], 2), "forward_batch": forward_batch,
        "fast_ms_per_image": round(1000 * fast_per_image, 1),
        "fast_over_forward": round(fast_per_image / forward[forward_batch], 2),
        "reference_ms_per_image": round(1000 * ref_per_image), "reference_batch": len(ref_x),
        "reference_rows_run": rows,
        "speedup": round(ref_per_image / fast_per_image, 1),
        **_compare(fast[: len(ref_x)], ref[0], ref[1], rows, tol),
    }


def pixelcnn_training_speed(case: str = "mnist5k", batch: int = 32, steps: int = 5, device: str = "auto"
                            ) -> dict[str, Any]:
    """Training images per second of the default PixelCNN (forward, backward and Adam step), measured here."""
    from benchmark.core.device import resolve_device
    from benchmark.data.dataset import load_dataset
    from benchmark.training.pixelcnn import PixelCNNConfig, build_pixelcnn

    dev = resolve_device(device)
    data = load_dataset(case)
    model = build_pixelcnn(data.shape, PixelCNNConfig()).to(dev)
    opt = torch.optim.Adam(model.parameters())
    x = data.train.x[:batch].to(dev)

    def step() -> None:
        loss = model.bits_per_dim(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    seconds = best_of({"step": step}, repeats=steps, warmup=1, device=dev)["step"]
    return {"case": case, "batch": batch, "train_images_per_second": round(batch / seconds, 1)}
