"""Data sets as tensors: deterministic stratified splits and a hash of the exact test points.

Images are float32 NCHW in [0, 1]; labels are int64. Normalisation, if any, belongs to the classifier.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from .budgets import format_eps
from .errors import BenchError
from .registry import DATASETS

SPLIT_SEED = 0  # splits never depend on a run's seed: every run of a data set sees the same points


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)

    def head(self, n: int) -> "Split":
        return Split(self.x[:n], self.y[:n])

    def sha256(self) -> str:
        """Hash of the exact points (pixels and labels): a record says precisely what it was measured on."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.x.numpy()).tobytes())
        h.update(np.ascontiguousarray(self.y.numpy()).tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class Dataset:
    name: str
    family: str  # "mnist-like" or "cifar": selects the paper's default budgets and defense parameters
    num_classes: int
    train: Split
    val: Split
    test: Split  # ordered so that every prefix is (nearly) class-balanced

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    def test_points(self, n: int | None) -> Split:
        if n is None:
            return self.test
        if n < 1 or n > len(self.test):
            raise BenchError(f"--n {n} is outside the test split of {self.name}: choose 1 to {len(self.test)}")
        return self.test.head(n)

    @property
    def default_eps(self) -> tuple[float, ...]:
        return DEFAULT_EPS[self.family]


# The PixelDefend paper's budgets: Table 1 (Fashion-MNIST) and Table 2 (CIFAR-10).
DEFAULT_EPS = {"mnist-like": (8 / 255, 25 / 255), "cifar": (2 / 255, 8 / 255, 16 / 255)}


class DataSource:
    """A registered data set. Subclasses give class data and :meth:`arrays`."""

    name: ClassVar[str] = ""
    shape: ClassVar[tuple[int, int, int]]
    num_classes: ClassVar[int] = 10
    family: ClassVar[str] = "mnist-like"
    summary: ClassVar[str] = ""
    # sizes carved out of the training pool, and out of the whole pool where there is no official test split
    val_size: ClassVar[int] = 5000
    test_size: ClassVar[int | None] = None

    @classmethod
    def describe(cls) -> dict[str, str]:
        c, h, w = cls.shape
        budgets = ", ".join(format_eps(e) for e in DEFAULT_EPS[cls.family])
        return {"kind": "dataset", "shape": f"{h}x{w}x{c}", "classes": str(cls.num_classes),
                "default eps": budgets, "source": cls.summary}

    def arrays(self, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(train images, train labels, test images or None, test labels or None); images uint8 NHWC or NHW."""
        raise NotImplementedError


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[:, :, :, None]
    if arr.dtype == np.uint8:
        x = torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0)
    else:
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return x.permute(0, 3, 1, 2).contiguous()


def _stratified_order(y: np.ndarray, seed: int) -> np.ndarray:
    """A permutation in which classes take turns, so every prefix is balanced (as far as counts allow)."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    rank = np.empty(len(y), dtype=np.int64)
    for members in per_class:
        rank[members] = np.arange(len(members))
    keys = rng.random(len(y))  # break ties inside one round in a random, fixed order
    return np.lexsort((keys, rank))


def _stratified_split(y: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(taken, rest) index arrays; ``taken`` holds ``size`` points in proportion to the classes."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    rest, taken = train_test_split(idx, test_size=size, stratify=y, random_state=seed)
    return np.sort(taken), np.sort(rest)


@lru_cache(maxsize=8)
def load_dataset(name: str, data_root: str | None = None, download: bool = False) -> Dataset:
    """Load a registered data set with its deterministic, stratified train/val/test splits."""
    from .paths import data_root as resolve_root

    source: DataSource = DATASETS.get(name).factory()
    train_x, train_y, test_x, test_y = source.arrays(resolve_root(data_root), download)
    train_y = np.asarray(train_y, dtype=np.int64)
    if test_x is None:
        assert source.test_size is not None, f"{name} has no test split and no test_size"
        test_idx, train_idx = _stratified_split(train_y, source.test_size, SPLIT_SEED)
        test_x, test_y = train_x[test_idx], train_y[test_idx]
        train_x, train_y = train_x[train_idx], train_y[train_idx]
    test_y = np.asarray(test_y, dtype=np.int64)
    val_idx, train_idx = _stratified_split(train_y, source.val_size, SPLIT_SEED + 1)
    order = _stratified_order(test_y, SPLIT_SEED + 2)

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(_to_tensor(x), torch.from_numpy(np.ascontiguousarray(y)))

    return Dataset(
        name=name,
        family=source.family,
        num_classes=source.num_classes,
        train=split(train_x[train_idx], train_y[train_idx]),
        val=split(train_x[val_idx], train_y[val_idx]),
        test=split(test_x[order], test_y[order]),
    )
