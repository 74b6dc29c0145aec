"""The adaptive and transfer threat models on scikit-learn's digits: BPDA, surrogates, EOT, evaluation over draws,
the transfer substitute, and the records they write."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from attacks.adaptive import DefendedModel, gradient_modes
from benchmark.core.defense import Defense, DefenseContext, build_defense
from benchmark.core.errors import BenchError, CellFailed
from benchmark.core.registry import ATTACKS, DEFENSES
from benchmark.core.vocab import Threat
from benchmark.engine.adversarial import generate, predict
from benchmark.engine.runner import RunPlan, defended_correct, defended_predictions, run
from benchmark.engine.threats import ThreatOptions
from benchmark.store.model_store import ModelStore

CPU = torch.device("cpu")
EPS = 25 / 255
N = 40


@pytest.fixture(scope="module")
def points(digits):
    return digits.test.x[:N], digits.test.y[:N]


def _prepared(name: str, digits, model) -> Defense:
    defense = build_defense(name)
    defense.prepare(DefenseContext(digits, model, CPU, ModelStore(), 0))
    return defense


def _accuracy(defense: Defense, model, x, y, seed: int = 0, draws: int = 1) -> float:
    return float(defended_correct(defense, model, x, y, 64, CPU, seed, draws)[0].float().mean())


def _attack(name: str, model, x, y, eps: float = EPS) -> torch.Tensor:
    return generate(ATTACKS.get(name).factory(), model, x, y, (eps,), seed=0, batch_size=64, device=CPU).per_eps[0]


# -- toy defenses (tests only, never registered for the whole session) -----------------------------------------------

class _Quantise(Defense):
    """Rounds to 1/255: changes almost nothing, but its true gradient is zero everywhere (gradient masking)."""

    name = "zz-quantise"
    purifies, differentiable = True, False

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 255) / 255


class _QuantiseClaimingGradients(_Quantise):
    """The same purifier, wrongly declared differentiable: attacks then follow its zero gradient."""

    name = "zz-quantise-claims-gradients"
    differentiable = True


class _Noise(Defense):
    """Adds Gaussian noise (differentiable, randomised) and counts the images it purifies."""

    name = "zz-noise"
    purifies, randomised = True, True
    instances: ClassVar[list[_Noise]] = []

    def __init__(self, sigma: float = 0.1) -> None:
        self.sigma, self.calls, self.images = sigma, 0, 0
        self.instances.append(self)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images += len(x)
        return (x + self.sigma * torch.randn_like(x)).clamp(0, 1)


class _SecretNoise(Defense):
    """Adds noise but declares itself deterministic: the randomness probe must notice."""

    name = "zz-secret-noise"
    purifies = True

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 0.01 * torch.randn_like(x)).clamp(0, 1)


class _Blank(Defense):
    """Replaces each input by a blank image with probability 0.3 per draw: wrong about 30% of the time at random."""

    name = "zz-blank"
    purifies, randomised = True, True

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        blank = torch.rand(len(x), 1, 1, 1) < 0.3
        return torch.where(blank, torch.zeros_like(x), x)


class _NoisyVote(Defense):
    """Decides by the classifier's arg max after a small random nudge of its logits: unanimous where the margin is
    wide, random near a decision boundary (as a region vote is before a robust classifier)."""

    name = "zz-noisy-vote"
    classifies, randomised = True, True

    def classify(self, classifier, x: torch.Tensor) -> torch.Tensor:
        logits = classifier(x)
        nudged = logits + 4 * (torch.rand(logits.shape) - 0.5)
        return torch.nn.functional.one_hot(nudged.argmax(1), logits.shape[1]).float()


@pytest.fixture
def toy_defenses():
    toys = {cls.name: cls for cls in (_Quantise, _QuantiseClaimingGradients, _Noise, _Blank, _SecretNoise)}
    DEFENSES.names()  # load the built-ins first
    for name, factory in toys.items():
        DEFENSES.add(name, factory, "tests")
    yield list(toys)
    for name in toys:
        DEFENSES._entries.pop(name, None)


# -- the defended model ---------------------------------------------------------------------------------------------

def test_adaptive_pgd_on_the_undefended_classifier_is_plain_pgd(digits, digits_classifier, points):
    model, _ = digits_classifier
    x, y = points
    none = _prepared("none", digits, model)
    plain = _attack("pgd", model, x, y)
    adaptive = _attack("pgd", DefendedModel(model, none), x, y)
    assert torch.equal(plain, adaptive)  # same seed, same gradients: the same adversarial inputs
    assert _accuracy(none, model, plain, y) == _accuracy(none, model, adaptive, y) < 0.9


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_runs_against_the_defended_pipeline(name, digits, digits_classifier, points, build_attack):
    """Adaptive forms of every registered attack, through BPDA, with the harness's checks (bounds, budget, finite)."""
    model, _ = digits_classifier
    x, y = points[0][:8], points[1][:8]
    attack = build_attack(name)
    eps = 0.3 if name in ("autoattack", "square") else EPS  # as in test_contracts: their short path
    wrapped = DefendedModel(model, _prepared("feature-squeezing", digits, model))
    if attack.needs_generator:  # feature squeezing has none: one line says where the attack runs
        with pytest.raises(CellFailed, match=rf"^{name} attacks the generator .* has no generator\)$"):
            generate(attack, wrapped, x, y, attack.budgets((eps,)), seed=0, batch_size=8, device=CPU)
        return
    adv = generate(attack, wrapped, x, y, attack.budgets((eps,)), seed=0, batch_size=8, device=CPU)
    assert len(adv.per_eps) == len(attack.budgets((eps,)))
    assert not model.training and not wrapped.training  # torchattacks restores the mode it found: eval


