"""The user's own weights (``--weights``) and data (``--dataset folder:PATH``): round trips and each refusal."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from benchmark.cli import main
from benchmark.core.errors import BenchError
from benchmark.data.dataset import load_dataset
from benchmark.store.weights import load_weights, read_state, state_sha256
from benchmark.training.zoo import build_classifier

pytestmark = pytest.mark.usefixtures("restore_cli_state")


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), lines
    return lines[0]


# -- weights ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def vgg_weights(digits, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    model = build_classifier(digits, "vgg")
    path = tmp_path / "vgg.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path


def test_weights_round_trip_and_name(digits, vgg_weights, tmp_path):
    model, path = vgg_weights
    other = build_classifier(digits, "vgg")
    sha = load_weights(other, path, "vgg")
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest() == state_sha256(model)
    pt = tmp_path / "vgg.pt"
    torch.save(model.state_dict(), pt)
    assert load_weights(build_classifier(digits, "vgg"), pt, "vgg") == hashlib.sha256(pt.read_bytes()).hexdigest()


def test_run_with_weights_names_them_in_its_records(vgg_weights, tmp_path):
    model, path = vgg_weights
    result = CliRunner().invoke(main, ["run", "--dataset", "digits", "--model", "vgg", "--weights", str(path),
                                       "--attack", "fgsm", "--n", "10", "--results-dir", str(tmp_path / "r"),
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    from benchmark.store import records

    (rec,) = [r.data for r in records.load_all(tmp_path / "r")]
    sha = state_sha256(model)
    assert rec["config"]["model"] == f"vgg@{sha[:8]}"
    assert list(rec["models"].values()) == [sha]


def test_weights_that_do_not_fit_are_refused(digits, vgg_weights, tmp_path):
    from safetensors.torch import save_file

    model, _ = vgg_weights
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    missing = dict(state)
    missing.pop(next(iter(missing)))
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(BenchError, match="missing 1 tensors"):
        load_weights(build_classifier(digits, "vgg"), tmp_path / "missing.safetensors", "vgg")
    extra = {**state, "extra.weight": torch.zeros(2)}
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(BenchError, match="tensors vgg does not have"):
        load_weights(build_classifier(digits, "vgg"), tmp_path / "extra.safetensors", "vgg")
    # ResNet weights into a VGG: names differ; VGG weights of another data set: shapes differ
    resnet = build_classifier(digits, "resnet")
    save_file({k: v.contiguous() for k, v in resnet.state_dict().items()}, str(tmp_path / "resnet.safetensors"))
    with pytest.raises(BenchError, match="does not fit model 'vgg'"):
        load_weights(build_classifier(digits, "vgg"), tmp_path / "resnet.safetensors", "vgg")
    mnist_like = build_classifier(type(digits)("x", "mnist-like", 10, digits.train, digits.val, digits.test), "vgg")
    wrong = {k: (torch.zeros(*v.shape[:-1], v.shape[-1] + 1) if v.ndim == 2 else v.contiguous())
             for k, v in mnist_like.state_dict().items()}
    save_file(wrong, str(tmp_path / "shape.safetensors"))
    with pytest.raises(BenchError, match="has shape"):
        load_weights(build_classifier(digits, "vgg"), tmp_path / "shape.safetensors", "vgg")


def test_files_that_are_not_state_dicts_are_refused_without_running_code(tmp_path):
    ran = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (ran,))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"w": Payload()}))
    with pytest.raises(BenchError, match="cannot read weights file"):
        read_state(evil)
    assert not ran.exists()
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(BenchError, match="neither .safetensors nor .pt"):
        read_state(tmp_path / "w.bin")
    with pytest.raises(BenchError, match="does not exist"):
        read_state(tmp_path / "nope.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(BenchError, match="cannot read weights file"):
        read_state(tmp_path / "garbage.safetensors")


def test_cli_refuses_bad_weights_in_one_line(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"x")
    line = one_line_error(CliRunner().invoke(main, ["run", "--dataset", "digits", "--weights", str(tmp_path / "w.bin"),
                                                    "--attack", "fgsm", "--n", "5", "--results-dir",
                                                    str(tmp_path / "r")]))
    assert ".safetensors" in line


# -- folder data sets ------------------------------------------------------------------------------------------------

def write_folder(root: Path, classes=("ant", "bee", "cat"), per_class=(12, 4), size=(8, 8), mode="L", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "test"), per_class):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                shape = size[::-1] + ((3,) if mode == "RGB" else ())
                pixels = (rng.random(shape) * 60 + 60 * label).astype(np.uint8)
                Image.fromarray(pixels, mode).save(folder / f"{i:03d}.png")
    return root


def test_a_folder_data_set_loads_with_splits_and_a_name(tmp_path):
    root = write_folder(tmp_path / "toys")
    data = load_dataset(f"folder:{root}")
    assert data.name.startswith("folder-toys-") and data.num_classes == 3
    assert data.shape == (1, 8, 8) and data.family == "mnist-like"
    assert len(data.train) + len(data.val) == 36 and len(data.test) == 12
    assert data.test.x.min() >= 0 and data.test.x.max() <= 1
    assert data.test.y[:3].tolist() == sorted(data.test.y[:3].tolist()) or len(set(data.test.y[:3].tolist())) == 3
    assert load_dataset(data.name) is not None  # its name resolves in this process (records name it)
    rgb = load_dataset(f"folder:{write_folder(tmp_path / 'rgb', mode='RGB')}")
    assert rgb.shape == (3, 8, 8) and rgb.family == "cifar"


def test_decoded_images_are_cached(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "cached")
    load_dataset.cache_clear()
    load_dataset(f"folder:{root}")
    load_dataset.cache_clear()
    import benchmark.data.folder as folder

    monkeypatch.setattr(folder, "_decode", lambda files: pytest.fail("decoded again"))
    load_dataset(f"folder:{root}")


def test_a_run_on_a_folder_data_set_records_its_test_points(tmp_path):
    root = write_folder(tmp_path / "toys2", per_class=(20, 4))
    result = CliRunner().invoke(main, ["run", "--dataset", f"folder:{root}", "--model", "vgg", "--attack", "fgsm",
                                       "--n", "12", "--results-dir", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 0, result.output
    from benchmark.store import records

    (rec,) = [r.data for r in records.load_all(tmp_path / "r")]
    data = load_dataset(f"folder:{root}")
    assert rec["config"]["dataset"] == data.name
    assert rec["test_points_sha256"] == data.test_points(12).sha256()


@pytest.mark.parametrize("damage, words", [
    ("no-test", "has no test/ folder"),
    ("empty-class", "holds no PNG or JPEG images"),
    ("mixed-size", "one image size and mode throughout"),
    ("mixed-mode", "one image size and mode throughout"),
    ("other-classes", "hold different classes"),
    ("not-an-image", "cannot read"),
    ("missing", "does not exist"),
])
def test_bad_folder_layouts_are_one_line(tmp_path, damage, words):
    root = write_folder(tmp_path / damage)
    if damage == "no-test":
        import shutil

        shutil.rmtree(root / "test")
    elif damage == "empty-class":
        for f in (root / "train" / "bee").iterdir():
            f.unlink()
    elif damage == "mixed-size":
        Image.fromarray(np.zeros((9, 9), np.uint8), "L").save(root / "train" / "bee" / "big.png")
    elif damage == "mixed-mode":
        Image.fromarray(np.zeros((8, 8, 3), np.uint8), "RGB").save(root / "train" / "bee" / "rgb.png")
    elif damage == "other-classes":
        (root / "test" / "cat").rename(root / "test" / "dog")
    elif damage == "not-an-image":
        (root / "train" / "ant" / "zzz.png").write_bytes(b"not a png")
    elif damage == "missing":
        root = tmp_path / "nowhere"
    line = one_line_error(CliRunner().invoke(main, ["run", "--dataset", f"folder:{root}", "--attack", "fgsm",
                                                    "--n", "5", "--results-dir", str(tmp_path / "r")]))
    assert words in line, line
