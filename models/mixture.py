"""The discretised mixture of logistics of PixelCNN++ (Salimans et al. 2017, https://arxiv.org/abs/1701.05517).

A network emits, per position, ``M`` mixture weights and, per channel and component, a mean and a log-scale; for 3
channels also 3 coefficients per component that make the mean of G depend on R and the mean of B on R and G (sub-pixels
in R, G, B order). A pixel value ``v`` in 0..255 is the interval ``[t - 1/255, t + 1/255]`` around ``t = 2v/255 - 1``,
with the end intervals open to -inf and +inf.

Everything here is computed in log space with an exact, stable identity instead of PixelCNN++'s approximations:
``log(sigmoid(a) - sigmoid(b)) = logsigmoid(a) + logsigmoid(-b) + log(-expm1(b - a))`` for ``a > b``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LEVELS = 256
HALF_BIN = 1.0 / 255.0
MIN_LOG_SCALE = -7.0


def num_params(channels: int, mixtures: int) -> int:
    """Parameters per position: weights, means and log-scales per channel, and the channel coefficients."""
    coeffs = channels * (channels - 1) // 2
    return mixtures * (1 + 2 * channels + coeffs)


def split_params(params: torch.Tensor, channels: int, mixtures: int) -> tuple[torch.Tensor, ...]:
    """(..., P) -> log weights (..., M), means (..., C, M), log-scales (..., C, M), coefficients (..., K, M)."""
    m, c = mixtures, channels
    logit = params[..., :m]
    rest = params[..., m:].unflatten(-1, (-1, m))
    means, log_scales, coeffs = rest[..., :c, :], rest[..., c : 2 * c, :], rest[..., 2 * c :, :]
    if c > 1:
        coeffs = torch.tanh(coeffs)
    return F.log_softmax(logit, -1), means, log_scales.clamp(min=MIN_LOG_SCALE), coeffs


def _conditional_means(means: torch.Tensor, coeffs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Means (..., C, M) shifted by the coefficients times the values of the earlier channels, t (..., C) in [-1, 1]."""
    c = means.shape[-2]
    if c == 1:
        return means
    out = [means[..., 0, :]]
    k = 0
    for ch in range(1, c):
        mu = means[..., ch, :]
        for prev in range(ch):
            mu = mu + coeffs[..., k, :] * t[..., prev, None]
            k += 1
        out.append(mu)
    return torch.stack(out, -2)


def _softplus_neg_abs(z: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(-|z|)), shared by logsigmoid(z) and logsigmoid(-z). (torch's logsigmoid and log1p are not
    vectorised on CPU and cost ten times more; the absolute error of this form is below 1e-6.)"""
    return torch.log(1 + torch.exp(-z.abs()))


def _log_bin_prob(t: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(value t) under discretised logistics (broadcasting); t on the grid 2v/255 - 1."""
    inv_s = torch.exp(-log_scale)
    a = (t - mean + HALF_BIN) * inv_s
    b = (t - mean - HALF_BIN) * inv_s
    log_sig_a = a.clamp(max=0) - _softplus_neg_abs(a)  # log sigmoid(a): the interval's upper end
    log_sig_neg_b = (-b).clamp(max=0) - _softplus_neg_abs(b)  # log(1 - sigmoid(b)): its lower end
    middle = log_sig_a + log_sig_neg_b + _log_width(inv_s)
    return torch.where(t < -1 + HALF_BIN, log_sig_a, torch.where(t > 1 - HALF_BIN, log_sig_neg_b, middle))


def _log_width(inv_s: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(b - a)) of an interior interval: it depends on the scale only."""
    return torch.log(-torch.expm1(-2 * HALF_BIN * inv_s))


def _log_window_probs(lo: torch.Tensor, count: int, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(v) for the consecutive levels v = lo .. lo + count - 1 (lo (B,), mean and log_scale (B, M)), from the
    count + 1 interval ends they share: (B, count, M). Levels outside 0..255 get meaningless values (callers mask)."""
    inv_s = torch.exp(-log_scale)[:, None, :]
    ends = (lo[:, None] + torch.arange(count + 1, device=lo.device)).to(mean.dtype) * (2 / 255) - 1 - HALF_BIN
    z = (ends[..., None] - mean[:, None, :]) * inv_s  # (B, count + 1, M)
    soft = _softplus_neg_abs(z)
    log_sig = z.clamp(max=0) - soft
    log_sig_neg = (-z).clamp(max=0) - soft
    upper, lower = log_sig[:, 1:], log_sig_neg[:, :-1]
    middle = upper + lower + _log_width(inv_s)
    levels = (lo[:, None] + torch.arange(count, device=lo.device))[..., None]
    return torch.where(levels <= 0, upper, torch.where(levels >= LEVELS - 1, lower, middle))


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images to integer levels 0..255 (the 8-bit images the model describes)."""
    return torch.round(x * 255).long()


def to_grid(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images to the model's scale [-1, 1], quantised to 8 bits."""
    return torch.round(x * 255) * (2 / 255) - 1


def log_prob(params: torch.Tensor, x: torch.Tensor, mixtures: int) -> torch.Tensor:
    """Per-position log-likelihood (nats) of 8-bit images x (N, C, H, W) in [0, 1]; params (N, P, H, W) -> (N, H, W)."""
    c = x.shape[1]
    t = to_grid(x).permute(0, 2, 3, 1)  # N, H, W, C
    log_w, means, log_scales, coeffs = split_params(params.permute(0, 2, 3, 1), c, mixtures)
    means = _conditional_means(means, coeffs, t)
    per_channel = _log_bin_prob(t[..., None], means, log_scales)  # N, H, W, C, M
    return torch.logsumexp(log_w + per_channel.sum(-2), -1)