def test_bpda_forward_is_the_real_pipeline_and_backward_the_surrogate(digits, digits_classifier, points):
    model, _ = digits_classifier
    x, _ = points
    squeeze = _prepared("feature-squeezing", digits, model)
    assert gradient_modes(squeeze) == {"feature-squeezing": "bpda-surrogate"}
    assert gradient_modes(_Quantise()) == {"zz-quantise": "bpda-identity"}
    probe = x.clone().requires_grad_(True)
    logits = DefendedModel(model, squeeze)(probe)
    assert torch.equal(logits, model(squeeze.purify(x)))  # forward: exactly the deployed pipeline
    logits.sum().backward()
    # backward: the classifier's gradient at the purified input, carried back to x by the surrogate's Jacobian
    purified = squeeze.purify(x).requires_grad_(True)
    model(purified).sum().backward()
    by_hand = x.clone().requires_grad_(True)
    squeeze.bpda_surrogate(by_hand).backward(purified.grad)
    assert probe.grad.abs().sum() > 0 and torch.allclose(probe.grad, by_hand.grad)


def test_bpda_pgd_breaks_feature_squeezing(digits, digits_classifier, points):
    model, _ = digits_classifier
    x, y = points
    squeeze = _prepared("feature-squeezing", digits, model)
    oblivious = _accuracy(squeeze, model, _attack("pgd", model, x, y), y)
    adaptive = _accuracy(squeeze, model, _attack("pgd", DefendedModel(model, squeeze), x, y), y)
    print(f"feature squeezing, pgd at 25/255, n={N}: oblivious {oblivious:.3f}, adaptive (BPDA) {adaptive:.3f}")
    assert adaptive <= oblivious - 0.25, (oblivious, adaptive)
    assert adaptive <= 0.2


