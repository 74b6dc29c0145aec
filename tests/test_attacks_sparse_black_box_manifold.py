"""The one-pixel, substitute (black-box, Papernot et al.) and min-max-manifold (robust manifold paper) attacks on
scikit-learn's digits: what each promises beyond the contract tests. Seconds each."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attacks.adaptive import DefendedModel
from attacks.onepixel import OnePixel, changed_pixels
from attacks.substitute import (
    Substitute,
    SubstituteTraining,
    oracle_labels,
    train_substitute,
)
from benchmark.core.defense import DefenseContext, build_defense
from benchmark.core.errors import BenchError, CellFailed
from benchmark.core.registry import ATTACKS
from benchmark.core.vocab import AttackKind, Norm
from benchmark.engine.adversarial import generate, predict
from benchmark.engine.checks import check_adversarial
from benchmark.engine.threats import ThreatOptions, adaptive_target
from benchmark.store.model_store import ModelStore

CPU = torch.device("cpu")
N = 24


@pytest.fixture(scope="module")
def setup(digits, digits_classifier):
    model, _ = digits_classifier
    return model, digits.test.x[:N], digits.test.y[:N]


def _uniform_noise(x: torch.Tensor, eps: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return (x + (2 * torch.rand(x.shape, generator=gen) - 1) * eps).clamp(0, 1)


def _sign_noise(x: torch.Tensor, eps: float) -> torch.Tensor:
    """The strongest random noise of an L-infinity budget: every pixel moved by +-eps."""
    gen = torch.Generator().manual_seed(0)
    return (x + (torch.rand(x.shape, generator=gen) < 0.5).float().mul(2).sub(1) * eps).clamp(0, 1)


def _fooled(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x) != y).float().mean())


# -- one-pixel ----------------------------------------------------------------------------------------------------

def test_one_pixel_declares_what_it_is():
    cls = ATTACKS.get("one-pixel").factory
    assert (cls.norm, cls.kind, cls.needs_gradients, cls.randomised) == (Norm.L0, AttackKind.MINIMAL, False, True)


@pytest.mark.parametrize("pixels", [1, 2])
def test_one_pixel_fools_some_points_changing_at_most_its_pixels(pixels, setup):
    model, x, y = setup
    torch.manual_seed(0)
    adv = OnePixel(pixels=pixels).run(model, x, y, None)
    check_adversarial(x, adv, None, None, "one-pixel")
    fooled = predict(model, adv) != y
    changed = changed_pixels(x, adv)
    print(f"one-pixel, {pixels} pixel(s): fooled {int(fooled.sum())}/{N}, changed pixels {changed.tolist()}")
    assert int((fooled & (predict(model, x) == y)).sum()) >= 3  # correctly classified points it fooled
    assert int(changed.max()) <= pixels and (changed[fooled] >= 1).all()
    assert (changed[~fooled] == 0).all()  # a failure is the clean input


def test_one_pixel_follows_torchs_seed_and_leaves_numpy_alone(setup, monkeypatch):
    model, x, y = setup
    seeds = []
    real_seed = np.random.seed
    monkeypatch.setattr(np.random, "seed", lambda s=None: seeds.append(s) or real_seed(s))
    real_seed(5)
    expected_numpy = np.random.rand()
    real_seed(5)
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        runs.append(OnePixel(steps=5).run(model, x[:8], y[:8], None))
    assert np.random.rand() == expected_numpy  # NumPy's global generator is where the attack found it
    assert torch.equal(runs[0], runs[1])
    assert seeds[0] == seeds[1] != seeds[2]  # differential evolution's draws follow torch's seed


# -- substitute ---------------------------------------------------------------------------------------------------

class _LabelOracle(nn.Module):
    """The attacked model, refusing to be differentiated: a label-only black box must never ask for gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.queries = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled() and not x.requires_grad, "the substitute attack asked for gradients"
        self.queries += len(x)
        return self.model(x)


