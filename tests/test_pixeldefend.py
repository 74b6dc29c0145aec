"""PixelCNN and PixelDefend: exactness of the fast paths against plain definitions, likelihoods on hand-checkable cases,
the adaptive variants' decisions, and refusals."""
from __future__ import annotations

import math

import pytest
import torch

import defenses  # noqa: F401  (registers the defenses)
import models  # noqa: F401
from benchmark.core.defense import build_defense
from benchmark.core.errors import BenchError
from benchmark.training.pixelcnn import check_pixelcnn_fits, p_values
from defenses.pixeldefend import PixelDefend, eps_levels, purify, purify_reference
from models import mixture
from models.pixelcnn import PixelCNN, sharpen_
from models.pixelcnn_fast import IncrementalPixelCNN

NEAR_TIE = 1e-3  # nats: float32 reordering moves parameters by ~1e-6, times scales of up to ~100 levels^-1


def tiny(shape, seed=0, dtype=torch.float32):
    """An untrained PixelCNN, its distributions sharpened (scales ~2 levels) like a trained one's: a freshly
    initialised network is nearly flat, and flat distributions are all near ties."""
    torch.manual_seed(seed)
    return sharpen_(PixelCNN(shape, filters=8, blocks=2, mixtures=3).eval()).to(dtype)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 6, 7)])
def test_incremental_evaluation_equals_the_forward_pass(shape):
    model, x = tiny(shape), torch.rand(4, *shape)
    full = model(x)
    inc = IncrementalPixelCNN(model, x)
    for r in range(shape[1]):
        inc.begin_row(r)
        for c in range(shape[2]):
            torch.testing.assert_close(inc.params_at(r, c), full[:, :, r, c], rtol=1e-5, atol=1e-5)
            inc.set_pixel(r, c, x[:, :, r, c])


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 6, 7)])
def test_outputs_depend_only_on_earlier_pixels(shape):
    model, x = tiny(shape), torch.rand(2, *shape)
    changed = x.clone()
    changed[:, :, 3, 4] = 1 - changed[:, :, 3, 4]
    moved = (model(changed) - model(x)).abs().amax((0, 1)) > 0
    rows, cols = torch.meshgrid(torch.arange(shape[1]), torch.arange(shape[2]), indexing="ij")
    not_after = (rows < 3) | ((rows == 3) & (cols <= 4))
    assert not moved[not_after].any()
    assert moved[3, 5]  # the next pixel does see it


@pytest.mark.parametrize("channels", [1, 3])
def test_channel_conditionals_multiply_to_the_joint(channels):
    model, x = tiny((channels, 5, 5)), torch.rand(3, channels, 5, 5)
    params = model(x)
    joint = mixture.log_prob(params, x, model.mixtures)  # (N, H, W)
    levels = mixture.to_levels(x)
    t = mixture.to_grid(x)
    for r, c in [(0, 0), (2, 3), (4, 4)]:
        total = torch.zeros(3)
        for k in range(channels):
            lp = mixture.channel_log_probs(params[:, :, r, c], t[:, :, r, c], k, model.mixtures)
            torch.testing.assert_close(lp.logsumexp(1), torch.zeros(3), atol=1e-5, rtol=0)  # normalised
            total += lp.gather(1, levels[:, k, r, c, None])[:, 0]
        torch.testing.assert_close(total, joint[:, r, c], atol=1e-4, rtol=1e-5)


def test_bits_per_dim_of_a_standard_logistic_by_hand():
    model = tiny((1, 4, 4))
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)  # every position: mean 0, log-scale 0, equal weights

    def sigmoid(z):
        return 1 / (1 + math.exp(-z))

    def prob(v):
        t = 2 * v / 255 - 1
        upper = 1.0 if v == 255 else sigmoid(t + 1 / 255)
        lower = 0.0 if v == 0 else sigmoid(t - 1 / 255)
        return upper - lower

    levels = torch.tensor([0, 37, 128, 255] * 4).reshape(1, 1, 4, 4)
    expected = -sum(math.log2(prob(int(v))) for v in levels.flatten()) / 16
    assert model.bits_per_dim(levels.float() / 255).item() == pytest.approx(expected, rel=1e-5)


def test_p_values_follow_the_papers_formula():
    reference = torch.tensor([1.0, 2.0, 3.0, 4.0])  # bits/dim of four training images
    bpd = torch.tensor([0.5, 2.5, 3.0, 5.0])
    # (1 + #{training images at most as likely, i.e. bpd at least the input's}) / (N + 1)
    assert p_values(bpd, reference).tolist() == pytest.approx([5 / 5, 3 / 5, 3 / 5, 1 / 5])


