"""``bench perf training``: what an epoch of training costs on this machine, per model of a data set.

A classifier's step is the trainer's (:mod:`benchmark.training.classifier`: augmentation, the training defense's
loss, SGD with Nesterov momentum, channels-last on CPU); a PixelCNN's is :mod:`benchmark.training.pixelcnn`'s (bits
per dimension, Adam). Each runs ``steps`` consecutive steps on real training images after one untimed warm-up step,
and the mean step gives the epoch's time at the data set's default configuration (the trainer's batch size and
epochs). It is what the long trainings (CIFAR-10's classifiers and PixelCNN) are planned with.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from benchmark.perf.timing import timed


def _rate(step: Any, steps: int, device: torch.device) -> float:
    """Mean seconds of one step over ``steps`` consecutive ones (the caller warms up first)."""
    seconds, _ = timed(lambda: [step() for _ in range(steps)], device)
    return seconds / steps


def classifier_epoch_cost(dataset_name: str, models: Sequence[str], defenses: Sequence[str], steps: int,
                          device: str = "auto", data_root: Any = None) -> list[dict[str, Any]]:
    from benchmark.core.defense import build_defense
    from benchmark.core.device import resolve_device
    from benchmark.data.dataset import load_dataset
    from benchmark.training.classifier import augment, default_train_config
    from benchmark.training.zoo import build_classifier

    dev = resolve_device(device)
    dataset = load_dataset(dataset_name, data_root)
    cfg = default_train_config(dataset_name)
    layout = torch.channels_last if dev.type == "cpu" else torch.contiguous_format
    batches = math.ceil(len(dataset.train) / cfg.batch_size)
    x_all, y_all = dataset.train.x[: cfg.batch_size * (steps + 1)], dataset.train.y[: cfg.batch_size * (steps + 1)]
    rows = []
    for name in models:
        for spec in defenses:
            torch.manual_seed(0)
            model = build_classifier(dataset, name).to(dev, memory_format=layout).train()
            defense = build_defense(spec)
            config = defense.training_config(dataset)
            opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                                  weight_decay=cfg.weight_decay)
            gen = torch.Generator().manual_seed(0)
            at = {"i": 0}

            def step() -> None:
                i = at["i"] % (steps + 1)
                at["i"] += 1
                xb = x_all[i * cfg.batch_size : (i + 1) * cfg.batch_size]
                x = augment(xb, cfg, gen).to(dev, memory_format=layout)
                y = y_all[i * cfg.batch_size : (i + 1) * cfg.batch_size].to(dev)
                loss = (defense.training_loss(model, x, y, config) if defense.trains_classifier
                        else torch.nn.functional.cross_entropy(model(x), y))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            step()  # warm-up: oneDNN picks its kernels on the first pass
            per_step = _rate(step, steps, dev)
            rows.append({"dataset": dataset_name, "model": name, "defense": spec, "batch": cfg.batch_size,
                         "seconds_per_batch": round(per_step, 3), "batches_per_epoch": batches,
                         "minutes_per_epoch": round(per_step * batches / 60, 1), "epochs": cfg.epochs,
                         "hours_in_all": round(per_step * batches * cfg.epochs / 3600, 2),
                         "torch_threads": torch.get_num_threads()})
    return rows


def pixelcnn_epoch_cost(dataset_name: str, steps: int, size: str = "small", device: str = "auto",
                        data_root: Any = None) -> dict[str, Any]:
    from benchmark.core.device import resolve_device
    from benchmark.data.dataset import load_dataset
    from benchmark.training.pixelcnn import build_pixelcnn, pixelcnn_config

    dev = resolve_device(device)
    dataset = load_dataset(dataset_name, data_root)
    cfg = pixelcnn_config(dataset_name, size)
    torch.manual_seed(0)
    model = build_pixelcnn(dataset.shape, cfg).to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x = dataset.train.x[: cfg.batch_size].to(dev)

    def step() -> None:
        loss = model.bits_per_dim(x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    per_step = _rate(step, steps, dev)
    batches = math.ceil(len(dataset.train) / cfg.batch_size)
    return {"dataset": dataset_name, "model": f"pixelcnn ({size})", "defense": "-", "batch": cfg.batch_size,
            "seconds_per_batch": round(per_step, 3), "batches_per_epoch": batches,
            "minutes_per_epoch": round(per_step * batches / 60, 1), "epochs": cfg.epochs,
            "hours_in_all": round(per_step * batches * cfg.epochs / 3600, 2),
            "train_images_per_second": round(cfg.batch_size / per_step, 1), "torch_threads": torch.get_num_threads()}