def test_substitute_agrees_with_the_oracle_and_asks_only_labels(digits, digits_classifier):
    model, _ = digits_classifier
    oracle = _LabelOracle(model)
    seed_x = digits.test.x[:100]
    substitute, queries = train_substitute(oracle, seed_x, SubstituteTraining(), seed=0)
    assert queries == oracle.queries - 1 == 16 * len(seed_x)  # m + m + 2m + 4m + 8m labels (+ one to count classes)
    held_out = digits.test.x[300:800]  # points the substitute never saw
    agreement = float((oracle_labels(substitute, held_out) == oracle_labels(model, held_out)).float().mean())
    untrained = float((oracle_labels(train_substitute(oracle, seed_x, SubstituteTraining(rounds=0, epochs=1), 0)[0],
                                     held_out) == oracle_labels(model, held_out)).float().mean())
    print(f"substitute agreement with the oracle on 500 held-out digits: {agreement:.3f} (1 epoch, no rounds: "
          f"{untrained:.3f})")
    assert agreement >= 0.7 and agreement > untrained + 0.1


@pytest.mark.parametrize("name", ["substitute", "substitute-bim"])
def test_transferred_examples_beat_noise_of_the_same_budget(name, digits, digits_classifier):
    model, _ = digits_classifier
    x, y = digits.test.x[:100], digits.test.y[:100]
    eps = 0.3
    adv = generate(ATTACKS.get(name).factory(), _LabelOracle(model), x, y, (eps,), seed=0, batch_size=100,
                   device=CPU).per_eps[0]
    transferred, uniform, sign = _fooled(model, adv, y), _fooled(model, _uniform_noise(x, eps), y), \
        _fooled(model, _sign_noise(x, eps), y)
    print(f"{name} at {eps}: fooled {transferred:.2f}; uniform noise {uniform:.2f}, +-eps noise {sign:.2f}")
    assert transferred >= max(uniform, sign) + 0.2


def test_substitute_is_deterministic_for_a_seed_and_trained_once_per_batch(setup, monkeypatch):
    model, x, y = setup
    import attacks.substitute as module

    trained = []
    real = module.train_substitute
    monkeypatch.setattr(module, "train_substitute", lambda *a: trained.append(1) or real(*a))
    small = dict(rounds=1, epochs=2)
    adv = [generate(Substitute(**small), model, x, y, (0.1, 0.3), seed=s, batch_size=N, device=CPU).per_eps
           for s in (0, 0, 1)]
    assert len(trained) == 3  # one substitute per batch (and seed), shared by both budgets
    assert all(torch.equal(a, b) for a, b in zip(adv[0], adv[1]))
    assert not torch.equal(adv[0][1], adv[2][1])


def test_substitute_queries_the_deployed_pipeline_under_adaptive(digits, digits_classifier, setup):
    model, x, y = setup
    defense = build_defense("feature-squeezing")
    defense.prepare(DefenseContext(digits, model, CPU, ModelStore(), 0))
    calls = []
    purify = defense.purify
    defense.purify = lambda z: calls.append(z.requires_grad) or purify(z)
    attack = ATTACKS.get("substitute").factory(rounds=1, epochs=1)
    target, how = adaptive_target(model, defense, ThreatOptions(), attack)
    assert how == {"gradients": {}, "eot_samples": 1}  # no BPDA, no EOT: the deployed system, one draw per query
    attack.run(target, x, y, 0.1)
    assert calls and not any(calls)  # every label came through the real purifier, never differentiated


def test_substitute_refuses_bad_settings():
    with pytest.raises(BenchError, match="^substitute epochs must be a positive integer, not 0$"):
        Substitute(epochs=0)
    with pytest.raises(BenchError, match="^substitute rounds must be a non-negative integer, not 1.5$"):
        Substitute(rounds=1.5)


