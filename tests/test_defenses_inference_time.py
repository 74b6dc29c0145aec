"""The inference-time defenses from the wider literature (randomization, JPEG, spatial smoothing, TV minimisation,
pixel deflection, region-based classification, PRM): each checked against an independent computation of what it
claims to do (the contract tests check the traits and shapes of all of them)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.defense import ComposedDefense, DefenseContext, build_defense
from benchmark.core.errors import BenchError
from benchmark.engine.runner import defended_correct
from benchmark.store.model_store import ModelStore


def _prepared(name: str, digits, classifier, **kwargs):
    from benchmark.core.registry import DEFENSES

    defense = DEFENSES.get(name).factory(**kwargs)
    defense.prepare(DefenseContext(digits, classifier, torch.device("cpu"), ModelStore(), 0))
    return defense


def _seeded(defense, x, seed):
    torch.manual_seed(seed)
    return defense.purify(x)


# -- randomization -----------------------------------------------------------------------------------------------
def test_randomization_is_a_resize_and_a_zero_pad():
    from defenses.randomization import resize_and_pad

    x = torch.rand(3, 2, 28, 28)
    size, top, left = torch.tensor([25, 26, 27]), torch.tensor([0, 2, 1]), torch.tensor([3, 0, 1])
    out = resize_and_pad(x, size, top, left)
    for i in range(3):  # what F.interpolate and F.pad give image by image
        s, t, lf = int(size[i]), int(top[i]), int(left[i])
        small = F.interpolate(x[i : i + 1], size=(s, s), mode="nearest")
        assert torch.equal(out[i : i + 1], F.pad(small, (lf, 28 - s - lf, t, 28 - s - t)))


def test_randomization_keeps_shape_and_range_and_repeats_only_for_one_seed(digits):
    defense = build_defense("randomization")
    x = digits.test.x[:64]
    out = _seeded(defense, x, 0)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, _seeded(defense, x, 0))
    assert not torch.equal(out, _seeded(defense, x, 1))
    # 8x8 digits shrink to 7x7: one row and one column of zeros at a random side
    blank_rows = (out.sum(dim=(1, 3)) == 0).sum(1)
    assert (blank_rows >= 1).all()


def test_randomization_rejects_bad_scale():
    from defenses.randomization import Randomization

    with pytest.raises(BenchError, match="min_scale"):
        Randomization(min_scale=1.5)


# -- jpeg --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_equals_torchvision_round_trip(channels):
    from torchvision.io import decode_jpeg, encode_jpeg

    x = torch.rand(4, channels, 16, 16)
    out = build_defense("jpeg").purify(x)
    for i in range(4):
        levels = (x[i] * 255).round().to(torch.uint8)
        expected = decode_jpeg(encode_jpeg(levels, quality=75)).float() / 255
        assert torch.equal(out[i], expected)
    assert not torch.equal(out, x)


@pytest.mark.parametrize("quality", [0, 101, 75.5, -3])
def test_jpeg_rejects_bad_quality(quality):
    from defenses.jpeg import JPEG

    with pytest.raises(BenchError, match="quality"):
        JPEG(quality=quality)


# -- spatial smoothing -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [2, 3])
def test_spatial_smoothing_is_scipys_median_filter(size):
    import scipy.ndimage as ndi

    from defenses.spatial_smoothing import SpatialSmoothing

    x = torch.rand(3, 2, 9, 8)
    expected = ndi.median_filter(x.numpy(), size=(1, 1, size, size))
    assert np.array_equal(SpatialSmoothing(size).purify(x).numpy(), expected)


def test_spatial_smoothing_is_feature_squeezings_filter(digits):
    from defenses.feature_squeezing import median_filter_2x2

    x = digits.test.x[:16]
    assert torch.equal(build_defense("spatial-smoothing").purify(x), median_filter_2x2(x))


# -- TV minimisation ---------------------------------------------------------------------------------------------
def test_tv_minimization_lowers_total_variation_and_minimises_its_objective(digits):
    from defenses.tv_minimization import (
        WEIGHT,
        objective,
        total_variation,
        tv_reconstruct,
    )

    x = digits.test.x[:32]
    torch.manual_seed(0)
    keep = (torch.rand(x.shape) >= 0.5).float()
    z = tv_reconstruct(x, keep, WEIGHT)
    assert (total_variation(z) < total_variation(x)).all()
    best = objective(z, x, keep, WEIGHT)
    # better than the input itself, than the input with dropped pixels zeroed, and than small moves away from z
    assert (best < objective(x, x, keep, WEIGHT)).all()
    assert (best < objective(x * keep, x, keep, WEIGHT)).all()
    for _ in range(3):
        assert (best <= objective(z + 0.01 * torch.randn_like(z), x, keep, WEIGHT) + 1e-4).all()


def test_tv_minimization_drops_at_the_configured_rate_and_repeats_for_a_seed(digits):
    from defenses.tv_minimization import TVMinimization

    defense = TVMinimization()
    x = digits.test.x[:200]
    torch.manual_seed(0)
    kept = float(defense.dropout_mask(x).mean())
    assert abs(kept - 0.5) < 0.02
    assert torch.equal(_seeded(defense, x, 3), _seeded(defense, x, 3))
    with pytest.raises(BenchError, match="weight"):
        TVMinimization(weight=-1)


# -- pixel deflection --------------------------------------------------------------------------------------------
def test_pixel_deflection_changes_at_most_the_configured_pixels_within_the_window():
    from defenses.pixel_deflection import deflect

    x = torch.rand(16, 3, 28, 28)
    gen = torch.Generator().manual_seed(0)
    out = deflect(x, 39, 2, gen)
    changed = out != x
    assert changed.flatten(2).sum(-1).max() <= 39 and changed.any()
    # every changed value is copied from the same channel within two rows and columns
    n, c, r, col = changed.nonzero(as_tuple=True)
    for i, k, a, b in zip(n.tolist(), c.tolist(), r.tolist(), col.tolist()):
        window = x[i, k, max(0, a - 2) : a + 3, max(0, b - 2) : b + 3]
        assert (window == out[i, k, a, b]).any()


def test_pixel_deflection_denoiser_is_bayes_shrink_image_by_image():
    import pywt

    from defenses.pixel_deflection import bayes_shrink

    x = torch.rand(3, 2, 28, 28)
    out = bayes_shrink(x, 0.04)
    var = 0.04**2
    for i in range(3):
        for k in range(2):
            coeffs = pywt.wavedec2(x[i, k].double().numpy(), "db1", level=1)
            shrunk = [coeffs[0]] + [tuple(
                pywt.threshold(d, var / np.sqrt(max((d * d).mean() - var, np.finfo(float).eps)), mode="soft")
                for d in level) for level in coeffs[1:]]
            expected = np.clip(pywt.waverec2(shrunk, "db1"), 0, 1)
            assert np.allclose(out[i, k].numpy(), expected, atol=1e-6)


def test_pixel_deflection_sizes_itself_to_the_images(digits, digits_classifier):
    defense = _prepared("pixel-deflection", digits, digits_classifier[0])
    assert defense.options()["deflections"] == 3 and defense.options()["window"] == 2  # 5% of 64 pixels
    x = digits.test.x[:32]
    assert not torch.equal(_seeded(defense, x, 0), _seeded(defense, x, 1))
    with pytest.raises(BenchError, match="window"):
        build_defense("pixel-deflection").__class__(window=0)


# -- region-based classification ---------------------------------------------------------------------------------
class _Threshold(nn.Module):
    """Class 1 when the mean pixel exceeds 0.5, else class 0: a toy classifier whose vote can be counted by hand."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        above = (x.flatten(1).mean(1) > 0.5).float()
        return torch.stack([1 - above, above], dim=1)