def first_difference_is_a_near_tie(fast, ref, margins):
    """Per image: equal, or the first differing sub-pixel (raster order, channels inner) is a near tie of the
    reference (after it the two paths condition on different pixels). Returns the number of near-tie images."""
    b = fast.shape[0]
    diff = (fast != ref).permute(0, 2, 3, 1).reshape(b, -1)
    margins = margins.permute(0, 2, 3, 1).reshape(b, -1)
    ties = 0
    for i in range(b):
        if diff[i].any():
            j = int(diff[i].nonzero()[0, 0])
            assert margins[i, j] < NEAR_TIE, f"image {i}: sub-pixel {j} differs with margin {margins[i, j]:.3g}"
            ties += 1
    return ties


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 8, 8)])
@pytest.mark.parametrize("threshold", [None, 3.0])
def test_fast_purification_equals_the_reference(shape, threshold):
    model, x = tiny(shape, seed=1), torch.rand(64, *shape)
    fast = purify(model, x, 32, threshold)
    ref, margins = purify_reference(model, x, 32, threshold)
    ties = first_difference_is_a_near_tie(fast, ref, margins)
    print(f"{shape}, threshold {threshold}: {ties} of 64 images differ, each first at a near tie")
    assert (fast != mixture.to_levels(x) / 255).float().mean() > 0.1  # it did purify


def test_fast_purification_is_exact_in_double_precision():
    model = tiny((3, 6, 6), seed=2, dtype=torch.float64)
    x = torch.rand(16, 3, 6, 6, dtype=torch.float64)
    assert torch.equal(purify(model, x, 16), purify_reference(model, x, 16)[0])


def test_purification_stays_within_eps_defend_of_the_quantised_input():
    model, x = tiny((1, 8, 8)), torch.rand(8, 1, 8, 8)
    q = mixture.to_levels(x)
    for eps in (0, 5, 32):
        out = mixture.to_levels(purify(model, x, eps))
        assert (out - q).abs().max() <= eps
    assert torch.equal(purify(model, x, 0), q / 255)


def test_pixel_level_adaptive_keeps_the_likely_sub_pixels():
    model, x = tiny((1, 8, 8)), torch.rand(8, 1, 8, 8)
    q = mixture.to_levels(x)
    kept = mixture.to_levels(purify(model, x, 32, threshold_bits=100.0)) == q  # nothing costs 100 bits
    changed = mixture.to_levels(purify(model, x, 32, threshold_bits=0.0)) != q  # everything costs > 0 bits
    assert kept.all() and changed.float().mean() > 0.5


def test_image_level_adaptive_purifies_only_unlikely_inputs():
    shape = (1, 8, 8)
    model = tiny(shape)
    x = torch.rand(6, *shape)
    bpd = model.bits_per_dim(x).detach()
    order = bpd.argsort()
    d = build_defense("adaptive-pixeldefend")
    d.model, d.eps_defend = model, 32 / 255
    # training likelihoods between the 3rd and 4th most likely inputs: the 3 least likely get p-values 1/(N+1)
    d.reference_bpd = torch.full((99,), float((bpd[order[2]] + bpd[order[3]]) / 2))
    out = d.purify(x)
    for i in order[:3]:
        assert torch.equal(out[i], x[i])  # looks clean (p-value 1): untouched
    suspicious = torch.zeros(6, dtype=torch.bool)
    suspicious[order[3:]] = True
    assert torch.equal(out[suspicious], purify(model, x[suspicious], 32))
    assert d.detect(x, None).tolist() == [bool(v) for v in (bpd > d.reference_bpd[0]).tolist()]


def test_bad_eps_defend_and_foreign_pixelcnns_are_refused(digits):
    for bad in (-0.1, 1.5, "32"):
        with pytest.raises(BenchError, match="eps_defend"):
            eps_levels(bad)
    with pytest.raises(BenchError, match="eps_defend"):
        PixelDefend(eps_defend=2.0)
    meta = {"spec": {"dataset": "mnist5k", "shape": [1, 28, 28]}, "key": "k", "metrics": {"reference_bpd": [1.0]}}
    with pytest.raises(BenchError, match="trained on 'mnist5k'.*not on 'digits'"):
        check_pixelcnn_fits(meta, digits)
    with pytest.raises(BenchError, match="trained on"):
        PixelDefend().use_pixelcnn(tiny((1, 28, 28)), meta, digits)