def test_bpda_beats_gradient_masking(digits_classifier, points):
    model, _ = digits_classifier
    x, y = points
    honest, claiming = _Quantise(), _QuantiseClaimingGradients()
    masked = _accuracy(claiming, model, _attack("pgd", DefendedModel(model, claiming), x, y), y)
    bpda = _accuracy(honest, model, _attack("pgd", DefendedModel(model, honest), x, y), y)
    undefended = float((predict(model, _attack("pgd", model, x, y)) == y).float().mean())
    print(f"1/255 rounding, pgd at 25/255, n={N}: real (zero) gradients {masked:.3f}, BPDA {bpda:.3f}, "
          f"undefended {undefended:.3f}")
    assert masked >= bpda + 0.3, (masked, bpda)  # zero gradients leave PGD with its random start only
    assert bpda <= undefended + 0.1  # straight-through recovers the undefended classifier's gradients


def test_eot_averages_the_logits_of_k_draws(digits_classifier, points):
    model, _ = digits_classifier
    x = points[0][:8]
    noise = _Noise()
    wrapped = DefendedModel(model, noise, eot_samples=7)
    torch.manual_seed(3)
    probe = x.clone().requires_grad_(True)
    wrapped(probe).logsumexp(1).sum().backward()
    assert (noise.calls, noise.images) == (7, 7 * len(x))  # one call per draw, each on the whole batch
    with torch.no_grad():
        wrapped(x)
    assert noise.calls == 8  # without gradients (an attack checking success): one draw, as deployed
    torch.manual_seed(3)  # the same seven draws by hand
    by_hand = x.clone().requires_grad_(True)
    torch.stack([model(noise.purify(by_hand)) for _ in range(7)]).mean(0).logsumexp(1).sum().backward()
    assert torch.allclose(probe.grad, by_hand.grad, atol=1e-6)
    assert DefendedModel(model, _Quantise(), eot_samples=7).eot_samples == 1  # nothing to average


def test_evaluation_over_draws_needs_every_draw_right(digits_classifier, points):
    model, _ = digits_classifier
    x, y = points
    blank = _Blank()
    singles = [defended_predictions(blank, model, x, 64, CPU, 0, draw)[0] == y for draw in range(5)]
    all_five = defended_correct(blank, model, x, y, 64, CPU, 0, draws=5)[0]
    assert torch.equal(all_five, torch.stack(singles).all(0))
    assert torch.equal(defended_correct(blank, model, x, y, 64, CPU, 0, draws=1)[0], singles[0])
    assert all_five.float().mean() < singles[0].float().mean() - 0.2  # about 0.7**5 against 0.7


# -- the runner -----------------------------------------------------------------------------------------------------

def _records(results: Path) -> dict[tuple[str, str], dict]:
    found = {}
    for path in sorted((results / "records").rglob("*.json")):
        rec = json.loads(path.read_text())
        found[(rec["config"]["defense"], rec["config"]["attack"])] = rec
    return found


def test_adaptive_run_records_eot_and_draws(tmp_path: Path, toy_defenses, digits_classifier):
    plan = RunPlan(dataset="digits", defenses=("none", "zz-noise"), attacks=("fgsm",), eps=(8 / 255,), n=20,
                   threat=Threat.ADAPTIVE, threat_options=ThreatOptions(eot_samples=3, eval_draws=4),
                   device="cpu", results_dir=tmp_path)
    assert [r.status for r in run(plan)] == ["done", "done"]
    recs = _records(tmp_path)
    noisy, plain = recs[("zz-noise", "fgsm")], recs[("none", "fgsm")]
    assert noisy["config"]["threat"] == "adaptive"
    assert noisy["config"]["threat_options"] == {"eot_samples": 3, "eval_draws": 4}
    assert noisy["attack"]["options"]["eot_samples"] == 3 and noisy["defense"]["eval_draws"] == 4
    assert noisy["attack"]["options"]["gradients"] == {"zz-noise": "exact"}
    assert plain["attack"]["options"]["eot_samples"] == 1 and plain["defense"]["eval_draws"] == 1
    assert noisy["substitute"] is None
    # a rerun finds the cells (their ids include the threat options); other options are other cells
    assert [r.status for r in run(plan)] == ["skipped", "skipped"]
    other = RunPlan(**{**vars(plan), "threat_options": ThreatOptions(eot_samples=2, eval_draws=4),
                       "defenses": ("none",)})
    assert [r.status for r in run(other)] == ["done"]


