"""GAN training (WGAN-GP, resumable per epoch), the store, the measured quality of a generator, and its sample grid.

A GAN is keyed in the store by data set, shape, architecture, training config and seed, like a classifier. Its
metadata holds what invert-and-classify cares about, measured here: the undefended classifier's accuracy on the
projections of clean test images (and on the images themselves, for comparison) and the projections' mean squared
error.

WGAN-GP (Gulrajani et al. 2017, https://arxiv.org/abs/1704.00028): the critic minimises
D(G(z)) - D(x) + lambda (||grad D(x_hat)|| - 1)^2 on random interpolates x_hat, ``critic_steps`` times per generator
step, which minimises -D(G(z)); Adam with the paper's lr 1e-4 and betas (0.5, 0.9).
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
from benchmark.core.options import positive_int
from benchmark.core.progress import progress
from benchmark.data.dataset import Dataset
from benchmark.store.checkpoint import EpochCheckpoint
from benchmark.store.model_store import ModelStore
from benchmark.training.pixelcnn import check_fits
from models.projection import Projection, project

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GANConfig:
    latent: int = 128
    width: int = 64
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.9
    critic_steps: int = 5
    gp_weight: float = 10.0
    quality_points: int = 100  # clean test images projected to measure the generator's quality

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# "small" is the default; "tiny" trains in seconds, for tests.
PRESETS = {
    "tiny": GANConfig(latent=16, width=8, epochs=2, quality_points=16),
    "small": GANConfig(),
}
# "small" per data set. digits serves the tests (the contract tests project with it: a narrow network keeps them
# cheap). MNIST-like data get half the DCGAN width: four times cheaper critic steps, so that two CPU cores get through
# enough of them. The full data sets have 12-17 times more images per epoch than mnist5k.
SMALL_FOR: dict[str, dict[str, int]] = {
    "digits": {"epochs": 10, "width": 16, "quality_points": 50},
    "mnist5k": {"epochs": 100, "width": 32},
    "mnist": {"epochs": 10, "width": 32}, "fashion-mnist": {"epochs": 10, "width": 32}, "cifar10": {"epochs": 20},
}


def gan_config(dataset: str, size: str = "small", latent: int | None = None) -> GANConfig:
    if size not in PRESETS:
        raise BenchError(f"unknown GAN size {size!r}; sizes: {', '.join(PRESETS)}")
    cfg = PRESETS[size]
    if size == "small" and dataset in SMALL_FOR:
        cfg = replace(cfg, **SMALL_FOR[dataset])
    if latent is not None:
        cfg = replace(cfg, latent=positive_int("latent", latent))
    return cfg


def gan_spec(dataset: Dataset, cfg: GANConfig, seed: int) -> dict[str, Any]:
    return {"dataset": dataset.name, "shape": list(dataset.shape), "arch": "gan", "train": cfg.as_dict(), "seed": seed}


def gan_key(dataset: Dataset, size: str = "small", seed: int = 0) -> str:
    """The store key of the GAN ``get_gan`` gives for this data set, size and seed (without loading it)."""
    from benchmark.store.hashing import config_hash

    return config_hash(gan_spec(dataset, gan_config(dataset.name, size), seed))


def build_gan(shape: tuple[int, int, int], cfg: GANConfig) -> nn.Module:
    from benchmark.core.registry import MODELS

    return MODELS.get("gan").factory(tuple(shape), latent=cfg.latent, width=cfg.width)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mean of (||grad D(x_hat)|| - 1)^2 over x_hat drawn uniformly on the segments between real and fake images."""
    t = torch.rand(len(real), 1, 1, 1, generator=gen).to(real.device)
    x_hat = (t * real + (1 - t) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


def train_gan(gan: nn.Module, dataset: Dataset, cfg: GANConfig, device: torch.device, seed: int, folder: Path,
              desc: str = "train gan") -> dict[str, Any]:
    """WGAN-GP on the training split, resumable per epoch; returns the training figures stored with the model."""
    gan.to(device)
    g, d = gan.generator, gan.critic
    train = dataset.train
    batches = math.ceil(len(train) / cfg.batch_size)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = EpochCheckpoint(folder, "GAN training")
    done, seconds, _ = checkpoint.load(gan, [opt_g, opt_d])
    if done:
        log.info("resuming GAN training after epoch %d of %d", done, cfg.epochs)
    bar = progress(total=cfg.epochs * batches, initial=done * batches, desc=desc, unit="batch")
    start, images = time.perf_counter(), 0
    distance = float("nan")
    for epoch in range(done, cfg.epochs):
        gan.train()
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)  # an epoch's draws do not depend on resuming
        perm = torch.randperm(len(train), generator=gen)
        for j, i in enumerate(range(0, len(train), cfg.batch_size)):
            real = train.x[perm[i : i + cfg.batch_size]].to(device)
            z = torch.randn(len(real), cfg.latent, generator=gen).to(device)
            fake = g(z).detach()
            critic_gap = d(fake).mean() - d(real).mean()
            loss_d = critic_gap + cfg.gp_weight * gradient_penalty(d, real, fake, gen)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            distance = -float(critic_gap.detach())  # the critic's estimate of the Wasserstein distance
            if (j + 1) % cfg.critic_steps == 0:
                z = torch.randn(cfg.batch_size, cfg.latent, generator=gen).to(device)
                loss_g = -d(g(z)).mean()
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
            images += len(real)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, w_dist=f"{distance:.3f}", refresh=False)
        checkpoint.save(gan, [opt_g, opt_d], epoch + 1, seconds + time.perf_counter() - start)
    bar.close()
    elapsed = time.perf_counter() - start
    gan.eval()
    checkpoint.remove()
    return {
        "train_images": len(train),
        "train_seconds": round(seconds + elapsed, 1),
        "train_images_per_second": round(images / elapsed, 1) if images else None,
        "final_critic_distance": round(distance, 4),
        "device": str(device),
    }