def test_probabilities_agree_with_log_probabilities():
    model, x = tiny((3, 5, 5)), torch.rand(4, 3, 5, 5)
    params, t = model(x)[:, :, 2, 2], mixture.to_grid(x[:, :, 2, 2])
    lo = torch.tensor([-3, 0, 100, 230])
    for k in range(3):
        p = mixture.channel_probs(params, t, k, model.mixtures, lo, 30)
        logp = mixture.channel_log_probs(params, t, k, model.mixtures, lo, 30)
        valid = (lo[:, None] + torch.arange(30) >= 0) & (lo[:, None] + torch.arange(30) <= 255)
        shown = valid & (p > 1e-30)  # below that, probabilities underflow: choose() ranks those in log space
        assert (logp[valid & ~shown] < -60).all()
        torch.testing.assert_close(p[shown].log(), logp[shown], atol=1e-3, rtol=1e-4)


def test_candidates_deep_in_a_tail_are_ranked_in_log_space():
    # one sharp component at level 10: every candidate around level 200 underflows to probability 0
    m = 1
    params = torch.tensor([[0.0, 10 * 2 / 255 - 1, -7.0]])  # weight logit, mean, log-scale
    t = torch.zeros(1, 1)
    assert mixture.channel_probs(params, t, 0, m, torch.tensor([170]), 65).max() == 0
    from defenses.pixeldefend import SubPixel, choose

    new, margin = choose(SubPixel(params, t, 0, m), torch.tensor([202]), 32, None)
    assert new.item() == 170 and margin.item() > 1  # the candidate nearest the mode, by a wide margin


@pytest.mark.parametrize("channels", [1, 3])
def test_purification_deep_in_a_tail_equals_the_reference(channels):
    # every position: one sharp component at level 10, so that the windows of the bright pixels underflow (ranked in
    # log space) and those of the dark ones do not, in the same batch
    model = tiny((channels, 3, 4))
    m = model.mixtures
    torch.nn.init.zeros_(model.head.weight)
    with torch.no_grad():
        model.head.bias.zero_()
        model.head.bias[m : m + channels * m] = 10 * 2 / 255 - 1  # the means
        model.head.bias[m + channels * m : m + 2 * channels * m] = -7.0  # the log-scales
    x = torch.full((4, channels, 3, 4), 200 / 255)
    x[:2] = 30 / 255
    fast = purify(model, x, 32)
    assert torch.equal(fast, purify_reference(model, x, 32)[0])
    assert (mixture.to_levels(fast[2:]) == 168).all() and (mixture.to_levels(fast[:2]) == 10).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_window_log_probs_on_the_grid_equal_the_exact_conditionals(channels):
    model, eps = tiny((channels, 4, 5)), 3
    x = mixture.to_levels(torch.rand(2, channels, 4, 5)).clamp(eps, 255 - eps).double() / 255
    model = model.double()
    params = model(x)
    offsets = torch.arange(-eps, eps + 1, dtype=x.dtype) / 255
    smooth = mixture.window_log_probs(params, x, offsets, model.mixtures)  # N, C, H, W, K
    levels, t = mixture.to_levels(x), mixture.to_grid(x)
    for r, c, k in [(0, 0, 0), (2, 3, channels - 1), (3, 4, 0)]:
        exact = mixture.channel_log_probs(params[:, :, r, c], t[:, :, r, c], k, model.mixtures,
                                          levels[:, k, r, c] - eps, 2 * eps + 1)
        torch.testing.assert_close(smooth[:, k, r, c], exact, rtol=1e-9, atol=1e-9)


def test_soft_purification_is_a_differentiable_stand_in_for_the_arg_max():
    from defenses.pixeldefend import soft_purify

    model, eps = tiny((1, 6, 6)), 4
    x = (mixture.to_levels(torch.rand(3, 1, 6, 6)).float() / 255).requires_grad_(True)
    soft = soft_purify(model, x, eps)
    assert soft.shape == x.shape and ((soft - x).abs() <= eps / 255 + 1e-6).all()
    (grad,) = torch.autograd.grad(soft.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # the first pixel has no context: at a low temperature it is the real purifier's choice
    sharp = soft_purify(model, x.detach(), eps, temperature=1e-3)
    assert mixture.to_levels(sharp[:, :, 0, 0]).equal(mixture.to_levels(purify(model, x.detach(), eps)[:, :, 0, 0]))