def test_adaptive_run_counts_draws(tmp_path: Path, toy_defenses, digits_classifier):
    _Noise.instances.clear()
    plan = RunPlan(dataset="digits", defenses=("zz-noise",), attacks=("fgsm",), eps=(8 / 255,), n=20,
                   threat=Threat.ADAPTIVE, threat_options=ThreatOptions(eot_samples=3, eval_draws=4),
                   device="cpu", results_dir=tmp_path, batch_size=20)
    run(plan)
    # clean and adversarial evaluation: 4 draws each; FGSM: one gradient (3 draws) and foolbox's success check (1);
    # the sanity probes: 3 runs for randomness, 1 watching for inner optimisation, 1 gradient (3 draws)
    assert [noise.calls for noise in _Noise.instances] == [4 + 4 + 3 + 1 + 3 + 1 + 3]


def test_transfer_attacks_a_substitute(tmp_path: Path, digits_classifier):
    plan = RunPlan(dataset="digits", defenses=("none", "feature-squeezing"), attacks=("fgsm",), eps=(25 / 255,),
                   n=20, threat=Threat.TRANSFER, device="cpu", results_dir=tmp_path)
    assert [r.status for r in run(plan)] == ["done", "done"]
    rec = _records(tmp_path)[("none", "fgsm")]
    target = digits_classifier[1]["key"]
    assert rec["config"]["threat"] == "transfer"
    assert rec["config"]["threat_options"] == {"substitute": "vgg", "substitute_seed": 1}
    assert rec["classifier"]["key"] == target
    assert rec["substitute"]["key"] != target and (rec["substitute"]["arch"], rec["substitute"]["seed"]) == ("vgg", 1)
    assert rec["substitute"]["test_accuracy"] > 0.8
    # transferred inputs are weaker than white-box ones on the classifier they were not crafted on
    white_box = run(RunPlan(**{**vars(plan), "threat": Threat.OBLIVIOUS, "defenses": ("none",)}))[0].record
    assert rec["summary"]["robust_accuracy"][0] > white_box["summary"]["robust_accuracy"][0]


def test_gradient_masking_toy_trips_the_sanity_checks(tmp_path: Path, toy_defenses, digits_classifier):
    from attacks.autoattack import Square
    from benchmark.report import leaderboard
    from benchmark.store import records

    ATTACKS.add("zz-square", lambda: Square(n_queries=300), "tests")  # Square's full 5,000 queries take minutes
    try:
        plan = RunPlan(dataset="digits", defenses=("none", "zz-quantise-claims-gradients", "zz-secret-noise"),
                       attacks=("pgd", "zz-square"), eps=(25 / 255,), n=N, threat=Threat.ADAPTIVE, device="cpu",
                       results_dir=tmp_path)
        assert {r.status for r in run(plan)} == {"done"}
    finally:
        ATTACKS._entries.pop("zz-square", None)
    recs = _records(tmp_path)
    masked = recs[("zz-quantise-claims-gradients", "pgd")]["checks"]
    assert masked["gradients"]["zero"] == 1.0 and masked["randomness"]["observed"] is False
    secret = recs[("zz-secret-noise", "pgd")]["checks"]["randomness"]
    assert secret == {"declared": False, "observed": True, "repeatable": True}
    plain = recs[("none", "pgd")]["checks"]
    assert plain["gradients"] == {"zero": 0.0, "nonfinite": 0.0}
    assert plain["optimises_in_forward"] == {"declared": False, "observed": False, "differentiated": True}
    assert plain["largest_perturbation"][0] <= 25 / 255 + 1e-6

    text = leaderboard.render(records.load_all(tmp_path))
    unlinked = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # each headline defense links to its page
    headline = {line.split("|")[1].strip(): line for line in unlinked.splitlines()
                if line.startswith("|") and "**" in line}
    assert "zero gradients (100%)" in headline["zz-quantise-claims-gradients"]
    assert "zz-square (adaptive) beats every gradient attack" in headline["zz-quantise-claims-gradients"]
    assert "random but declared deterministic" in headline["zz-secret-noise"]
    assert headline["none"].split("|")[-3].strip() == "ok"  # the checks column, before the weights


