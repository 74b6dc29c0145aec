"""``benchmark.evaluate``: a user's own model, defense and data from Python, and ``bench run`` as its client.

The RobustBench pattern: call the public function with a dummy model. Everything runs on scikit-learn's digits.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from benchmark import Defense, evaluate
from benchmark.cli import main
from benchmark.core.errors import BenchError
from benchmark.core.registry import DEFENSES, MODELS
from benchmark.store import records
from models.classifiers import Classifier

pytestmark = pytest.mark.usefixtures("restore_cli_state")


class TinyNet(Classifier):
    """A small classifier of 8x8 digits, trained in a second by :func:`trained_tiny` (a Classifier, so that it can
    also be registered as a model plugin: ``bench run --model`` takes classifiers only)."""

    def __init__(self, shape: tuple[int, int, int] = (1, 8, 8), num_classes: int = 10) -> None:
        super().__init__()
        c, h, w = shape
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Smooth(Defense):
    """A user's purifier: a 3x3 mean filter (deterministic, differentiable)."""

    purifies = True

    def __init__(self, size: int = 3) -> None:
        self.size = size

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.size, 1, self.size // 2, count_include_pad=False)

    def options(self) -> dict:
        return {"size": self.size}


@pytest.fixture(scope="module")
def trained_tiny(digits) -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        idx = torch.randint(0, len(digits.train), (128,))
        loss = F.cross_entropy(model(digits.train.x[idx]), digits.train.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def comparable(rec: dict) -> dict:
    """A record without what differs between two runs of the same cell: wall times and where the code ran."""
    rec = json.loads(json.dumps(rec))
    rec.pop("provenance")
    rec["outcomes"].pop("defense_ms")
    return rec


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_a_user_model_and_defense_give_the_records_of_the_registered_run(trained_tiny, tmp_path, monkeypatch):
    """evaluate(nn.Module, Defense instance) with nothing registered writes exactly the records of `bench run` with
    the same classes registered and the module's weights in a file (timings aside)."""
    from safetensors.torch import save_file

    monkeypatch.chdir(tmp_path)
    before = set(Path(tmp_path).rglob("*"))
    ours = evaluate(trained_tiny, defense=[None, Smooth()], dataset="digits", attacks=["fgsm", "pgd(steps=5)"],
                    n=30, progress=False)
    assert set(Path(tmp_path).rglob("*")) == before, "results_dir=None must write nothing"
    assert len(ours.records) == 4 and not ours.failed
    assert ours.records[0]["config"]["model"].startswith("tinynet@")
    assert ours.headline[0].budgets[0].clean > 0.5  # a trained network, really evaluated

    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in trained_tiny.state_dict().items()}, str(weights))
    MODELS.add("tinynet", TinyNet, "tests")
    DEFENSES.add("smooth", Smooth, "tests")
    try:
        result = invoke("run", "--dataset", "digits", "--model", "tinynet", "--weights", str(weights), "--defense",
                        "none,smooth", "--attack", "fgsm,pgd(steps=5)", "--n", "30", "--results-dir",
                        str(tmp_path / "results"), "--quiet")
    finally:
        MODELS._entries.pop("tinynet")
        DEFENSES._entries.pop("smooth")
    assert result.exit_code == 0, result.output
    theirs = {r.data["id"]: r.data for r in records.load_all(tmp_path / "results")}
    assert sorted(theirs) == sorted(r["id"] for r in ours.records)
    for rec in ours.records:
        assert comparable(rec) == comparable(theirs[rec["id"]])


def test_results_dir_keeps_the_records_and_a_rerun_resumes(trained_tiny, tmp_path):
    first = evaluate(trained_tiny, dataset="digits", attacks="fgsm", n=20, results_dir=tmp_path, progress=False)
    assert [c.status for c in first.cells] == ["done"]
    assert len(list(records.records_dir(tmp_path).rglob("*.json"))) == 1
    again = evaluate(trained_tiny, dataset="digits", attacks="fgsm", n=20, results_dir=tmp_path, progress=False)
    assert [c.status for c in again.cells] == ["skipped"]
    assert again.records == first.records  # a skipped cell still returns its record


def test_results_views(trained_tiny, tmp_path):
    res = evaluate(trained_tiny, defense=["none", "jpeg(quality=50)"], dataset="digits", attacks=["fgsm"], n=20,
                   eps=["8/255", 0.2], progress=False)
    assert res.eps == (8 / 255, 0.2)
    (head,) = [h for h in res.headline if h.defense == "jpeg(quality=50)"]
    b = head.budgets[1]
    cell = [c for c in res.cells if c.defense == "jpeg(quality=50)"][0]
    assert b.worst == pytest.approx(sum(cell.robust(1)) / 20)
    assert b.interval[0] <= b.worst <= b.interval[1]
    assert "worst case" in res.table()
    written = res.save(tmp_path)
    assert len(written) == 2 and all(p.exists() for p in written)
    pd = pytest.importorskip("pandas", reason="pandas is an optional extra (pip install defensebench[pandas])")
    frame = res.to_frame()
    assert isinstance(frame, pd.DataFrame)
    assert len(frame) == 2 * 2  # defenses x budgets (one attack, one threat model)
    assert set(frame["defense"]) == {"none", "jpeg(quality=50)"}
    # deterministic pipelines: one draw, so the mean over draws is the accuracy itself
    assert (frame["adversarial_accuracy_mean_over_draws"] == frame["adversarial_accuracy"]).all()


def test_to_frame_without_pandas_names_the_extra(trained_tiny, monkeypatch):
    import builtins

    res = evaluate(trained_tiny, dataset="digits", attacks="fgsm", n=10, progress=False)
    real_import = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name == "pandas":
            raise ImportError("no pandas here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(BenchError, match=r"defensebench\[pandas\]"):
        res.to_frame()


def test_a_configured_instance_is_named_as_on_the_command_line(trained_tiny):
    from attacks.gradient import PGD
    from defenses.jpeg import JPEG

    res = evaluate(trained_tiny, defense=JPEG(quality=50), dataset="digits", attacks=[PGD(steps=5)], n=10,
                   progress=False)
    assert res.records[0]["config"]["defense"] == "jpeg(quality=50)"
    assert res.records[0]["config"]["attack"] == "pgd(steps=5)"
    assert res.records[0]["defense"]["options"]["quality"] == 50


@pytest.mark.parametrize("kwargs, words", [
    ({"threat": "bogus"}, "unknown threat model"),
    ({"eot_sample": 3}, "eot_samples"),
    ({"eps": [2]}, "not in [0, 1]"),
    ({"attacks": [3]}, "an attack is a name"),
    ({"defense": "adv-fgsm"}, "train the classifier"),
    ({"weights": "x.pt"}, "an nn.Module brings its own weights"),
])
def test_bad_arguments_are_one_clear_error(trained_tiny, kwargs, words):
    args = {"dataset": "digits", "attacks": "fgsm", "n": 10, "progress": False, **kwargs}
    with pytest.raises(BenchError, match=words.replace("[", r"\[").replace("]", r"\]")):
        evaluate(trained_tiny, **args)


def test_the_readme_python_example_runs():
    """The README's Python quickstart, executed as written but on digits (CI runs it)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("```python\n", readme.index("## From Python")) + len("```python\n")
    code = readme[start : readme.index("```", start)]
    assert len(code.strip().splitlines()) < 20
    code = code.replace('dataset="mnist5k"', 'dataset="digits"').replace("n=100", "n=10")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["results"].records
