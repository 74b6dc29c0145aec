"""PixelCNN density models: training (resumable per epoch), the store, likelihood statistics and samples.

A PixelCNN is keyed in the store by data set, shape, architecture, training config and seed, like a classifier. Its
metadata holds its test bits per dimension and the bits per dimension of a fixed sample of training images, the
reference distribution of the paper's p-value (so that detection needs no pass over the training set).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.core.errors import BenchError
from benchmark.core.progress import progress
from benchmark.data.dataset import Dataset, Split
from benchmark.store.checkpoint import EpochCheckpoint
from benchmark.store.model_store import ModelStore

log = logging.getLogger(__name__)

REFERENCE_IMAGES = 2000  # training images whose likelihoods make the p-value's reference distribution


@dataclass(frozen=True)
class PixelCNNConfig:
    filters: int = 32
    blocks: int = 5
    mixtures: int = 5
    dropout: float = 0.0
    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def architecture(self) -> dict[str, Any]:
        return {"filters": self.filters, "blocks": self.blocks, "mixtures": self.mixtures, "dropout": self.dropout}


# "small" trains on mnist5k in about ten minutes on two CPU cores; "medium" has twice the filters and logistics
# (about four times the cost per image) and trains twice the epochs on the full data sets; "large" is the
# one-option-away bigger model; "tiny" trains in seconds, for tests.
PRESETS = {
    "tiny": PixelCNNConfig(filters=8, blocks=2, mixtures=3, epochs=2, batch_size=64, lr=5e-3),
    "small": PixelCNNConfig(),
    "medium": PixelCNNConfig(filters=64, mixtures=10),
    "large": PixelCNNConfig(filters=64, blocks=8, mixtures=10, dropout=0.1, epochs=20),
}
# epochs on the larger data sets (digits: tests; the full sets have 12-17 times mnist5k's images)
EPOCHS_FOR = {"small": {"digits": 3, "mnist": 1, "fashion-mnist": 1, "cifar10": 5},
              "medium": {"digits": 3, "mnist": 2, "fashion-mnist": 2, "cifar10": 5}}


def pixelcnn_config(dataset: str, size: str = "small") -> PixelCNNConfig:
    if size not in PRESETS:
        raise BenchError(f"unknown PixelCNN size {size!r}; sizes: {', '.join(PRESETS)}")
    cfg = PRESETS[size]
    if dataset in EPOCHS_FOR.get(size, {}):
        cfg = replace(cfg, epochs=EPOCHS_FOR[size][dataset])
    return cfg


def pixelcnn_spec(dataset: Dataset, cfg: PixelCNNConfig, seed: int) -> dict[str, Any]:
    return {"dataset": dataset.name, "shape": list(dataset.shape), "arch": "pixelcnn", "train": cfg.as_dict(),
            "seed": seed}


def build_pixelcnn(shape: tuple[int, int, int], cfg: PixelCNNConfig) -> nn.Module:
    from benchmark.core.registry import MODELS

    if shape[0] not in (1, 3):
        raise BenchError(f"the PixelCNN models 1- or 3-channel images, not shape {tuple(shape)}")
    return MODELS.get("pixelcnn").factory(tuple(shape), **cfg.architecture())


@torch.no_grad()
def bits_per_dim(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Per-image bits per dimension (CPU tensor) of images x in [0, 1]."""
    model.eval()
    return torch.cat([model.bits_per_dim(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


def p_values(bpd: torch.Tensor, reference_bpd: torch.Tensor) -> torch.Tensor:
    """The paper's p-value, (1 + #{training images at most as likely as the input}) / (N + 1).

    A likelihood at most the input's is a bits per dimension at least the input's.
    """
    ref = torch.sort(reference_bpd.double()).values
    at_least = len(ref) - torch.searchsorted(ref, bpd.double(), right=False)
    return (at_least + 1).double() / (len(ref) + 1)


def _reference_points(train: Split, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(train), generator=gen)[:REFERENCE_IMAGES]
    return train.x[idx.sort().values]


def train_pixelcnn(model: nn.Module, dataset: Dataset, cfg: PixelCNNConfig, device: torch.device, seed: int,
                   folder: Path, desc: str = "train pixelcnn", save_every: float = 300.0) -> dict[str, Any]:
    """Adam with a cosine-decayed learning rate on the training split; returns the metrics stored with the model.

    The state is kept in ``folder`` after each epoch and every ``save_every`` seconds inside one (an epoch of
    CIFAR-10 takes over an hour of CPU), so an interrupted training resumes at its last save and ends with the
    weights of an uninterrupted one."""
    model.to(device)
    train = dataset.train
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = EpochCheckpoint(folder, "PixelCNN training")
    done, seconds, extra = checkpoint.load(model, opt)
    first = int(extra["batch"]) if "batch" in extra else 0  # batches done in the unfinished epoch
    if done or first:
        log.info("resuming PixelCNN training at epoch %d of %d, batch %d", done + 1, cfg.epochs, first)
        if "rng.torch" in extra:  # dropout's draws go on as if never interrupted
            torch.set_rng_state(extra["rng.torch"])

    def lr_at(step: int) -> float:
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))

    bar = progress(total=total, initial=done * steps_per_epoch + first, desc=desc, unit="batch")
    images = 0
    start = time.perf_counter()

    def save(epochs_done: int, batch: int = 0) -> float:
        state = {"rng.torch": torch.get_rng_state()}
        if batch:
            state["batch"] = torch.tensor(batch)
        checkpoint.save(model, opt, epochs_done, seconds + time.perf_counter() - start, state)
        return time.monotonic()

    last_save = time.monotonic()
    for epoch in range(done, cfg.epochs):
        model.train()
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)  # the order of an epoch does not depend on resuming
        perm = torch.randperm(len(train), generator=gen)
        for j in range(first, steps_per_epoch):
            for group in opt.param_groups:
                group["lr"] = lr_at(epoch * steps_per_epoch + j)
            x = train.x[perm[j * cfg.batch_size : (j + 1) * cfg.batch_size]].to(device)
            loss = model.bits_per_dim(x).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            images += len(x)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, bpd=f"{loss.item():.3f}", refresh=False)
            if j + 1 < steps_per_epoch and time.monotonic() - last_save > save_every:
                last_save = save(epoch, j + 1)
        first = 0
        last_save = save(epoch + 1)
    bar.close()
    elapsed = time.perf_counter() - start
    model.eval()
    metrics = {
        "test_bpd": float(bits_per_dim(model, dataset.test.x, device).mean()),
        "val_bpd": float(bits_per_dim(model, dataset.val.x, device).mean()),
        "reference_bpd": [round(float(v), 6) for v in bits_per_dim(model, _reference_points(train, seed), device)],
        "train_images": len(train),
        "train_seconds": round(seconds + elapsed, 1),
        "train_images_per_second": round(images / elapsed, 1) if images else None,
        "device": str(device),
    }
    checkpoint.remove()
    return metrics


