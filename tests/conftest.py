"""Shared fixtures. Every test session gets its own model/artifact cache (``BENCH_CACHE``) unless
``BENCH_TEST_CACHE`` names one to reuse between sessions (handy locally: trained models are then kept)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = Path(os.environ.get("BENCH_TEST_CACHE") or tmp_path_factory.mktemp("bench-cache"))
    os.environ["BENCH_CACHE"] = str(cache)
    os.environ["BENCH_QUIET"] = "1"
    from benchmark.core.progress import set_quiet

    set_quiet(True)
    return cache


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tests use tiny models, where a second intra-op thread buys nothing; on a shared machine two threads per
    process oversubscribe the cores and slow everything down tenfold. Tests on bigger models raise it locally."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def digits():
    from benchmark.data.dataset import load_dataset

    return load_dataset("digits")


# Attacks whose full run takes a minute on the digits get a shorter one where a test only checks that they run by
# the rules (the contract and adaptive-pipeline tests); their own tests run them in full.
SHORTENED_ATTACKS = {"cw-l0": {"max_rounds": 3}}


@pytest.fixture(scope="session")
def build_attack():
    """The registered attack ``name``, shortened if it is in :data:`SHORTENED_ATTACKS`."""
    from benchmark.core.registry import ATTACKS

    return lambda name: ATTACKS.get(name).factory(**SHORTENED_ATTACKS.get(name, {}))


@pytest.fixture(scope="session")
def digits_classifier(digits):
    """The undefended ResNet-style classifier on scikit-learn's digits (trains in seconds; cached per session)."""
    import torch

    from benchmark.core.defense import build_defense
    from benchmark.store.model_store import ModelStore
    from benchmark.training.zoo import get_classifier

    model, meta = get_classifier(digits, "resnet", build_defense("none"), 0, torch.device("cpu"), ModelStore())
    return model, meta


@pytest.fixture
def restore_cli_state():
    """The CLI points the ``benchmark`` logger at the (captured) stderr and sets the quiet flag: undo both."""
    import logging

    from benchmark.core.progress import is_quiet, set_quiet

    logger = logging.getLogger("benchmark")
    saved = (logger.handlers[:], logger.level, logger.propagate, is_quiet())
    yield
    logger.handlers[:] = saved[0]
    logger.level, logger.propagate = saved[1], saved[2]
    set_quiet(saved[3])


@pytest.fixture
def resumes_after_a_kill(tmp_path, monkeypatch):
    """``check(fresh, train)``: training killed right after its first epoch's checkpoint, then run again, ends with the
    same weights as an uninterrupted run. ``fresh()`` builds the seeded untrained model, ``train(model, folder)``
    trains it with its checkpoints in ``folder`` and returns what training returns."""
    import torch

    from benchmark.store.checkpoint import EpochCheckpoint

    def check(fresh, train):
        straight = fresh()
        train(straight, tmp_path / "a")
        real_save = EpochCheckpoint.save

        def save_then_die(self, *args, **kwargs):
            real_save(self, *args, **kwargs)
            raise KeyboardInterrupt  # killed right after the first epoch's state was written

        monkeypatch.setattr(EpochCheckpoint, "save", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            train(fresh(), tmp_path / "b")
        assert (tmp_path / "b" / "partial.json").exists()
        monkeypatch.setattr(EpochCheckpoint, "save", real_save)
        resumed = fresh()
        result = train(resumed, tmp_path / "b")
        assert not (tmp_path / "b" / "partial.json").exists()  # cleaned up once finished
        for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
            assert torch.equal(a, b), f"{name} differs after resuming"
        return result

    return check
