"""Training classifiers: one loop for every training-time defense (the defense supplies the loss)."""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.modes import eval_mode
from benchmark.core.progress import progress
from benchmark.data.dataset import Dataset, Split
from benchmark.store.checkpoint import EpochCheckpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    shift: int = 2  # random translation in pixels (MNIST-like); CIFAR also flips
    flip: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# Per data set: enough epochs to reach the paper's clean accuracy on two CPU cores in minutes.
DEFAULT_TRAIN = {
    "digits": TrainConfig(epochs=15, batch_size=64, shift=1),
    "mnist5k": TrainConfig(epochs=15),
    "mnist": TrainConfig(epochs=3),
    "fashion-mnist": TrainConfig(epochs=3),
    "cifar10": TrainConfig(epochs=30, shift=4, flip=True),
}


def default_train_config(dataset: str) -> TrainConfig:
    return DEFAULT_TRAIN.get(dataset, TrainConfig(epochs=10))


def augment(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``cfg.shift`` pixels (zero padding), and horizontal flips when asked."""
    if cfg.shift:
        n, _, h, w = x.shape
        s = cfg.shift
        padded = F.pad(x, (s, s, s, s))
        dx = torch.randint(0, 2 * s + 1, (n,), generator=gen)
        dy = torch.randint(0, 2 * s + 1, (n,), generator=gen)
        rows = (dy[:, None] + torch.arange(h)[None, :]).to(x.device)
        cols = (dx[:, None] + torch.arange(w)[None, :]).to(x.device)
        idx_n = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if cfg.flip:
        flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x.contiguous()


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, device: torch.device, batch_size: int = 500) -> float:
    correct = 0
    with eval_mode(model):
        for i in range(0, len(split), batch_size):
            x = split.x[i : i + batch_size].to(device)
            correct += int((model(x).argmax(1).cpu() == split.y[i : i + batch_size]).sum())
    return correct / max(len(split), 1)


def train_classifier(
    model: nn.Module,
    dataset: Dataset,
    cfg: TrainConfig,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device,
    seed: int,
    desc: str = "train",
    folder: Path | None = None,
    save_every: float = 300.0,
) -> dict[str, Any]:
    """SGD with Nesterov momentum and a one-cycle schedule; returns clean val and test accuracy.

    With ``folder``, the training state (weights, optimizer, random generators, and within an epoch its batch order
    and position) is kept there after each epoch and every ``save_every`` seconds inside one, so that an interrupted
    training resumes where it was saved with the same result as an uninterrupted one. Within-epoch saves matter for
    the slow trainings (the robust manifold classifier's epoch on Fashion-MNIST takes over half an hour of CPU)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    # channels-last makes oneDNN's convolutions about a fifth faster on CPU (`bench perf network`); the weights it
    # saves are made contiguous again by the store
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    model.to(device, memory_format=layout)
    train = dataset.train
    steps_per_epoch = (len(train) + cfg.batch_size - 1) // cfg.batch_size
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.2)
    checkpoint = EpochCheckpoint(folder, "classifier training") if folder is not None else None
    done, start, extra, seconds = 0, 0, {}, 0.0
    if checkpoint is not None:
        done, seconds, extra = checkpoint.load(model, opt)
        start = int(extra["batch"]) if "batch" in extra else 0  # batches done in the unfinished epoch
        if done or start:
            log.info("resuming %s at epoch %d of %d, batch %d", desc, done + 1, cfg.epochs, start)
            gen.set_state(extra["rng.data"])
            torch.set_rng_state(extra["rng.torch"])
            with warnings.catch_warnings():  # replaying the schedule's steps, not training
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(done * steps_per_epoch + start):
                    sched.step()
    bar = progress(total=cfg.epochs * steps_per_epoch, initial=done * steps_per_epoch + start, desc=desc,
                   unit="batch")
    model.train()

    # the wall time of a training resumed from a state that did not keep its own is unknown
    timed = not (done or start) or "timed" in extra
    began = time.perf_counter()

    def save(epochs_done: int, perm: torch.Tensor, batch: int = 0) -> float:
        """Keep the state; ``batch`` > 0 is a save inside an epoch (its order and position go along). Returns when."""
        state = {"rng.data": gen.get_state(), "rng.torch": torch.get_rng_state()}
        if timed:
            state["timed"] = torch.tensor(1)
        if batch:
            state.update({"perm": perm, "batch": torch.tensor(batch)})
        checkpoint.save(model, opt, epochs_done, seconds + time.perf_counter() - began, state)
        return time.monotonic()

    last_save = time.monotonic()
    for epoch in range(done, cfg.epochs):
        perm = extra["perm"] if start else torch.randperm(len(train), generator=gen)
        for batch in range(start, steps_per_epoch):
            idx = perm[batch * cfg.batch_size : (batch + 1) * cfg.batch_size]
            x = augment(train.x[idx], cfg, gen).to(device, memory_format=layout)
            y = train.y[idx].to(device)
            loss = loss_fn(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", refresh=False)
            if checkpoint is not None and batch + 1 < steps_per_epoch and time.monotonic() - last_save > save_every:
                last_save = save(epoch, perm, batch + 1)
        start = 0
        if checkpoint is not None and epoch + 1 < cfg.epochs:
            last_save = save(epoch + 1, perm)
    bar.close()
    train_seconds = seconds + time.perf_counter() - began
    model.eval()
    metrics = {
        "val_accuracy": accuracy(model, dataset.val, device),
        "test_accuracy": accuracy(model, dataset.test, device),
        "train_images": len(train),
        # wall time as the training ran (resumes included); None when part of it went unmeasured
        "train_seconds": round(train_seconds, 1) if timed else None,
        "seconds_per_epoch": round(train_seconds / cfg.epochs, 1) if timed else None,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
    if checkpoint is not None:
        checkpoint.remove()
    return metrics
