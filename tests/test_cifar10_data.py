"""CIFAR-10 from its class-folder copy: the published SHA-256 is checked, the decoded arrays are cached.

A small synthetic copy in CIFAR-10's layout stands in for the real one (the real copy, where a data root holds it,
is checked by the same code: `bench run --dataset cifar10 --data-root ../shared/data`)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import benchmark.data.builtin as builtin
from benchmark.core.errors import BenchError
from benchmark.data.folder import read_image_folder, split_sha256


def fake_cifar(root: Path, per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in builtin.CIFAR10_CLASSES:
            folder = root / "CIFAR10" / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB").save(folder / f"{i}.png")
    return root


@pytest.fixture
def copy_with_its_hashes(tmp_path, monkeypatch):
    root = fake_cifar(tmp_path / "data")
    arrays = read_image_folder(root / "CIFAR10", None)
    monkeypatch.setattr(builtin, "CIFAR10_FOLDER_SHA256", {
        "train": split_sha256(arrays.train_x, arrays.train_y), "test": split_sha256(arrays.test_x, arrays.test_y)})
    return root


def test_the_class_folder_copy_is_read_in_class_and_file_order(copy_with_its_hashes):
    train_x, train_y, test_x, test_y = builtin.Cifar10().arrays(copy_with_its_hashes, download=False)
    assert train_x.shape == (30, 32, 32, 3) and train_x.dtype == np.uint8
    assert train_y.tolist() == [c for c in range(10) for _ in range(3)]
    assert test_x.shape == (30, 32, 32, 3)


def test_a_changed_image_fails_the_published_hash(copy_with_its_hashes, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "fresh-cache"))  # decode again, not from the cache
    image = copy_with_its_hashes / "CIFAR10" / "test" / "cat" / "0.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8), "RGB").save(image)
    with pytest.raises(BenchError, match="does not match the published SHA-256 of CIFAR-10's test split"):
        builtin.Cifar10().arrays(copy_with_its_hashes, download=False)


def test_other_class_names_are_refused(tmp_path):
    root = fake_cifar(tmp_path / "data")
    for split in ("train", "test"):
        (root / "CIFAR10" / split / "cat").rename(root / "CIFAR10" / split / "kitten")
    with pytest.raises(BenchError, match="CIFAR-10's are airplane"):
        builtin.Cifar10().arrays(root, download=False)


def test_the_published_hashes_are_those_of_the_data_readme():
    """The constants match ../shared/data/README.txt, where that copy is present."""
    readme = Path(__file__).resolve().parents[2] / "shared" / "data" / "README.txt"
    if not readme.is_file():
        pytest.skip(f"no data README at {readme} (the workplace's shared data copy)")
    text = readme.read_text()
    for split, digest in builtin.CIFAR10_FOLDER_SHA256.items():
        assert re.search(rf"\b{split}\s+{digest}\b", text), split


def test_the_decoded_arrays_are_cached_by_content(tmp_path):
    """A copy of the same images elsewhere, with new modification times, reads the cache; a changed image does not."""
    cache = tmp_path / "cache"
    first = fake_cifar(tmp_path / "first", per_class=1) / "CIFAR10"
    read_image_folder(first, cache)
    assert len(list(cache.glob("folder-*.npz"))) == 1
    second = tmp_path / "second"
    shutil.copytree(first, second)  # a fresh copy: other path, other modification times, same bytes
    read_image_folder(second, cache)
    assert len(list(cache.glob("folder-*.npz"))) == 1
    Image.fromarray(np.zeros((32, 32, 3), np.uint8), "RGB").save(second / "test" / "cat" / "0.png")
    changed = read_image_folder(second, cache)
    assert len(list(cache.glob("folder-*.npz"))) == 2
    assert changed.test_x[builtin.CIFAR10_CLASSES.index("cat")].max() == 0


def test_cifar10_names_its_classes_and_digits_keep_their_numbers(copy_with_its_hashes, monkeypatch):
    from benchmark.data.dataset import load_dataset

    monkeypatch.setattr(builtin.Cifar10, "val_size", 10)  # the fake copy holds 30 training images
    load_dataset.cache_clear()
    try:
        cifar = load_dataset("cifar10", str(copy_with_its_hashes))
    finally:
        load_dataset.cache_clear()
    assert cifar.class_name(3) == "cat" and cifar.class_name(9) == "truck"
    digits = load_dataset("digits")
    assert digits.classes == () and digits.class_name(7) == "7"


def test_the_validation_split_of_class_folders_takes_turns_between_classes(copy_with_its_hashes, monkeypatch):
    """Read class by class, the held-out images would keep that order, and a tuning on the first validation images
    (the deep image prior's, the region-based defense's) would see one class only."""
    from benchmark.data.dataset import load_dataset

    monkeypatch.setattr(builtin.Cifar10, "val_size", 20)  # two of each class's three training images
    load_dataset.cache_clear()
    try:
        cifar = load_dataset("cifar10", str(copy_with_its_hashes))
    finally:
        load_dataset.cache_clear()
    assert sorted(cifar.val.y.tolist()) == sorted(list(range(10)) * 2)
    assert sorted(cifar.val.y[:10].tolist()) == list(range(10))  # the first ten: one of each class
    assert sorted(cifar.train.y.tolist()) == list(range(10))


def test_a_validation_split_in_mixed_order_keeps_it():
    """digits' source order is already mixed: its validation split stays in that order (committed tunings used it)."""
    from sklearn.datasets import load_digits

    import benchmark.data.dataset as ds

    val = ds.load_dataset("digits").val
    assert not all(a <= b for a, b in zip(val.y.tolist(), val.y[1:].tolist()))
    y = load_digits().target
    _, train_idx = ds._stratified_split(y, 360, ds.SPLIT_SEED)
    taken, _ = ds._stratified_split(y[train_idx], 180, ds.SPLIT_SEED + 1)
    assert val.y.tolist() == y[train_idx][taken].tolist()