def test_perf_adaptive_reports_a_step_cost_per_defense(digits_classifier):
    from test_cli import bench

    result = bench("perf", "adaptive", "--dataset", "digits", "--defense", "none,zz-missing", "--n", "4")
    assert result.exit_code == 2 and "zz-missing" in result.output  # unknown names: one line, exit 2
    result = bench("perf", "adaptive", "--dataset", "digits", "--defense", "none,feature-squeezing", "--n", "4",
                   "--steps", "1")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| digits")]
    assert len(rows) == 2 and "feature-squeezing: bpda-surrogate" in rows[1]
    assert all(float(row.split("|")[7]) > 0 for row in rows)
    result = bench("perf", "adaptive", "--dataset", "digits", "--defense", "deep-image-prior", "--n", "2",
                   "--steps", "2")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| digits")]
    assert len(rows) == 2 and "refreshed fit" in rows[0] and "real (--real-forward)" in rows[1]


def test_diagnose_measures_what_a_purifier_undoes(digits_classifier):
    from benchmark.engine.diagnose import purification_survival

    common = dict(dataset_name="digits", model_name="resnet", attack_name="fgsm", eps=(25 / 255,), n=10,
                  threat=Threat.OBLIVIOUS, device="cpu")
    clean, none = purification_survival(defense_name="none", **common)
    assert none["undone"] == 0 and none["surviving_l1"] == 1.0 and none["perturbed_subpixels"] > 0.5
    assert clean["median_linf"] == 0 and none["median_linf"] == pytest.approx(25, abs=0.1)  # FGSM's step, in levels
    assert clean["eps"] == "clean" and clean["perturbed_subpixels"] == 0 and clean["defended_accuracy"] >= 0.8
    assert none["defended_accuracy"] < clean["defended_accuracy"]
    # ten balanced test points, at least eight classified right: no class takes more than three of the predictions
    top_class, share = clean["most_predicted"].split()
    assert int(top_class) in range(10) and int(share.strip("(%)")) <= 30
    _, squeezed = purification_survival(defense_name="feature-squeezing", **common)
    assert squeezed["undone"] > 0.3  # bit-depth reduction rounds most small changes back
    with pytest.raises(BenchError, match="--bpda soft needs --threat adaptive and a PixelDefend defense"):
        purification_survival(defense_name="feature-squeezing", bpda="soft", **common)


class _AllBlack(Defense):
    """Purifies every input to the same all-black image: the pipeline then predicts one class for everything."""

    name = "zz-all-black"
    purifies = True

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def test_diagnose_shows_a_pipeline_collapsed_onto_one_class(digits_classifier, monkeypatch):
    from benchmark.engine import diagnose

    monkeypatch.setattr(diagnose, "build_defense", lambda name: _AllBlack())
    rows = diagnose.purification_survival("digits", "resnet", "zz-all-black", "fgsm", (25 / 255,), 10, Threat.OBLIVIOUS,
                                          device="cpu")
    assert [r["eps"] for r in rows] == ["clean", "25/255"]
    assert all(r["most_predicted"].endswith("(100%)") and r["defended_accuracy"] <= 0.2 for r in rows)
    assert rows[1]["undone"] == 1.0 and rows[1]["surviving_l1"] == 0