def _window_probs(lo: torch.Tensor, count: int, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """P(v) per component for the consecutive levels v = lo .. lo + count - 1: (B, count, M), from sigmoids of the
    count + 1 interval ends they share. Each difference is taken on the side of the component's mean where it does not
    cancel (sigmoid(a) - sigmoid(b) below the mean, sigmoid(-b) - sigmoid(-a) above), so it keeps its relative
    precision until it underflows (|z| > ~87, far in a tail); the open end intervals of levels 0 and 255 come from
    infinite ends, which sigmoid maps exactly."""
    ends = (lo[:, None] + torch.arange(count + 1, device=lo.device)).to(mean.dtype) * (2 / 255) - 1 - HALF_BIN
    ends = ends.masked_fill(ends < -1, float("-inf")).masked_fill(ends > 1, float("inf"))
    z = (ends[..., None] - mean[:, None, :]) * torch.exp(-log_scale)[:, None, :]  # (B, count + 1, M)
    below = torch.sigmoid(z)
    above = torch.sigmoid(-z)
    centre = z[:, 1:] + z[:, :-1]  # the sign of the interval's midpoint relative to the mean
    return torch.where(centre < 0, below[:, 1:] - below[:, :-1], above[:, :-1] - above[:, 1:])


def _channel_components(params: torch.Tensor, t: torch.Tensor, channel: int, mixtures: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unnormalised log weights (B, M) of the components given the earlier channels of the position (their
    posterior), and the components' means and log-scales (B, M) for ``channel``."""
    log_w, means, log_scales, coeffs = split_params(params, t.shape[-1], mixtures)
    means = _conditional_means(means, coeffs, t)
    if channel:
        earlier = _log_bin_prob(t[..., :channel, None], means[..., :channel, :], log_scales[..., :channel, :])
        log_w = log_w + earlier.sum(-2)
    return log_w, means[..., channel, :], log_scales[..., channel, :]


def channel_probs(params: torch.Tensor, t: torch.Tensor, channel: int, mixtures: int, lo: torch.Tensor,
                  count: int) -> torch.Tensor:
    """Probabilities of the levels lo .. lo + count - 1 of one channel at one position, given the earlier channels
    of that position: (B, count), the fast path of :func:`channel_log_probs` (same arguments). Values that underflow
    are 0: callers needing a ranking among them fall back to :func:`channel_log_probs`."""
    log_w, mean, log_scale = _channel_components(params, t, channel, mixtures)
    weights = torch.softmax(log_w, -1)
    per_level = _window_probs(lo, count, mean, log_scale)
    return torch.matmul(per_level, weights[..., None])[..., 0]


def channel_log_probs(params: torch.Tensor, t: torch.Tensor, channel: int, mixtures: int,
                      lo: torch.Tensor | None = None, count: int = LEVELS) -> torch.Tensor:
    """Log-probabilities of the levels lo .. lo + count - 1 of one channel at one position, given the earlier channels
    of that position: (B, count), normalised over the 256 levels (levels outside 0..255 are meaningless: mask them).

    ``params`` (B, P) and ``t`` (B, C) on the [-1, 1] grid (only channels before ``channel`` are read). By default all
    256 levels: the paper's 256-way softmax. The conditional of a later channel weights each component by how well it
    explained the earlier channels (its posterior): the exact conditional of the joint mixture.
    """
    log_w, mean, log_scale = _channel_components(params, t, channel, mixtures)
    log_w = log_w - torch.logsumexp(log_w, -1, keepdim=True)
    if lo is None:
        lo = torch.zeros(params.shape[0], dtype=torch.long, device=params.device)
    per_level = _log_window_probs(lo, count, mean, log_scale)
    joint = log_w[:, None, :] + per_level
    top = joint.amax(-1, keepdim=True)  # logsumexp by hand: torch's is several times slower on these small tensors
    return (joint - top).exp().sum(-1).log() + top[..., 0]


def window_log_probs(params: torch.Tensor, x: torch.Tensor, offsets: torch.Tensor, mixtures: int) -> torch.Tensor:
    """log P of the values x + offsets of every sub-pixel, each channel given the earlier channels of its position
    at their values in x: (N, C, H, W, K) for x (N, C, H, W) in [0, 1] and offsets (K,) in [0, 1] units.

    Differentiable in x and params, and continuous in x (the values need not lie on the 8-bit grid): the smooth view
    of PixelDefend's window that an adaptive attacker differentiates. Values outside [0, 1] are meaningless (mask them).
    """
    c = x.shape[1]
    t = x.permute(0, 2, 3, 1) * 2 - 1  # N, H, W, C
    log_w, means, log_scales, coeffs = split_params(params.permute(0, 2, 3, 1), c, mixtures)
    means = _conditional_means(means, coeffs, t)  # N, H, W, C, M
    candidates = (t[..., None] + 2 * offsets)[..., None]  # N, H, W, C, K, 1
    per_value = _log_bin_prob(candidates, means[..., None, :], log_scales[..., None, :])  # N, H, W, C, K, M
    own = _log_bin_prob(t[..., None], means, log_scales)  # N, H, W, C, M: each channel's own value
    earlier = torch.cumsum(own, -2) - own  # the posterior weight of each component given the earlier channels
    log_w = log_w[..., None, :] + earlier
    log_w = log_w - torch.logsumexp(log_w, -1, keepdim=True)
    return torch.logsumexp(log_w[..., None, :] + per_value, -1).permute(0, 3, 1, 2, 4)
