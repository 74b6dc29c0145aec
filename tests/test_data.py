"""Data sets: deterministic, stratified, disjoint splits of float32 NCHW images in [0, 1]."""
from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
import torch

from benchmark.core.errors import BenchError
from benchmark.data.dataset import Dataset, Split, load_dataset


def _row_digests(split: Split) -> Counter:
    """A multiset of (image bytes, label) digests: compares splits without relying on indices."""
    x = split.x.numpy()
    y = split.y.numpy()
    return Counter(hashlib.sha256(x[i].tobytes() + y[i].tobytes()).hexdigest() for i in range(len(y)))


def _assert_well_formed(split: Split, shape: tuple[int, int, int]) -> None:
    assert split.x.dtype == torch.float32
    assert split.y.dtype == torch.int64
    assert split.x.ndim == 4 and tuple(split.x.shape[1:]) == shape  # NCHW
    assert len(split.x) == len(split.y) == len(split)
    assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0
    assert split.x.is_contiguous()


def _assert_prefixes_balanced(y: torch.Tensor, num_classes: int, upto: int) -> None:
    counts = np.zeros(num_classes, dtype=int)
    for k, label in enumerate(y[:upto].tolist(), start=1):
        counts[label] += 1
        assert counts.max() - counts.min() <= 1, f"prefix of {k} points is unbalanced: {counts.tolist()}"


def test_digits_splits_are_deterministic_across_loads() -> None:
    load_dataset.cache_clear()
    first = load_dataset("digits")
    load_dataset.cache_clear()
    second = load_dataset("digits")
    assert first is not second  # really loaded twice, not served by the cache
    for name in ("train", "val", "test"):
        a, b = getattr(first, name), getattr(second, name)
        assert a.sha256() == b.sha256(), name
    assert first.test_points(50).sha256() == second.test_points(50).sha256()


def test_digits_shapes_dtypes_and_range(digits: Dataset) -> None:
    assert digits.name == "digits"
    assert digits.shape == (1, 8, 8)
    assert digits.num_classes == 10
    for split in (digits.train, digits.val, digits.test):
        _assert_well_formed(split, (1, 8, 8))
        assert set(split.y.tolist()) == set(range(10))
    # the 17 grey levels of scikit-learn's digits, scaled to [0, 1], reach both ends
    assert float(digits.train.x.min()) == 0.0 and float(digits.train.x.max()) == 1.0


def test_digits_split_sizes_and_disjointness(digits: Dataset) -> None:
    from sklearn.datasets import load_digits

    assert (len(digits.train), len(digits.val), len(digits.test)) == (1797 - 180 - 360, 180, 360)
    # every original point appears in exactly one split: the splits' multisets add up to the whole data set
    raw = load_digits()
    whole = Split(
        torch.from_numpy(np.round(raw.images * (255.0 / 16.0)).astype(np.uint8)).float().div_(255.0)[:, None],
        torch.from_numpy(raw.target.astype(np.int64)),
    )
    union = _row_digests(digits.train) + _row_digests(digits.val) + _row_digests(digits.test)
    assert union == _row_digests(whole)


def test_digits_test_split_is_stratified_in_every_prefix(digits: Dataset) -> None:
    _assert_prefixes_balanced(digits.test.y, 10, 100)
    # the test and val splits keep the class proportions of the whole data set (its classes hold 174 to 183 images)
    from sklearn.datasets import load_digits

    whole = np.bincount(load_digits().target, minlength=10)
    for split in (digits.test, digits.val):
        counts = torch.bincount(split.y, minlength=10).numpy()
        expected = whole * len(split) / whole.sum()
        assert np.abs(counts - expected).max() < 1, (counts.tolist(), expected.round(2).tolist())


def test_test_points_are_a_prefix_and_reject_out_of_range(digits: Dataset) -> None:
    points = digits.test_points(40)
    assert len(points) == 40
    assert torch.equal(points.x, digits.test.x[:40]) and torch.equal(points.y, digits.test.y[:40])
    assert len(digits.test_points(None)) == 360
    assert len(digits.test_points(360)) == 360
    for bad in (0, -1, 361, 100_000):
        with pytest.raises(BenchError) as info:
            digits.test_points(bad)
        assert "1 to 360" in str(info.value) and str(bad) in str(info.value)


def test_sha256_covers_pixels_and_labels(digits: Dataset) -> None:
    points = digits.test_points(20)
    base = points.sha256()
    x = points.x.clone()
    x[0, 0, 0, 0] += 1 / 255
    assert Split(x, points.y).sha256() != base
    y = points.y.clone()
    y[0] = (y[0] + 1) % 10
    assert Split(points.x, y).sha256() != base
    assert Split(points.x.clone(), points.y.clone()).sha256() == base


def test_mnist5k_loads_offline_with_stratified_splits() -> None:
    data = load_dataset("mnist5k")
    assert data.shape == (1, 28, 28)
    assert len(data.train) + len(data.val) + len(data.test) == 5000
    assert len(data.test) == 1000 and len(data.val) == 500
    assert torch.bincount(data.test.y, minlength=10).tolist() == [100] * 10
    for split in (data.train, data.val, data.test):
        _assert_well_formed(split, (1, 28, 28))
    _assert_prefixes_balanced(data.test.y, 10, 1000)
    assert data.default_eps == (8 / 255, 25 / 255)
    # the second load (from the npz the first one cached) gives the very same points
    load_dataset.cache_clear()
    again = load_dataset("mnist5k")
    assert again.test.sha256() == data.test.sha256() and again.train.sha256() == data.train.sha256()


def test_unknown_dataset_is_a_bench_error() -> None:
    with pytest.raises(BenchError, match="did you mean 'digits'"):
        load_dataset("digit")


def test_missing_torchvision_data_says_where_it_looked(tmp_path) -> None:
    with pytest.raises(BenchError) as info:
        load_dataset("mnist", str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "MNIST") in message
    assert "--data-root" in message and "--download" in message