class _InnerDescent(Defense):
    """Purifies by a few steps of gradient descent towards a smoother image, without declaring it."""

    name = "zz-inner-descent"
    purifies = True

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        z = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            for _ in range(3):
                loss = ((z - x) ** 2).sum() + (z[..., 1:] - z[..., :-1]).abs().sum()
                (grad,) = torch.autograd.grad(loss, z)
                z = (z - 0.05 * grad).detach().requires_grad_(True)
        return z.detach().clamp(0, 1)


def test_inner_optimisation_is_seen_and_flagged(digits_classifier, points):
    from benchmark.engine.sanity import defense_flags, probe_defense

    (x, y), model = points, digits_classifier[0]
    checks = probe_defense(model, _InnerDescent(), x, y, eot_samples=1, seed=0)
    assert checks["optimises_in_forward"] == {"declared": False, "observed": True, "differentiated": True}
    assert defense_flags(checks) == ["optimises in forward, differentiated through it",
                                     "optimises in forward, not declared",
                                     "zero gradients (100%)"]  # its output is detached: no gradient reaches x
    tv = build_defense("tv-minimization")
    tv.prepare(DefenseContext(None, model, CPU, ModelStore(), 0))
    checks = probe_defense(model, tv, x, y, eot_samples=2, seed=0)
    assert checks["optimises_in_forward"] == {"declared": True, "observed": False, "differentiated": False}
    assert checks["randomness"] == {"declared": True, "observed": True, "repeatable": True}
    assert defense_flags(checks) == ["optimises in forward"]


@pytest.mark.parametrize("threat", list(Threat))
def test_adversarial_inputs_are_keyed_by_the_attacked_weights(threat: Threat, digits_classifier) -> None:
    """Inputs crafted on other weights of the same training config (a retrained model) must never be reused."""
    from benchmark.engine.cells import Workbench

    plan = RunPlan(dataset="digits", defenses=("feature-squeezing",), attacks=("fgsm",), eps=(8 / 255,), n=8,
                   threat=threat, device="cpu")
    bench = Workbench(plan, CPU, ModelStore())
    key = bench.source("feature-squeezing", "fgsm").cache_key
    _, meta = bench.classifier("feature-squeezing")
    if threat == Threat.TRANSFER:
        assert key["weights"] == bench.substitute()[1]["weights_sha256"] != meta["weights_sha256"]
    else:
        assert key["weights"] == meta["weights_sha256"]
    if threat == Threat.ADAPTIVE:
        assert key["models"] == bench.models("feature-squeezing") == {
            f"classifier/{meta['key']}": meta["weights_sha256"]}


class _OwnModel(Defense):
    """A purifier with a trained model of its own in the store (as PixelDefend's PixelCNN)."""

    name = "zz-own-model"
    purifies = True

    def prepare(self, ctx: DefenseContext) -> None:
        ctx.store.get_or_build("toy", {"dataset": ctx.dataset.name}, torch.nn.Linear(1, 1), lambda m: {})

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_a_records_models_include_the_defenses_own(tmp_path: Path, digits_classifier) -> None:
    from benchmark.engine.cells import Workbench

    plan = RunPlan(dataset="digits", defenses=("zz-own-model",), attacks=("fgsm",), eps=(8 / 255,), n=8, device="cpu")
    store = ModelStore(tmp_path)
    bench = Workbench(plan, CPU, store, defenses={"zz-own-model": _OwnModel()})
    models = bench.models("zz-own-model")
    own = json.loads((store.folder("toy", {"dataset": "digits"}) / "meta.json").read_text())
    _, meta = bench.classifier("zz-own-model")
    assert models == {f"classifier/{meta['key']}": meta["weights_sha256"], f"toy/{own['key']}": own["weights_sha256"]}