def test_region_based_vote_equals_a_hand_counted_vote():
    from defenses.region_based import RegionBased, region_points

    x = torch.tensor([0.48, 0.52, 0.1, 0.95]).view(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()
    defense = RegionBased(radius=0.3, samples=101)
    torch.manual_seed(7)
    votes = defense.classify(_Threshold(), x)
    # the same draws, counted by hand: the defense's generator is seeded from the global one
    torch.manual_seed(7)
    from benchmark.core.defense import draw_generator

    points = region_points(x, 0.3, 101, draw_generator())
    above = (points.flatten(2).mean(2) > 0.5).float()  # (samples, N)
    assert torch.allclose(votes[:, 1], above.mean(0))
    assert torch.equal(votes.argmax(1), (above.mean(0) > 0.5).long())
    # far from the threshold the whole region agrees; points stay in the box and within the radius
    assert votes[2, 0] == 1 and votes[3, 1] == 1
    assert points.min() >= 0 and points.max() <= 1 and ((points - x).abs() <= 0.3 + 1e-6).all()


def test_region_based_decides_in_the_runner_and_in_the_adaptive_model(digits, digits_classifier):
    from attacks.adaptive import DefendedModel, gradient_modes

    model, _ = digits_classifier
    defense = _prepared("region-based", digits, model)
    opts = defense.options()
    search = opts.pop("radius_search")
    assert opts == {"radius": defense.radius, "samples": 100, "region": "linf hypercube within [0, 1]"}
    # Cao and Gong's choice: the first (largest) radius whose vote keeps the classifier's validation accuracy
    tried = search["vote_accuracy"]
    assert list(tried)[-1] == str(defense.radius) and float(list(tried)[0]) == 0.3
    assert tried[str(defense.radius)] >= search["classifier_accuracy"] - 0.01
    assert all(v < search["classifier_accuracy"] - 0.01 for v in list(tried.values())[:-1])
    x, y = digits.test.x[:40], digits.test.y[:40]
    correct, _, _ = defended_correct(defense, model, x, y, 16, torch.device("cpu"), seed=0)
    again, _, _ = defended_correct(defense, model, x, y, 16, torch.device("cpu"), seed=0)
    assert torch.equal(correct, again)
    assert correct.float().mean() >= 0.8
    wrapped = DefendedModel(model, defense, eot_samples=2)
    with torch.no_grad():
        votes = wrapped(x)
    assert torch.allclose(votes.sum(1), torch.ones(len(x)))  # vote shares, not logits
    probe = x.clone().requires_grad_(True)
    wrapped(probe).sum().backward()  # gradients through the surrogate: the classifier at random region points
    assert probe.grad is not None and probe.grad.abs().sum() > 0
    assert gradient_modes(defense) == {"region-based": "classify-surrogate"}


def test_region_based_composes_and_refuses_a_second_vote():
    composed = build_defense("jpeg+region-based")
    assert isinstance(composed, ComposedDefense) and composed.classifies and composed.purifies
    assert "classifies" in composed.traits()
    with pytest.raises(BenchError, match="classified one way"):
        build_defense("region-based+region-based")
    with pytest.raises(BenchError, match="radius"):
        build_defense("region-based").__class__(radius=-0.1)


# -- pixel robustness manipulator --------------------------------------------------------------------------------
def test_prm_layer_starts_as_the_identity_and_masks_only_designated_pixels():
    from defenses.prm import SparseFirstLayer, stochastic_mask

    layer = SparseFirstLayer((1, 8, 8), stride=2, kernel=3)
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(layer(x), x)
    assert float(layer.designated.mean()) == 0.25
    keep = stochastic_mask(x, layer.designated, 0.5, torch.Generator().manual_seed(0))
    assert (keep[:, :, layer.designated[0, 0] == 0] == 1).all()  # undesignated pixels are never dropped
    assert 0.3 < float(1 - keep[:, :, layer.designated[0, 0] == 1].mean()) < 0.7


def test_prm_trains_its_sparse_layer_on_digits(digits, digits_classifier, tmp_path):
    from defenses.prm import PixelRobustnessManipulator

    model, _ = digits_classifier
    defense = PixelRobustnessManipulator()
    defense.prepare(DefenseContext(digits, model, torch.device("cpu"), ModelStore(tmp_path), 0))
    m = defense.metrics
    # the gradient moves onto the designated pixels, and the trained layer copes with the masking better than none
    assert m["designated_gradient_share"] > m["designated_gradient_share_before"] + 0.05
    assert m["val_accuracy"] > m["val_accuracy_identity_masked"]
    assert m["val_accuracy_unmasked"] >= 0.9
    # the layer is stored: a second defense loads it instead of training again
    other = PixelRobustnessManipulator()
    other.prepare(DefenseContext(digits, model, torch.device("cpu"), ModelStore(tmp_path), 0))
    assert other.layer_key == defense.layer_key
    assert all(torch.equal(a, b) for a, b in zip(other.layer.state_dict().values(), defense.layer.state_dict().values()))
    x = digits.test.x[:32]
    assert not torch.equal(_seeded(defense, x, 0), _seeded(defense, x, 1))


# -- parameters --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, kwargs, word", [
    ("jpeg", {"quality": 0}, "quality"),
    ("randomization", {"min_scale": 0}, "min_scale"),
    ("spatial-smoothing", {"size": 5}, "window"),
    ("pixel-deflection", {"deflections": -1}, "deflections"),
    ("pixel-deflection", {"sigma": 0}, "sigma"),
    ("tv-minimization", {"drop_rate": 1.0}, "drop_rate"),
    ("tv-minimization", {"iterations": 0}, "iterations"),
    ("region-based", {"radius": -0.3}, "radius"),
    ("region-based", {"samples": 0}, "samples"),
    ("prm", {"lam": -1}, "lam"),
    ("prm", {"mask_rate": 1.5}, "mask_rate"),
    ("prm", {"stride": 1}, "stride"),
])
def test_bad_parameters_are_one_clear_line(name, kwargs, word):
    from benchmark.core.registry import DEFENSES

    with pytest.raises(BenchError, match=word) as info:
        DEFENSES.get(name).factory(**kwargs)
    assert "\n" not in str(info.value)