# -- min-max-manifold ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gan_defense(digits, digits_classifier):
    model, _ = digits_classifier
    defense = build_defense("invert-and-classify")
    defense.prepare(DefenseContext(digits, model, CPU, ModelStore(), 0))
    return defense


def test_min_max_manifold_records_its_own_exact_gradients(gan_defense, setup):
    model, _, _ = setup
    bpda = adaptive_target(model, gan_defense, ThreatOptions(), ATTACKS.get("pgd").factory())[1]
    own = adaptive_target(model, gan_defense, ThreatOptions(), ATTACKS.get("min-max-manifold").factory())[1]
    assert bpda["gradients"] == {"invert-and-classify": "bpda-identity"}  # PGD goes through the projection by BPDA
    assert own["gradients"] == {"invert-and-classify": "exact (generator and classifier)"}  # never the projection


def test_min_max_manifold_beats_noise_through_the_projection(gan_defense, setup):
    model, x, y = setup
    pipeline = DefendedModel(model, gan_defense).eval()
    eps = 25 / 255
    adv = generate(ATTACKS.get("min-max-manifold").factory(), pipeline, x, y, (eps,), seed=0, batch_size=N,
                   device=CPU).per_eps[0]  # the harness checks the budget and the box
    assert float((adv - x).abs().amax()) <= eps + 1e-6
    clean, noise, attacked = (1 - _fooled(pipeline, x, y), 1 - _fooled(pipeline, _uniform_noise(x, eps), y),
                              1 - _fooled(pipeline, adv, y))
    print(f"invert-and-classify on the digits GAN, {N} digits at 25/255: clean {clean:.2f}, "
          f"uniform noise {noise:.2f}, min-max-manifold {attacked:.2f}")
    assert attacked <= noise - 0.25 and attacked <= clean - 0.25


def test_min_max_manifold_says_where_it_runs(digits, digits_classifier, gan_defense, setup):
    model, x, y = setup
    attack = ATTACKS.get("min-max-manifold").factory()
    with pytest.raises(CellFailed) as bare:
        attack.run(model, x, y, 0.1)
    assert "\n" not in str(bare.value) and "run it with --threat adaptive against one of them" in str(bare.value)
    squeeze = build_defense("feature-squeezing+invert-and-classify")
    squeeze.parts[1] = gan_defense
    with pytest.raises(CellFailed, match="with no other purifier"):
        attack.run(DefendedModel(model, squeeze), x, y, 0.1)


def test_cli_reports_min_max_manifold_on_another_defense_in_one_line(tmp_path):
    from test_cli import bench

    result = bench("run", "--dataset", "digits", "--defense", "none", "--attack", "min-max-manifold", "--n", "10",
                   "--quiet", "--results-dir", str(tmp_path))
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("bench: error")]
    assert errors == ["bench: error: cell none x min-max-manifold failed: min-max-manifold attacks the generator of "
                      "a GAN projection defense (invert-and-classify or invert-and-classify-robust); run it with "
                      "--threat adaptive against one of them (here it was handed a bare classifier, not a defended "
                      "pipeline)"]


def test_all_and_wildcards_leave_out_attacks_that_apply_to_no_selected_defense(tmp_path):
    from test_cli import bench

    common = ("--dataset", "digits", "--defense", "none", "--n", "10", "--results-dir", str(tmp_path))
    result = bench("run", *common, "--attack", "fgsm,min-max*")
    assert result.exit_code == 0, result.output
    assert "bench: leaving out min-max-manifold: it attacks a GAN projection defense" in result.stderr
    assert "min-max-manifold" not in result.stdout
    result = bench("run", *common, "--attack", "min-max*", "--threat", "adaptive")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "bench: error: no attack of 'min-max*' applies to none under --threat adaptive")


# -- Carlini-Wagner L0 --------------------------------------------------------------------------------------------

