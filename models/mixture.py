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
    means, log_scales, coeffs = rest[..., :c, :], rest[..., c : 2 * c, :], torch.tanh(rest[..., 2 * c :, :])
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


def _log_bin_prob(t: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(value t) under discretised logistics (broadcasting); t on the grid 2v/255 - 1."""
    inv_s = torch.exp(-log_scale)
    a = (t - mean + HALF_BIN) * inv_s
    b = (t - mean - HALF_BIN) * inv_s
    middle = F.logsigmoid(a) + F.logsigmoid(-b) + torch.log(-torch.expm1(-2 * HALF_BIN * inv_s))
    low = F.logsigmoid(a)  # v = 0: the interval reaches -inf
    high = F.logsigmoid(-b)  # v = 255: the interval reaches +inf
    return torch.where(t < -1 + HALF_BIN, low, torch.where(t > 1 - HALF_BIN, high, middle))


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


def channel_log_probs(params: torch.Tensor, t: torch.Tensor, channel: int, mixtures: int,
                      values: torch.Tensor | None = None) -> torch.Tensor:
    """Log-probabilities of candidate values of one channel at one position, given the earlier channels there.

    ``params`` (B, P) and ``t`` (B, C) on the [-1, 1] grid (only channels before ``channel`` are read); ``values`` (B, K)
    integer levels 0..255 to score, by default all 256 (the paper's 256-way softmax). The conditional of a later
    channel weights each component by how well it explained the earlier channels (its posterior): the exact
    conditional of the joint mixture. The result is normalised over all 256 levels whatever ``values`` holds.
    """
    c = t.shape[-1]
    log_w, means, log_scales, coeffs = split_params(params, c, mixtures)
    means = _conditional_means(means, coeffs, t)
    if channel:
        earlier = _log_bin_prob(t[..., :channel, None], means[..., :channel, :], log_scales[..., :channel, :])
        log_w = log_w + earlier.sum(-2)
    log_w = log_w - torch.logsumexp(log_w, -1, keepdim=True)
    if values is None:
        values = torch.arange(LEVELS, device=params.device).expand(params.shape[0], LEVELS)
    grid = values.to(params.dtype) * (2 / 255) - 1
    per_value = _log_bin_prob(grid[..., None], means[..., None, channel, :], log_scales[..., None, channel, :])
    return torch.logsumexp(log_w[..., None, :] + per_value, -1)
