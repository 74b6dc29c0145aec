"""Generative projection defenses: the GAN and its training, invert-and-classify's projection, the deep image prior's
fit, their determinism, bad input, and the commands. Tiny networks: seconds each."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import models  # noqa: F401
from benchmark.cli import main
from benchmark.core.errors import BenchError
from benchmark.store.model_store import ModelStore
from benchmark.training.gan import (
    build_gan,
    check_gan_fits,
    gan_config,
    get_gan,
    train_gan,
)
from defenses.deep_image_prior import DeepImagePrior, RefreshedFit
from defenses.invert_and_classify import InvertAndClassify, WarmStartProjection
from models.dip import DIPFit, fit, fit_each
from models.gan import Generator
from models.projection import Projection, project, project_each

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def tiny_generator():
    torch.manual_seed(0)
    return Generator(SHAPE, latent=8, width=8).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def in_range(tiny_generator):
    """Images the generator makes exactly: G(z) for z away from the starts."""
    z = torch.randn(6, 8, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        return tiny_generator(z)


def test_projection_recovers_a_point_in_the_generators_range(tiny_generator, in_range):
    images, _, errors = project(tiny_generator, in_range, Projection(steps=200, restarts=4))
    start = (tiny_generator(Projection(restarts=4).starts(8)).mean(0) - in_range).square().mean()
    final = (images - in_range).square().flatten(1).mean(1)
    assert final.max() < 1e-5, f"projection errors {final.tolist()} (error from the starts' mean {float(start):.2e})"


def test_restarts_keep_each_images_best(tiny_generator, in_range):
    x = (in_range + 0.1 * torch.randn(in_range.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    images, z, errors = project(tiny_generator, x, Projection(steps=20, restarts=5))
    assert errors.shape == (len(x), 5)
    kept = (images - x).square().flatten(1).mean(1)
    torch.testing.assert_close(kept, errors.min(1).values)
    torch.testing.assert_close(tiny_generator(z), images)
    assert (errors.max(1).values > errors.min(1).values).all(), "the restarts should end in different places"


def test_projection_is_batch_independent_and_seeded(tiny_generator, in_range):
    cfg = Projection(steps=30, restarts=3, seed=7)
    batched = project(tiny_generator, in_range, cfg)[0]
    torch.testing.assert_close(batched, project_each(tiny_generator, in_range, cfg), atol=1e-6, rtol=0)
    assert torch.equal(batched, project(tiny_generator, in_range, cfg)[0])
    assert not torch.equal(batched, project(tiny_generator, in_range, Projection(steps=30, restarts=3, seed=8))[0])


def test_warm_started_projection_follows_small_moves_and_projects_new_inputs_in_full(tiny_generator, in_range):
    cfg = Projection(steps=100, restarts=4)
    forward = WarmStartProjection(tiny_generator, cfg, steps=20, reach=0.3)
    x = (in_range + 0.05 * torch.randn(in_range.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    assert torch.equal(forward(x), project(tiny_generator, x, cfg)[0]), "the first call is the full projection"

    # a small move, as one attack step makes, and two rows replaced by new images (the generator's are near 0.45)
    moved = (x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    moved[0], moved[1] = 0.0, 1.0
    out = forward(moved)
    full = project(tiny_generator, moved, cfg)[0]
    assert torch.equal(out[:2], project(tiny_generator, moved[:2], cfg)[0]), "new inputs get the full projection"
    warm_error = (out[2:] - moved[2:]).square().flatten(1).mean(1)
    full_error = (full[2:] - moved[2:]).square().flatten(1).mean(1)
    cold_error = (project(tiny_generator, moved[2:], Projection(steps=20, restarts=1))[0] - moved[2:]).square()
    assert (warm_error <= 1.5 * full_error + 1e-6).all(), (warm_error, full_error)
    assert warm_error.mean() < cold_error.flatten(1).mean(1).mean(), "20 warm steps beat 20 steps from a cold start"


def test_adaptive_attacks_on_invert_and_classify_take_warm_forwards_and_record_them(tiny_generator, in_range):
    from attacks.adaptive import DefendedModel
    from benchmark.core.registry import ATTACKS
    from benchmark.engine.threats import ThreatOptions, adaptive_target
    from defenses.feature_squeezing import FeatureSqueezing

    defense = InvertAndClassify(steps=30, restarts=2)
    defense.generator = tiny_generator
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)).eval()
    model, recorded = adaptive_target(classifier, defense, ThreatOptions(), ATTACKS.get("pgd").factory())
    assert recorded["gradients"] == {"invert-and-classify": "bpda-identity"}
    assert "warm-started projection" in recorded["bpda_forward"]["invert-and-classify"]
    calls = []
    model._forwards[0] = lambda x: calls.append(len(x)) or project(tiny_generator, x, defense.projection)[0]
    x = in_range.clone().requires_grad_(True)
    model(x).sum().backward()
    assert calls == [len(x)] and x.grad.abs().sum() > 0, "gradient steps go through the stand-in"
    with torch.no_grad():
        torch.testing.assert_close(model(in_range), classifier(defense.purify(in_range)))
    assert calls == [len(x)], "predictions without gradients run the real projection"
    assert "bpda_forward" not in adaptive_target(classifier, defense, ThreatOptions(),
                                                 ATTACKS.get("min-max-manifold").factory())[1]
    assert DefendedModel(classifier, FeatureSqueezing(), 1).bpda_forwards() == {}


def test_dip_loss_falls_and_stops_at_the_set_count():
    x = torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(0))
    out, losses, snapshots = fit(x, DIPFit(iterations=40, width=8), checkpoints=(10, 40))
    assert losses.shape == (40, 3)  # one loss per iteration and image: it ran exactly 40
    assert (losses[-1] < 0.5 * losses[0]).all()
    torch.testing.assert_close(snapshots[40], out)
    assert not torch.equal(snapshots[10], out)
    torch.testing.assert_close((out - x).square().flatten(1).mean(1), losses[-1], atol=2e-3, rtol=0.5)


def test_dip_is_deterministic_for_a_seed_and_batch_independent():
    x = torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(0))
    cfg = DIPFit(iterations=15, width=8, seed=3)
    out = fit(x, cfg)[0]
    assert torch.equal(out, fit(x, cfg)[0])
    torch.testing.assert_close(out, fit_each(x, cfg), atol=1e-6, rtol=0)
    assert not torch.equal(out, fit(x, DIPFit(iterations=15, width=8, seed=4))[0])


def test_refreshed_dip_fit_adds_the_last_fit_s_removal_and_refits_each_row_on_its_schedule():
    cfg = DIPFit(iterations=15, width=8)
    forward = RefreshedFit(cfg, batch_size=2, refresh=3, reach=0.3)  # batches of 2: a refit of 3 rows spans two
    x = torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(0))
    assert torch.equal(forward(x), fit(x, cfg)[0]), "the first call is the fit"
    removed = fit(x, cfg)[0] - x

    def step(t: torch.Tensor, seed: int) -> torch.Tensor:  # a move as small as an attack step's
        return (t + 0.01 * torch.randn(t.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)

    moved = step(x, 1)
    moved[0] = 1 - moved[0]  # a new image: farther than reach from the one last fit
    out = forward(moved)
    assert torch.equal(out[0], fit(moved[:1], cfg)[0][0]), "a new input gets a fit of its own"
    torch.testing.assert_close(out[1:], (moved[1:] + removed[1:]).clamp(0, 1))
    removed0 = fit(moved[:1], cfg)[0][0] - moved[0]

    third = step(moved, 2)
    torch.testing.assert_close(forward(third), (third + torch.cat([removed0[None], removed[1:]])).clamp(0, 1))
    fourth = step(third, 3)  # rows 1 and 2 were fit three calls ago, row 0 two calls ago
    out = forward(fourth)
    torch.testing.assert_close(out[0], (fourth[0] + removed0).clamp(0, 1))
    assert torch.equal(out[1:], fit(fourth[1:], cfg)[0]), "a row is fit again after `refresh` calls"
    assert "full fit every 3 steps" in forward.describe()


def test_adaptive_attacks_on_the_deep_image_prior_take_the_refreshed_fit_unless_told_to_run_the_real_one():
    from attacks.adaptive import DefendedModel
    from benchmark.core.registry import ATTACKS
    from benchmark.core.vocab import Threat
    from benchmark.engine.threats import ThreatOptions, adaptive_target, config_options

    defense = DeepImagePrior(iterations=5, width=8)
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)).eval()
    pgd = ATTACKS.get("pgd").factory()
    model, recorded = adaptive_target(classifier, defense, ThreatOptions(), pgd)
    assert isinstance(model._forwards[0], RefreshedFit)
    assert "refreshed fit" in recorded["bpda_forward"]["deep-image-prior"]
    real, recorded = adaptive_target(classifier, defense, ThreatOptions(stand_ins=False), pgd)
    assert real._forwards == [None] and "bpda_forward" not in recorded
    # record ids: unchanged for the default, a separate record with the stand-ins off
    assert config_options(Threat.ADAPTIVE, "resnet", 0, ThreatOptions()) == {"eot_samples": 10, "eval_draws": 10}
    assert config_options(Threat.ADAPTIVE, "resnet", 0, ThreatOptions(stand_ins=False))["bpda_forward"] == "real"
    assert DefendedModel(classifier, defense, 1, stand_ins=False).bpda_forwards() == {}


def test_real_forward_needs_the_adaptive_threat_model():
    result = CliRunner().invoke(main, ["run", "--dataset", "digits", "--n", "4", "--defense", "deep-image-prior",
                                       "--attack", "fgsm", "--real-forward"])
    assert result.exit_code == 2
    assert "--real-forward only applies to --threat adaptive, not oblivious" in result.output


@pytest.mark.parametrize("make, message", [
    (lambda: Projection(steps=0), "steps (L) must be a positive integer, not 0"),
    (lambda: Projection(restarts=2.5), "restarts (R) must be a positive integer, not 2.5"),
    (lambda: Projection(steps=True), "steps (L) must be a positive integer, not True"),
    (lambda: InvertAndClassify(restarts=-1), "restarts (R) must be a positive integer, not -1"),
    (lambda: DIPFit(iterations=0), "iterations must be a positive integer, not 0"),
    (lambda: DeepImagePrior(iterations=1.0), "iterations must be a positive integer, not 1.0"),
    (lambda: gan_config("digits", latent=0), "latent must be a positive integer, not 0"),
])
def test_bad_options_are_refused_in_one_line(make, message):
    with pytest.raises(BenchError) as err:
        make()
    assert str(err.value) == message


def test_a_generator_of_the_wrong_shape_or_data_set_is_refused(tiny_generator, digits):
    with pytest.raises(BenchError, match=r"makes images of shape \(1, 8, 8\), but the inputs have shape \(1, 28, 28\)"):
        project(tiny_generator, torch.rand(2, 1, 28, 28), Projection(steps=1, restarts=1))
    meta = {"key": "k", "spec": {"dataset": "mnist5k", "shape": [1, 28, 28]}}
    with pytest.raises(BenchError) as err:
        InvertAndClassify().use_generator(tiny_generator, meta, digits)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("this GAN was trained on 'mnist5k' images of shape (1, 28, 28), not on 'digits'")
    check_gan_fits({"spec": {"dataset": "digits", "shape": [1, 8, 8]}}, digits)


def test_interrupted_gan_training_resumes_where_it_stopped(digits, resumes_after_a_kill):
    cfg = gan_config("digits", "tiny")

    def fresh():
        torch.manual_seed(0)
        return build_gan(digits.shape, cfg)

    resumes_after_a_kill(fresh, lambda gan, folder: train_gan(gan, digits, cfg, torch.device("cpu"), 0, folder))


def test_stored_gan_holds_its_measured_quality(digits):
    gan, meta = get_gan(digits, torch.device("cpu"), ModelStore(), size="tiny")
    m = meta["metrics"]
    assert m["quality_points"] == 16 and 0 <= m["projected_accuracy"] <= 1 and m["projection_mse"] > 0
    assert m["projection"]["steps"] == 200 and m["projection"]["restarts"] == 10
    assert not any(p.requires_grad for p in gan.parameters())


def test_cli_trains_a_gan_and_writes_its_sample_grid(tmp_path: Path):
    result = CliRunner().invoke(main, ["train", "gan", "--dataset", "digits", "--size", "tiny", "--quiet",
                                       "--figures", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "accuracy on projections of 16 clean test images" in result.output
    assert (tmp_path / "digits_gan_samples.png").stat().st_size > 1000
    refused = CliRunner().invoke(main, ["train", "gan", "--dataset", "digits", "--size", "huge"])
    assert refused.exit_code == 2
    assert refused.output.strip().splitlines() == ["bench: error: unknown GAN size 'huge'; sizes: tiny, small"]


def test_dip_tuning_reads_every_count_off_one_fit(digits, digits_classifier):
    from benchmark.training.dip import tune_iterations

    model, _ = digits_classifier
    result = tune_iterations(digits, model, torch.device("cpu"), width=8, points=8, candidates=(2, 6))
    assert result["iterations"] in (2, 6) and [r["iterations"] for r in result["per_count"]] == [2, 6]
    best = max(result["per_count"], key=lambda r: r["clean_accuracy"] + r["adversarial_accuracy"])
    assert best["clean_accuracy"] + best["adversarial_accuracy"] == pytest.approx(
        sum(r["clean_accuracy"] + r["adversarial_accuracy"] for r in result["per_count"]
            if r["iterations"] == result["iterations"]))


def test_speed_benchmark_compares_outputs():
    from benchmark.perf.gan import dip_speed, projection_speed

    row = projection_speed("8x8x1", n=2, steps=3, restarts=2, device="cpu", peak=1e10)
    assert row["max_abs_diff"] < 1e-6 and row["speedup"] > 0 and row["mflop_per_image"] > 0
    row = dip_speed("8x8x1", n=2, iterations=3, device="cpu", peak=1e10)
    assert row["max_abs_diff"] < 1e-6 and row["batched_peak_share"] > 0 and row["each_peak_share"] > 0


def test_min_max_attack_finds_close_pairs_the_classifier_tells_apart(digits, digits_classifier):
    from benchmark.training.robust_manifold import divergence, min_max_pairs

    model, _ = digits_classifier
    gan, _ = get_gan(digits, torch.device("cpu"), ModelStore())
    generator = gan.generator
    torch.manual_seed(0)
    z0, z0b = min_max_pairs(model, generator, 16, eta=1.0, steps=1)
    torch.manual_seed(0)
    z, z2 = min_max_pairs(model, generator, 16, eta=1.0, steps=30)
    with torch.no_grad():
        a, b = generator(z), generator(z2)
        before = divergence(model(generator(z0)), model(generator(z0b))).mean()
        after = divergence(model(a), model(b)).mean()
    assert after > 2 * before, f"mean divergence {float(before):.3f} -> {float(after):.3f}"
    assert (a - b).flatten(1).norm(dim=1).median() <= 1.1  # the penalty holds the pairs near eta


def test_robust_projection_training_uses_the_data_set_it_was_configured_with(digits, digits_classifier, monkeypatch):
    """The min-max training loss takes its GAN from the loaded data set the training config was made for, so a data
    set read from --data-root trains without BENCH_DATA pointing at it."""
    import defenses.robust_manifold as robust
    from benchmark.core.defense import build_defense

    def no_reload(*args, **kwargs):
        raise AssertionError("the data set was loaded again")

    monkeypatch.setattr("benchmark.data.dataset.load_dataset", no_reload)
    seen = []
    real = robust.training_generator
    monkeypatch.setattr(robust, "training_generator",
                        lambda dataset, config, device: seen.append(dataset) or real(dataset, config, device))
    defense = build_defense("invert-and-classify-robust(attack_steps=1)")
    config = defense.training_config(digits)
    model, _ = digits_classifier
    loss = defense.training_loss(model, digits.train.x[:4], digits.train.y[:4], config)
    assert seen == [digits] and torch.isfinite(loss)