def test_a_random_vote_unanimous_on_clean_points_is_seen_random_between_them(digits_classifier, points):
    from benchmark.engine.sanity import _seen_randomness, defense_flags, probe_defense

    (x, y), model = points, digits_classifier[0]
    with torch.no_grad():
        top2 = model(x).topk(2, 1).values
    margin = top2[:, 0] - top2[:, 1]
    widest = margin.argsort(descending=True)[:16]
    x, y = x[widest], y[widest]
    assert bool((margin[widest] > 4).all())  # margins wider than the nudge: no clean decision changes
    vote = _NoisyVote()
    assert _seen_randomness(model, vote, x, seed=0) == (False, True)
    checks = probe_defense(model, vote, x, y, eot_samples=1, seed=0)
    assert checks["randomness"] == {"declared": True, "observed": True, "repeatable": True}
    assert "declared random, never varies" not in defense_flags(checks)


def test_an_attack_bar_moves_with_every_pass_through_the_model():
    """Progress that moves: the attack's bar is told of every forward pass (a step, restart or query batch), not only
    of finished batches of images; a silenced bar costs no hook."""
    from torch import nn

    from benchmark.engine.adversarial import passes_shown

    class Bar:
        disable = False

        def __init__(self):
            self.postfix, self.redraws = "", 0

        def set_postfix_str(self, text, refresh=False):
            self.postfix = text

        def update(self, n):
            self.redraws += 1

    model, bar = nn.Linear(3, 2), Bar()
    with passes_shown(model, bar):
        for _ in range(5):
            model(torch.zeros(1, 3))
    assert bar.redraws == 5 and bar.postfix.startswith("5 passes")
    model(torch.zeros(1, 3))
    assert bar.redraws == 5  # the hook is gone after the attack
    quiet = Bar()
    quiet.disable = True
    with passes_shown(model, quiet):
        model(torch.zeros(1, 3))
    assert quiet.redraws == 0


def test_the_grid_clock_ticks_while_a_cell_runs(restore_cli_state):
    """The grid bar redraws on its own (its elapsed time moves) while one long cell runs; closing stops the clock."""
    import time

    from benchmark.core.progress import set_quiet
    from benchmark.engine.grid_progress import GridProgress

    set_quiet(False)
    tracker = GridProgress(total=1, tick_seconds=0.01)
    redraws = []
    tracker._bar.refresh = lambda *a, **k: redraws.append(1)
    tracker.start()
    time.sleep(0.2)  # one long cell
    tracker.close()
    ticks = len(redraws)
    assert ticks >= 3
    time.sleep(0.05)
    assert len(redraws) == ticks


# -- re-evaluation over draws and the comparison with the base classifier (Croce et al. 2022) ------------------------

class _Coin(Defense):
    """Decides by the classifier's arg max, but names the next class instead with probability 1/4 per example and
    draw: a known per-draw error rate on every point the classifier gets right."""

    name = "zz-coin"
    classifies, randomised = True, True

    def classify(self, classifier, x: torch.Tensor) -> torch.Tensor:
        logits = classifier(x)
        wrong = torch.rand(len(x), device=x.device) < 0.25
        decided = torch.where(wrong, (logits.argmax(1) + 1) % logits.shape[1], logits.argmax(1))
        return torch.nn.functional.one_hot(decided, logits.shape[1]).float()


class _Mirror(Defense):
    """Mirrors every digit left to right: deterministic, and much less accurate than the classifier it protects."""

    name = "zz-mirror"
    purifies = True

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(3)


@pytest.fixture
def draw_toys():
    DEFENSES.names()
    for cls in (_Coin, _Mirror):
        DEFENSES.add(cls.name, cls, "tests")
    yield
    for cls in (_Coin, _Mirror):
        DEFENSES._entries.pop(cls.name, None)


