"""Data sets as tensors: deterministic stratified splits and a hash of the exact test points.

Images are float32 NCHW in [0, 1]; labels are int64. Normalisation, if any, belongs to the classifier.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from benchmark.core.budgets import format_eps
from benchmark.core.errors import BenchError
from benchmark.core.registry import DATASETS

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
    classes: tuple[str, ...] = ()  # the classes' names, by label; empty where the labels are the names (digits)

    def class_name(self, label: int) -> str:
        """What a figure or table calls class ``label``: its name where the data set has names, else the number."""
        return self.classes[label] if label < len(self.classes) else str(label)

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
    classes: ClassVar[tuple[str, ...]] = ()  # names by label, where the labels are not the names themselves
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


FOLDER_PREFIX = "folder:"  # --dataset folder:PATH: the user's own images in class folders (benchmark.data.folder)
_FOLDERS: dict[str, Path] = {}  # name of a folder data set loaded in this process -> its folder


def check_dataset_name(name: str) -> None:
    """A BenchError unless ``name`` is a registered data set, ``folder:PATH`` or a folder data set loaded here."""
    if not name.startswith(FOLDER_PREFIX) and name not in _FOLDERS:
        DATASETS.get(name)


@lru_cache(maxsize=8)
def load_dataset(name: str, data_root: str | None = None, download: bool = False) -> Dataset:
    """Load a registered data set (or ``folder:PATH``) with its deterministic, stratified train/val/test splits."""
    from benchmark.store.paths import data_root as resolve_root

    if name.startswith(FOLDER_PREFIX) or name in _FOLDERS:
        return _load_folder(Path(name[len(FOLDER_PREFIX):]) if name.startswith(FOLDER_PREFIX) else _FOLDERS[name])
    source: DataSource = DATASETS.get(name).factory()
    train_x, train_y, test_x, test_y = source.arrays(resolve_root(data_root), download)
    data = _split(name, source.family, source.num_classes, train_x, train_y, test_x, test_y, source.val_size,
                  source.test_size)
    return replace(data, classes=tuple(source.classes))


def _load_folder(path: Path) -> Dataset:
    """A folder data set: PATH/train/<class>/* and PATH/test/<class>/*. Its name is the folder's name and the first
    8 hex digits of its test points' SHA-256, so that records of different folders of one name never mix."""
    from benchmark.data.folder import read_image_folder
    from benchmark.store.paths import cache_dir

    arrays = read_image_folder(path, cache_dir() / "data")
    channels = arrays.train_x.shape[-1]
    counts = np.bincount(arrays.train_y, minlength=len(arrays.classes))
    if counts.min() < 2:
        few = arrays.classes[int(counts.argmin())]
        raise BenchError(f"{path}/train/{few} holds {int(counts.min())} image: every class needs at least 2 training "
                         "images (part of them is held out for validation)")
    # a tenth of the training images (at least one per class, at most 5,000 as for the built-in data sets)
    val_size = min(max(len(arrays.classes), len(arrays.train_y) // 10), 5000, len(arrays.train_y) - len(arrays.classes))
    data = _split("folder", "cifar" if channels == 3 else "mnist-like", len(arrays.classes), arrays.train_x,
                  arrays.train_y, arrays.test_x, arrays.test_y, val_size, None)
    slug = re.sub(r"[^a-z0-9._-]+", "-", Path(path).resolve().name.lower()).strip("-") or "data"
    name = f"folder-{slug}-{data.test.sha256()[:8]}"
    _FOLDERS[name] = Path(path)
    # the class folders' names, unless they are just the labels
    classes = () if list(arrays.classes) == [str(i) for i in range(len(arrays.classes))] else tuple(arrays.classes)
    return Dataset(name, data.family, data.num_classes, data.train, data.val, data.test, classes)


def _split(name: str, family: str, num_classes: int, train_x: np.ndarray, train_y: np.ndarray,
           test_x: np.ndarray | None, test_y: np.ndarray | None, val_size: int, test_size: int | None) -> Dataset:
    train_y = np.asarray(train_y, dtype=np.int64)
    if test_x is None:
        assert test_size is not None, f"{name} has no test split and no test_size"
        test_idx, train_idx = _stratified_split(train_y, test_size, SPLIT_SEED)
        test_x, test_y = train_x[test_idx], train_y[test_idx]
        train_x, train_y = train_x[train_idx], train_y[train_idx]
    test_y = np.asarray(test_y, dtype=np.int64)
    val_idx, train_idx = _stratified_split(train_y, val_size, SPLIT_SEED + 1)
    if np.all(np.diff(train_y) >= 0):
        # Images read class folder by class folder come class by class, and so would the validation split, whose
        # prefixes (the points a defense tunes on) would then hold one class only: take turns between classes
        # instead. Sources in a mixed order keep it, and with it the prefixes their committed tunings used.
        val_idx = val_idx[_stratified_order(train_y[val_idx], SPLIT_SEED + 3)]
    order = _stratified_order(test_y, SPLIT_SEED + 2)

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(_to_tensor(x), torch.from_numpy(np.ascontiguousarray(y)))

    return Dataset(
        name=name,
        family=family,
        num_classes=num_classes,
        train=split(train_x[train_idx], train_y[train_idx]),
        val=split(train_x[val_idx], train_y[val_idx]),
        test=split(test_x[order], test_y[order]),
    )
