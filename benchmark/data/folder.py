"""Image data sets in class folders: ``ROOT/train/<class>/*`` and ``ROOT/test/<class>/*`` (PNG or JPEG).

This is the layout torchvision's ``ImageFolder`` reads. Classes are the sub-folder names in sorted order; the images
of one class are read in file-name order, so the arrays do not depend on the file system's listing order. Decoding
tens of thousands of small images takes a while, so the decoded arrays are cached (uint8, no pickles) under a key of
the folder's path and every file's name, size and modification time: a changed file is decoded again.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.core.errors import BenchError
from benchmark.store.npz_cache import read_cached, write_cached

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class FolderArrays:
    """The decoded images of one folder data set: uint8 NHWC images and int64 labels per split."""

    classes: tuple[str, ...]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def list_split(root: Path, split: str) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
    """The class names of ``root/split`` and its (file, label) pairs in (class, file name) order."""
    folder = root / split
    if not folder.is_dir():
        raise BenchError(f"{root} has no {split}/ folder: a folder data set needs {root}/train/<class>/ and "
                         f"{root}/test/<class>/ holding PNG or JPEG images")
    classes = tuple(sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")))
    if not classes:
        raise BenchError(f"{folder} holds no class folders: put each class's images in {folder}/<class>/")
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        images = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise BenchError(f"class folder {folder / name} holds no PNG or JPEG images")
        files += [(p, label) for p in images]
    return classes, files


def _decode(files: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W, C) and int64 labels; every image must have the first one's size and mode."""
    from PIL import Image

    first_size = first_mode = first_file = None
    images = []
    for path, _ in files:
        try:
            with Image.open(path) as im:
                im.load()
                size, mode = im.size, im.mode
                if first_size is None:
                    first_size, first_mode, first_file = size, mode, path
                elif (size, mode) != (first_size, first_mode):
                    raise BenchError(
                        f"{path} is {size[0]}x{size[1]} {mode} but {first_file} is "
                        f"{first_size[0]}x{first_size[1]} {first_mode}: a folder data set needs one image size and "
                        "mode throughout (resize or convert the images first)")
                arr = np.asarray(im.convert(mode if mode in ("L", "RGB") else "RGB"), dtype=np.uint8)
        except BenchError:
            raise
        except Exception as exc:  # PIL raises many kinds for a file that is not an image
            raise BenchError(f"cannot read {path} as an image: {exc}") from None
        images.append(arr if arr.ndim == 3 else arr[:, :, None])
    return np.stack(images), np.array([label for _, label in files], dtype=np.int64)


def _cache_key(root: Path, listing: list[tuple[Path, int]]) -> str:
    """A hash of every file's name, label and bytes. Not of its modification time: a copy provisioned afresh with the
    same images keeps its cache (reading the files is seconds where decoding them is a minute)."""
    h = hashlib.sha256()
    for path, label in listing:
        h.update(f"{path.relative_to(root).as_posix()}\0{label}\0".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def _check_arrays(arrays: dict[str, np.ndarray]) -> str | None:
    """What is wrong with cached arrays that loaded (uint8 NHWC images, one int64 label per image), or None."""
    for split in SPLITS:
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.dtype != np.uint8 or x.ndim != 4 or y.ndim != 1 or len(x) != len(y) or y.dtype.kind not in "iu":
            return f"{split} arrays of shape {x.shape} ({x.dtype}) and {y.shape} ({y.dtype})"
    return None


def read_image_folder(root: Path, cache: Path | None) -> FolderArrays:
    """Decode ``root``'s train and test splits (or take them from ``cache``, a folder for the decoded arrays)."""
    root = Path(root)
    if not root.is_dir():
        raise BenchError(f"folder data set {root} does not exist: give a folder holding train/<class>/ and "
                         "test/<class>/")
    listings = {split: list_split(root, split) for split in SPLITS}
    classes = listings["train"][0]
    if listings["test"][0] != classes:
        raise BenchError(f"{root}/train and {root}/test hold different classes ({', '.join(classes)} vs "
                         f"{', '.join(listings['test'][0])}): both need the same class folders")
    names = ("train_x", "train_y", "test_x", "test_y")
    cached_file = None
    if cache is not None:
        key = _cache_key(root, listings["train"][1] + listings["test"][1])
        cached_file = cache / f"folder-{key}.npz"
        found = read_cached(cached_file, names, _check_arrays)
        if found is not None:
            return FolderArrays(classes, *(found[n] for n in names))
    log.info("decoding the images of %s (once; later loads read the cache)", root)
    train_x, train_y = _decode(listings["train"][1])
    test_x, test_y = _decode(listings["test"][1])
    if train_x.shape[1:] != test_x.shape[1:]:
        raise BenchError(f"{root}: train images are {train_x.shape[2]}x{train_x.shape[1]}x{train_x.shape[3]} but "
                         f"test images {test_x.shape[2]}x{test_x.shape[1]}x{test_x.shape[3]}; both need one size")
    arrays = FolderArrays(classes, train_x, train_y, test_x, test_y)
    if cached_file is not None:
        write_cached(cached_file, {n: getattr(arrays, n) for n in names})
    return arrays


def split_sha256(x: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 of uint8 images (N, H, W, C) followed by uint8 labels: the check ``../shared/data/README.txt``
    publishes for its CIFAR-10 copy."""
    h = hashlib.sha256(np.ascontiguousarray(x, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.uint8).tobytes())
    return h.hexdigest()