def test_reevaluation_keeps_the_mean_and_the_worst_case_over_draws(tmp_path: Path, draw_toys, digits,
                                                                   digits_classifier):
    from benchmark.report.leaderboard import render_full
    from benchmark.store.records import load_all, validate

    model, _ = digits_classifier
    plan = RunPlan(dataset="digits", defenses=("zz-coin",), attacks=("fgsm",), eps=(8 / 255,), n=N,
                   threat=Threat.ADAPTIVE, threat_options=ThreatOptions(eot_samples=2, eval_draws=10),
                   device="cpu", results_dir=tmp_path)
    assert [r.status for r in run(plan)] == ["done"]
    rec = _records(tmp_path)[("zz-coin", "fgsm")]
    validate(rec)
    out, draws = rec["outcomes"], rec["outcomes"]["draws_correct"]
    with torch.no_grad():  # the points the classifier alone gets right: there the toy errs at its known rate
        right = (model(digits.test_points(N).x).argmax(1) == torch.tensor(out["label"])).tolist()
    on_right = [c for c, r in zip(draws["clean"], right) if r]
    assert len(on_right) >= 30 and max(draws["clean"]) <= 10
    assert abs(sum(on_right) / (10 * len(on_right)) - 0.75) < 0.08  # the per-draw rate of right answers
    # the worst case over draws: right in all ten, about 0.75**10 = 6% of the points
    assert out["clean_correct"] == [int(c == 10) for c in draws["clean"]]
    assert sum(out["clean_correct"]) <= 0.2 * N
    assert out["adv_correct"] == [[int(c == 10) for c in draws["adv"][0]]]
    assert rec["summary"]["robust_accuracy_mean_over_draws"] == [round(sum(draws["adv"][0]) / (10 * N), 5)]
    assert "(mean " in render_full(load_all(tmp_path))  # the details give the mean beside the worst case


def test_a_defense_less_robust_than_its_base_is_flagged(tmp_path: Path, draw_toys, toy_defenses, digits_classifier):
    from benchmark.report.headline import headlines
    from benchmark.store.records import load_all

    plan = RunPlan(dataset="digits", defenses=("none", "zz-mirror", "zz-quantise"), attacks=("fgsm", "bim"),
                   eps=(8 / 255,), n=N, device="cpu", results_dir=tmp_path)
    assert [r.status for r in run(plan)] == ["done"] * 6
    flags = {h.defense: " ".join(h.flags) for h in headlines(load_all(tmp_path), (8 / 255,))}
    assert "less robust than its base none under the same 2 attacks" in flags["zz-mirror"]
    assert "less robust than its base" not in flags["zz-quantise"]  # rounding to 1/255 costs nothing here
    assert "less robust than its base" not in flags["none"]


def test_diagnose_names_the_class_a_projection_classifier_gives_the_generators_range(digits_classifier, monkeypatch):
    """A defense projecting onto a generator gets a row of the classifier's most predicted class on the generator's
    samples; here a generator whose every sample is black, which the classifier puts in one class."""
    from benchmark.engine import diagnose

    class _BlackGenerator(torch.nn.Module):
        latent = 4

        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.zeros(()))

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.scale * z[:, :1, None, None].expand(-1, 1, 8, 8)

    class _Projects(_AllBlack):
        name = "zz-projects"
        generator = _BlackGenerator()

    monkeypatch.setattr(diagnose, "build_defense", lambda name: _Projects())
    rows = diagnose.purification_survival("digits", "resnet", "zz-projects", "fgsm", (25 / 255,), 10, Threat.OBLIVIOUS,
                                          device="cpu")
    assert [r["eps"] for r in rows] == ["clean", "generator samples", "25/255"]
    samples = rows[1]
    assert samples["defended_accuracy"] is None and samples["most_predicted"].endswith("(100%)")
    from test_cli import bench

    # the command line prints that row too (build_defense is still patched: "none" builds the projecting defense)
    result = bench("diagnose", "--dataset", "digits", "--defense", "none", "--attack", "fgsm", "--n", "5",
                   "--threat", "oblivious")
    assert result.exit_code == 0, result.output
    assert re.search(r"\| generator samples\s+\|\s+1000 \|", result.output), result.output  # the table prints it