def _l0(adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return ((adv - x).abs().flatten(1) > 1e-8).sum(1).float()


def test_cw_l0_declares_what_it_is():
    cls = ATTACKS.get("cw-l0").factory
    assert (cls.norm, cls.kind, cls.needs_gradients, cls.randomised) == (Norm.L0, AttackKind.MINIMAL, True, False)


@pytest.fixture(scope="module")
def cw_l0_adversarials(setup) -> torch.Tensor:
    from attacks.cw_l0 import CarliniWagnerL0

    model, x, y = setup
    return CarliniWagnerL0().run(model, x, y, None)


def test_cw_l0_fools_changing_few_pixels(setup, cw_l0_adversarials):
    from attacks.cw import CarliniWagnerL2

    model, x, y = setup
    correct = predict(model, x) == y
    adv = cw_l0_adversarials
    check_adversarial(x, adv, None, None, "cw-l0")
    fooled = predict(model, adv) != y
    assert fooled[correct].float().mean() >= 0.9
    assert torch.equal(adv[~fooled], x[~fooled])  # nothing found (or misclassified already): x itself
    # the L2 attack moves nearly every pixel a little; the L0 one a handful (of 64) a lot
    l2_adv = CarliniWagnerL2().run(model, x, y, None)
    both = fooled & (predict(model, l2_adv) != y) & correct
    assert _l0(adv, x)[both].median() <= 0.25 * _l0(l2_adv, x)[both].median()
    assert _l0(adv, x)[both].median() <= 16


def test_cw_l0_shrinking_the_pixel_set_is_what_makes_it_sparse(setup, cw_l0_adversarials):
    from attacks.cw_l0 import CarliniWagnerL0

    model, x, y = setup
    one_round = CarliniWagnerL0(max_rounds=1).run(model, x, y, None)  # masked CW L2 with every pixel allowed
    full = cw_l0_adversarials
    both = (predict(model, one_round) != y) & (predict(model, full) != y)
    assert both.sum() >= N // 2
    assert (_l0(full, x)[both] < _l0(one_round, x)[both]).float().mean() >= 0.9


def test_cw_l0_removes_pixels_by_the_reference_rule():
    from attacks.cw_l0 import CarliniWagnerL0

    # margin Z_0 - Z_1 = sum of the pixels: its gradient is 1 everywhere, so a pixel's score is |its change|
    model = nn.Sequential(nn.Flatten(), nn.Linear(100, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.ones(100), torch.zeros(100)]))
        model[1].bias.zero_()
    x0 = torch.full((2, 1, 10, 10), 0.25)
    change = torch.full((2, 100), 0.5)
    change[0, 10:30] = 0.001  # image 0: twenty negligible changes (score <= 0.01)
    change[1, 50] = 0.001  # image 1: one negligible change, then 0.2 below the rest
    change[1, 60] = 0.2
    allowed = torch.ones(2, 1, 10, 10, dtype=torch.bool)
    allowed.view(2, -1)[0, 10] = False  # a pixel no longer allowed is never picked again
    adv = x0 + change.view_as(x0)
    removed = CarliniWagnerL0()._to_remove(model, x0, torch.zeros(2, dtype=torch.long), adv, allowed).view(2, -1)
    # 100 changed pixels allow ceil(0.3 * sqrt(100)) = 3 removals per round
    assert removed[0].sum() == 3 and removed[0, 11:30].sum() == 3 and not removed[0, 10]
    # image 1: the negligible pixel and then one more (the next lowest score), then stop
    assert removed[1].nonzero().flatten().tolist() == [50, 60]


def test_cw_l0_is_deterministic_and_works_under_no_grad(setup):
    from attacks.cw_l0 import CarliniWagnerL0

    model, x, y = setup
    attack = CarliniWagnerL0(max_rounds=5)
    first = attack.run(model, x[:8], y[:8], None)
    with torch.no_grad():
        second = attack.run(model, x[:8], y[:8], None)
    assert torch.equal(first, second)