def get_pixelcnn(dataset: Dataset, device: torch.device, store: ModelStore, seed: int = 0, size: str = "small"
                 ) -> tuple[nn.Module, dict[str, Any]]:
    """The trained PixelCNN of this data set (trained now when the store lacks it), in eval mode on ``device``."""
    cfg = pixelcnn_config(dataset.name, size)
    spec = pixelcnn_spec(dataset, cfg, seed)
    folder = store.folder("pixelcnn", spec)

    def build(module: nn.Module) -> dict[str, Any]:
        log.info("no cached PixelCNN for %s; training it now (resumable: rerun to continue)", dataset.name)
        torch.manual_seed(seed)
        return train_pixelcnn(module, dataset, cfg, device, seed, folder, desc=f"train pixelcnn on {dataset.name}")

    return store.get_frozen("pixelcnn", spec, seed, lambda: build_pixelcnn(dataset.shape, cfg), build, device)


def check_fits(meta: dict[str, Any], dataset: Dataset, what: str) -> None:
    """Refuse a generative model (``what``: PixelCNN, GAN) trained on another data set or image shape."""
    spec = meta.get("spec", {})
    if spec.get("dataset") != dataset.name or list(spec.get("shape", [])) != list(dataset.shape):
        raise BenchError(
            f"this {what} was trained on {spec.get('dataset')!r} images of shape {tuple(spec.get('shape', []))}, "
            f"not on {dataset.name!r} of shape {tuple(dataset.shape)}; use a {what} trained on {dataset.name}"
        )


def check_pixelcnn_fits(meta: dict[str, Any], dataset: Dataset) -> None:
    check_fits(meta, dataset, "PixelCNN")


@torch.no_grad()
def sample(model: nn.Module, n: int, seed: int = 0) -> torch.Tensor:
    """n images drawn from the PixelCNN in raster order (the incremental evaluator makes this one network pass)."""
    from models import mixture
    from models.pixelcnn_fast import IncrementalPixelCNN

    device = next(model.parameters()).device
    c, h, w = model.shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, c, h, w, device=device)
    inc = IncrementalPixelCNN(model, x)
    for r in range(h):
        inc.begin_row(r)
        for col in range(w):
            params = inc.params_at(r, col)
            t = torch.zeros(n, c, device=device)
            for k in range(c):
                probs = mixture.channel_log_probs(params, t, k, model.mixtures).softmax(1).cpu()
                level = torch.multinomial(probs, 1, generator=gen)[:, 0].to(device)
                x[:, k, r, col] = level.float() / 255
                t[:, k] = level.float() * (2 / 255) - 1
            inc.set_pixel(r, col, x[:, :, r, col])
    return x


def sample_figure_name(dataset: str, size: str) -> str:
    """The sample grid's file name: the default preset keeps the plain name, the others sit beside it."""
    return f"{dataset}_pixelcnn_samples.png" if size == "small" else f"{dataset}_pixelcnn_{size}_samples.png"


def sample_figure(model: nn.Module, dataset: Dataset, path: Path, per_row: int = 8, seed: int = 0) -> Path:
    """Real test images above the line, PixelCNN samples below it (the paper's Figure 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real = dataset.test.x[: per_row * 2]
    fake = sample(model, per_row * 2, seed).cpu()
    images = torch.cat([real, fake])
    fig, axes = plt.subplots(4, per_row, figsize=(per_row * 1.1, 4 * 1.1 + 0.4))
    for ax, img in zip(axes.flat, images):
        ax.imshow(img.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[2]:
        ax.spines["top"].set(color="red", linewidth=3)
    fig.suptitle(f"{dataset.name}: test images (top two rows), PixelCNN samples (bottom two rows)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return path
