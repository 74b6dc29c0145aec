"""PixelCNN training: the store, resuming an interrupted training, sampling, and `bench train pixelcnn`."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import models  # noqa: F401
from benchmark.cli import main
from benchmark.store.model_store import ModelStore
from benchmark.training import pixelcnn as generative
from benchmark.training.pixelcnn import (
    build_pixelcnn,
    get_pixelcnn,
    pixelcnn_config,
    sample,
    train_pixelcnn,
)


@pytest.fixture(scope="module")
def tiny_pixelcnn(digits):
    return get_pixelcnn(digits, torch.device("cpu"), ModelStore(), size="tiny")


def test_trained_pixelcnn_is_stored_with_its_likelihoods(digits, tiny_pixelcnn, monkeypatch):
    model, meta = tiny_pixelcnn
    m = meta["metrics"]
    assert 0 < m["test_bpd"] < 8  # better than uniform over 256 levels
    assert len(m["reference_bpd"]) == min(generative.REFERENCE_IMAGES, len(digits.train))
    monkeypatch.setattr(generative, "train_pixelcnn", lambda *a, **k: pytest.fail("retrained a cached PixelCNN"))
    again, meta2 = get_pixelcnn(digits, torch.device("cpu"), ModelStore(), size="tiny")
    assert meta2["key"] == meta["key"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_interrupted_training_resumes_where_it_stopped(digits, resumes_after_a_kill):
    cfg = pixelcnn_config("digits", "tiny")

    def fresh():
        torch.manual_seed(0)
        return build_pixelcnn(digits.shape, cfg)

    metrics = resumes_after_a_kill(
        fresh, lambda model, folder: train_pixelcnn(model, digits, cfg, torch.device("cpu"), 0, folder))
    assert metrics["test_bpd"] > 0


def test_pixelcnn_training_killed_inside_an_epoch_resumes_to_the_same_weights(digits, resumes_after_a_kill):
    from dataclasses import replace

    cfg = replace(pixelcnn_config("digits", "tiny"), dropout=0.2)  # dropout draws: their state must resume too
    assert len(digits.train) > 2 * cfg.batch_size, "the first save must fall inside the first epoch"

    def fresh():
        torch.manual_seed(0)
        return build_pixelcnn(digits.shape, cfg)

    # saves after every batch: the kill comes after the first epoch's first batch
    resumes_after_a_kill(
        fresh, lambda model, folder: train_pixelcnn(model, digits, cfg, torch.device("cpu"), 0, folder, save_every=0))


def test_samples_are_8_bit_images_and_seeded(tiny_pixelcnn):
    model, _ = tiny_pixelcnn
    a, b = sample(model, 3, seed=5), sample(model, 3, seed=5)
    assert a.shape == (3, *model.shape) and torch.equal(a, b)
    assert torch.equal(torch.round(a * 255) / 255, a) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, sample(model, 3, seed=6))


def test_cli_trains_a_pixelcnn_and_writes_its_sample_grid(tmp_path: Path, tiny_pixelcnn):
    result = CliRunner().invoke(main, ["train", "pixelcnn", "--dataset", "digits", "--size", "tiny", "--quiet",
                                       "--figures", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "bits/dim" in result.output
    # a preset other than the default small one writes its own grid and leaves the small one's name alone
    assert (tmp_path / "digits_pixelcnn_tiny_samples.png").stat().st_size > 1000
    assert not (tmp_path / "digits_pixelcnn_samples.png").exists()


def test_unknown_pixelcnn_size_is_one_line():
    result = CliRunner().invoke(main, ["train", "pixelcnn", "--dataset", "digits", "--size", "huge"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["bench: error: unknown PixelCNN size 'huge'; sizes: tiny, small, medium, large"]


def test_examples_figure_shows_clean_adversarial_and_purified(tmp_path: Path):
    args = ["examples", "--dataset", "digits", "--n", "4", "--attack", "fgsm", "--quiet", "--figures", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "digits_resnet_pixeldefend_fgsm_examples.png").stat().st_size > 1000
    refused = CliRunner().invoke(main, [*args[:-2], "--defense", "adv-fgsm", "--figures", str(tmp_path)])
    assert refused.exit_code == 2
    assert "does not transform its input" in refused.output


def test_pixeldefend_benchmark_runs_and_compares_outputs():
    from benchmark.perf.pixeldefend import pixeldefend_speed

    row = pixeldefend_speed("digits", batch=4, reference_rows=1, device="cpu")
    assert row["images_equal"] + row["images_near_tie"] == 4 and row["images_different"] == 0
    assert row["reference_rows_run"] == 1 and row["speedup"] > 0 and row["fast_over_forward"] > 0
    assert row["batch"] == 4 and row["forward_batch"] == 4 and row["reference_batch"] == 4