@torch.no_grad()
def projection_quality(generator: nn.Module, dataset: Dataset, classifier: nn.Module, n: int) -> dict[str, Any]:
    """The classifier's accuracy on the first ``n`` clean test images and on their projections (invert-and-classify's
    defaults), and the projections' mean squared error."""
    x, y = dataset.test.x[:n], dataset.test.y[:n]
    device = next(generator.parameters()).device
    cfg = Projection()
    projected = torch.cat([project(generator, x[i : i + 50].to(device), cfg)[0].cpu() for i in range(0, n, 50)])
    return {
        "quality_points": n,
        "projection": cfg.as_dict(),
        "clean_accuracy": round(float((classifier(x.to(device)).argmax(1).cpu() == y).float().mean()), 4),
        "projected_accuracy": round(float((classifier(projected.to(device)).argmax(1).cpu() == y).float().mean()), 4),
        "projection_mse": round(float((projected - x).square().mean()), 5),
    }


def get_gan(dataset: Dataset, device: torch.device, store: ModelStore, seed: int = 0, size: str = "small",
            latent: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The trained GAN of this data set (trained now when the store lacks it), frozen, in eval mode on ``device``."""
    cfg = gan_config(dataset.name, size, latent)
    spec = gan_spec(dataset, cfg, seed)
    folder = store.folder("gan", spec)

    def build(module: nn.Module) -> dict[str, Any]:
        from benchmark.core.defense import build_defense
        from benchmark.training.zoo import get_classifier

        log.info("no cached GAN for %s; training it now (resumable: rerun to continue)", dataset.name)
        metrics = train_gan(module, dataset, cfg, device, seed, folder, desc=f"train gan on {dataset.name}")
        classifier, meta = get_classifier(dataset, "resnet", build_defense("none"), 0, device, store)
        log.info("measuring the generator: projecting %d clean test images", cfg.quality_points)
        quality = projection_quality(module.generator.eval(), dataset, classifier, cfg.quality_points)
        return {**metrics, **quality, "classifier_key": meta["key"]}

    return store.get_frozen("gan", spec, seed, lambda: build_gan(dataset.shape, cfg), build, device)


def check_gan_fits(meta: dict[str, Any], dataset: Dataset) -> None:
    check_fits(meta, dataset, "GAN")


@torch.no_grad()
def sample_figure(generator: nn.Module, dataset: Dataset, path: Path, per_row: int = 8, seed: int = 0) -> Path:
    """Real test images above the line, generator samples below it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    z = torch.randn(per_row * 2, generator.latent, generator=torch.Generator().manual_seed(seed))
    device = next(generator.parameters()).device
    fake = generator.eval()(z.to(device)).cpu()
    real = dataset.test.x[: per_row * 2]
    fig, axes = plt.subplots(2, 1, figsize=(per_row * 1.1, 2 * 2.3 + 0.4))
    for ax, images, title in ((axes[0], real, "test images"), (axes[1], fake, "generator samples")):
        grid = make_grid(images, nrow=per_row, padding=2, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).numpy(), vmin=0, vmax=1)
        ax.set_title(title)
        ax.set_axis_off()
    fig.suptitle(f"{dataset.name}: WGAN-GP")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return path


def train_gan_command(dataset: Dataset, device: torch.device, seed: int, size: str, latent: int | None,
                      figures: Path) -> list[str]:
    """``bench train gan``: train (or load) the GAN, write its sample grid; the lines the CLI prints."""
    gan, meta = get_gan(dataset, device, ModelStore(), seed=seed, size=size, latent=latent)
    m = meta["metrics"]
    path = sample_figure(gan.generator, dataset, figures / f"{dataset.name}_gan_samples.png", seed=seed)
    return [
        f"gan ({size}, latent {gan.generator.latent}) on {dataset.name} (seed {seed}): classifier accuracy on "
        f"projections of {m['quality_points']} clean test images {100 * m['projected_accuracy']:.1f}% "
        f"(on the images {100 * m['clean_accuracy']:.1f}%), projection MSE {m['projection_mse']:.4f}; "
        f"trained in {m['train_seconds']:.0f} s at {m['train_images_per_second']} images/s on {m['device']}  "
        f"[{meta['key']}]",
        f"wrote {path}",
    ]
