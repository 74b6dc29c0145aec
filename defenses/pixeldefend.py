"""PixelDefend (Song et al., ICLR 2018, https://arxiv.org/abs/1710.10766): purify an input towards high PixelCNN
likelihood before classifying it.

The paper's Algorithm 1, faithfully: in raster order, for every pixel and every channel (R, G, B), the sub-pixel is set
to the most likely 8-bit value within [x - eps_defend, x + eps_defend] under the PixelCNN *conditioned on the pixels
already purified*. (IBM ART's version conditions every pixel on the unpurified image instead.) The input is first
quantised to 8 bits, the images the PixelCNN describes.

Two adaptive variants choose the purification strength from the PixelCNN's own likelihood:

- ``level="image"`` (the paper's adaptive PixelDefend): an input whose likelihood p-value against the training
  images is at least ``alpha`` looks clean and is left as it is (eps_defend = 0); the others are purified fully.
- ``level="pixel"`` (the paper's released code): only sub-pixels whose cross-entropy under the model, given the
  purified context, exceeds ``threshold_bits`` are changed; the others keep their value (and are context for later ones).

:func:`purify` is the production path (each activation of the network computed once, :mod:`models.pixelcnn_fast`);
:func:`purify_reference` runs the whole network once per sub-pixel, exactly as Algorithm 1 reads, and serves as the
oracle of the tests and the baseline of ``bench perf pixeldefend``.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from benchmark.core.defense import Defense, DefenseContext
from benchmark.core.errors import BenchError
from benchmark.core.options import Option
from benchmark.core.registry import register_defense
from benchmark.training.pixelcnn import PRESETS as PIXELCNN_SIZES
from models import mixture
from models.pixelcnn_fast import IncrementalPixelCNN

EPS_DEFEND = {"mnist-like": 32 / 255, "cifar": 16 / 255}  # the paper's defaults
ADAPTIVE_ALPHA = 0.05
THRESHOLD_BITS = 3.0


def eps_levels(eps_defend: float) -> int:
    if not (isinstance(eps_defend, (int, float)) and 0 <= eps_defend <= 1):
        raise BenchError(f"eps_defend must be a number in [0, 1] (e.g. 32/255 = {32 / 255:.4f}), not {eps_defend!r}")
    return int(round(eps_defend * 255))


class SubPixel:
    """The model's conditional distribution of one sub-pixel given everything before it."""

    def __init__(self, params: torch.Tensor, t: torch.Tensor, channel: int, mixtures: int) -> None:
        self.args = (params, t, channel, mixtures)

    def probs(self, lo: torch.Tensor, count: int) -> torch.Tensor:
        return mixture.channel_probs(*self.args, lo, count)

    def log_probs(self, lo: torch.Tensor, count: int) -> torch.Tensor:
        return mixture.channel_log_probs(*self.args, lo, count)


def choose(dist: SubPixel, levels: torch.Tensor, eps: int, threshold_bits: float | None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The new levels (B,) of one sub-pixel, and the log-ratio of its two best candidates (B,), its margin.

    Candidates are levels - eps .. levels + eps within 0..255; ``levels`` (B,) are the current ones. Ranked by
    probability (fast); where every candidate underflows to probability 0, by log-probability (exact). With
    ``threshold_bits``, sub-pixels whose current level costs at most that many bits are kept.
    """
    count = 2 * eps + 1
    lo = levels - eps
    candidates = lo[:, None] + torch.arange(count, device=levels.device)
    invalid = (candidates < 0) | (candidates >= mixture.LEVELS)
    scores = dist.probs(lo, count).masked_fill(invalid, -1.0)
    underflow = scores.amax(1) <= 0
    if underflow.any():  # far in every component's tail: rank those in log space instead
        sub = SubPixel(*(a[underflow] if torch.is_tensor(a) else a for a in dist.args))
        logs = sub.log_probs(lo[underflow], count).masked_fill(invalid[underflow], float("-inf"))
        # relative to the best candidate: the same order and margins, without the underflow
        scores[underflow] = (logs - logs.amax(1, keepdim=True)).exp().masked_fill(invalid[underflow], -1.0)
    best = scores.argmax(1)  # ties: the first candidate
    if count > 1:
        top = scores.topk(2, dim=1).values
        margin = top[:, 0].log() - top[:, 1].clamp(min=0).log()
    else:
        margin = torch.full(levels.shape, float("inf"), device=levels.device)
    new = lo + best
    if threshold_bits is not None:
        current = dist.log_probs(levels, 1)[:, 0]
        keep = -current / math.log(2) <= threshold_bits
        new = torch.where(keep, levels, new)
        margin = torch.minimum(margin, (current + threshold_bits * math.log(2)).abs())
    return new, margin


class _Window:
    """:func:`choose` for every sub-pixel of one purification (``threshold_bits`` included), fast.

    Per sub-pixel, choose() is a few dozen operations on small tensors, whose cost is PyTorch's dispatch rather than
    arithmetic. Here what does not depend on the sub-pixel is made once: the candidates' interval ends of every window
    (a table indexed by the current level), the 8-bit grid, and buffers (with their views) for every intermediate. The
    probabilities are those of :func:`mixture.channel_probs`, operation for operation, except that the weighted sum
    over the mixture's components is taken in another order (so they agree to rounding); candidates outside 0..255
    get probability exactly 0 (both interval ends infinite), so the best one is valid whenever it is positive. A
    window whose best candidate is not a normal float goes to choose() itself: there the probabilities underflow
    (choose() ranks them in log space) or, subnormal, have lost the precision that tells candidates apart, so that only
    choose()'s own arithmetic picks what the reference picks."""

    def __init__(self, eps: int, batch: int, channels: int, mixtures: int, threshold_bits: float | None,
                 like: torch.Tensor) -> None:
        self.eps, self.channels, self.mixtures, self.threshold_bits = eps, channels, mixtures, threshold_bits
        count = 2 * eps + 1
        # the interval ends of levels -eps .. 255 + eps, as mixture._window_probs computes them; row v of the table:
        # the count + 1 ends of the window around current level v (candidates v - eps .. v + eps)
        ends = torch.arange(-eps, mixture.LEVELS + eps + 1, device=like.device).to(like.dtype) * (2 / 255) - 1
        ends = ends - mixture.HALF_BIN
        ends = ends.masked_fill(ends < -1, float("-inf")).masked_fill(ends > 1, float("inf"))
        self.ends = ends.unfold(0, count + 1, 1)[:, None, :].contiguous()  # (256, 1, count + 1)
        self.grid = mixture.to_grid(torch.arange(mixture.LEVELS, device=like.device).to(like.dtype) / 255)
        # per-level work is (B, M, window): the windows' levels last, so that every operation runs along them
        self.z = like.new_empty(batch, mixtures, count + 1)
        self.below, self.above = torch.empty_like(self.z), torch.empty_like(self.z)
        self.centre, self.from_below, self.from_above = (like.new_empty(batch, mixtures, count) for _ in range(3))
        self.centre_below = torch.empty_like(self.centre, dtype=torch.bool)
        self.ends_of = [(t[..., :-1], t[..., 1:]) for t in (self.z, self.below, self.above)]  # lower, upper ends
        self.tiny = torch.finfo(like.dtype).tiny  # the smallest normal float
        # constants as 0-dim tensors: a Python number is converted to a tensor at every call, as costly as the work
        self.zero, self.min_log_scale = like.new_zeros(()), like.new_full((), mixture.MIN_LOG_SCALE)
        self.t = like.new_empty(channels, batch)  # grid values of the chosen levels, per channel
        self.t_rows = self.t.unbind(0)
        self.t_cells = self.t.view(channels, batch, 1, 1).unbind(0)  # broadcasting against (B, M, 1)

    def pixel(self, params: torch.Tensor, current: list[torch.Tensor], lo: list[torch.Tensor],
              out: list[torch.Tensor]) -> torch.Tensor:
        """The new levels of one pixel into ``out``, per channel (B,) like ``current`` and ``lo`` (current - eps),
        from its mixture parameters (B, P); returns the pixel on the model's grid, (B, C).

        Channel k's components are those of mixture._channel_components, the parameters taken apart once per pixel
        (each (B, M, 1)): means shifted by the earlier channels' values, and weights times the likelihood of those
        values (the posterior), whose sum over the earlier channels grows as they are chosen."""
        c, t = self.channels, self.t.t()
        rows = params.view(params.shape[0], -1, self.mixtures, 1).unbind(1)  # weights, C means, C log-scales, coeffs
        log_w = torch.log_softmax(rows[0], 1)
        coeffs = [torch.tanh(a) for a in rows[1 + 2 * c :]]
        earlier = None  # log-likelihood of the earlier channels' values, per component
        for k in range(c):
            mean = rows[1 + k]
            for prev in range(k):
                mean = mean + coeffs[k * (k - 1) // 2 + prev] * self.t_cells[prev]
            log_scale = torch.maximum(rows[1 + c + k], self.min_log_scale)
            posterior = log_w if earlier is None else log_w + earlier
            self._level(params, t, k, (posterior, mean, log_scale), current[k], lo[k], out[k])
            torch.index_select(self.grid, 0, out[k], out=self.t_rows[k])
            if k < c - 1:
                here = mixture._log_bin_prob(self.t_cells[k], mean, log_scale)
                earlier = here if earlier is None else earlier + here
        return t

    def _level(self, params: torch.Tensor, t: torch.Tensor, k: int,
               components: tuple[torch.Tensor, torch.Tensor, torch.Tensor], current: torch.Tensor, lo: torch.Tensor,
               out: torch.Tensor) -> None:
        """Channel k's new levels into ``out`` (B,), from its components' log weights, means and log-scales."""
        log_w, mean, log_scale = components
        weights = torch.softmax(log_w, 1)
        (z_lo, z_hi), (below_lo, below_hi), (above_lo, above_hi) = self.ends_of
        z = torch.sub(self.ends.index_select(0, current), mean, out=self.z).mul_(torch.exp(-log_scale))
        torch.sigmoid(z, out=self.below)
        torch.sigmoid(torch.neg(z, out=self.above), out=self.above)
        # each interval's probability from the side of the mean where its difference does not cancel
        torch.lt(torch.add(z_hi, z_lo, out=self.centre), self.zero, out=self.centre_below)
        torch.sub(below_hi, below_lo, out=self.from_below)
        torch.sub(above_lo, above_hi, out=self.from_above)
        per_level = torch.where(self.centre_below, self.from_below, self.from_above, out=self.centre)
        best, index = per_level.mul_(weights).sum(1).max(1)  # ties: the first, as choose()'s argmax
        if best.min().item() < self.tiny:
            out.copy_(choose(SubPixel(params, t, k, self.mixtures), current, self.eps, self.threshold_bits)[0])
            return
        torch.add(index, lo, out=out)
        if self.threshold_bits is not None:  # as in choose()
            log_p = mixture.channel_log_probs(params, t, k, self.mixtures, current, 1)[:, 0]
            torch.where(-log_p / math.log(2) <= self.threshold_bits, current, out, out=out)


@torch.no_grad()
def purify(model: nn.Module, x: torch.Tensor, eps: int, threshold_bits: float | None = None) -> torch.Tensor:
    """Algorithm 1 on a batch x (B, C, H, W) in [0, 1]; ``eps`` in 8-bit levels. Each activation computed once."""
    b, c, h, w = x.shape
    inc = IncrementalPixelCNN(model, x)
    window = _Window(eps, b, c, model.mixtures, threshold_bits, next(model.parameters()))
    # levels (H, W * C, B): per row, the sub-pixels' (B,) views in raster order, channels inner
    current = mixture.to_levels(x).permute(2, 3, 1, 0).reshape(h, w * c, b)
    lo, new = current - eps, torch.empty_like(current)
    for r in range(h):
        inc.begin_row(r)
        cur_row, lo_row, new_row = current[r].unbind(0), lo[r].unbind(0), new[r].unbind(0)
        for col in range(w):
            sub = slice(col * c, (col + 1) * c)
            params = inc.params_at(r, col)
            inc.set_grid(r, col, window.pixel(params, cur_row[sub], lo_row[sub], new_row[sub]))
    return new.view(h, w, c, b).permute(3, 2, 0, 1).to(x.dtype) / 255


def soft_purify(model: nn.Module, x: torch.Tensor, eps: int, temperature: float = 1.0) -> torch.Tensor:
    """A differentiable stand-in for :func:`purify`, for BPDA: every sub-pixel becomes the softmax-weighted mean of
    the values in its window x - eps .. x + eps (8-bit steps, clipped to [0, 1]), weighted by the PixelCNN's
    probabilities given the input itself (one network pass, not the greedy raster order). As temperature -> 0 it
    picks the window's most likely value, as the real purifier does when the pixels before are already purified.

    Unlike the identity, its gradient knows that a change inside a confident window is undone and that the PixelCNN's
    context moves the window's mode."""
    offsets = torch.arange(-eps, eps + 1, device=x.device, dtype=x.dtype) / 255
    values = x[..., None] + offsets  # N, C, H, W, K
    params = model.forward_network(torch.cat([x * 2 - 1, torch.ones_like(x[:, :1])], 1))  # unquantised: gradients
    logp = mixture.window_log_probs(params, x, offsets, model.mixtures)
    logp = logp.masked_fill((values < 0) | (values > 1), float("-inf"))
    weights = torch.softmax(logp / temperature, -1)
    return (weights * values).sum(-1).clamp(0, 1)


@torch.no_grad()
def purify_reference(model: nn.Module, x: torch.Tensor, eps: int, threshold_bits: float | None = None,
                     rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1 as written: one full forward pass per sub-pixel. Returns the purified images and, per sub-pixel,
    the margin between the two best candidates (B, C, H, W), so that comparisons can tell near ties apart.
    ``rows`` stops after that many rows (the benchmark times a prefix; later rows are left as they were)."""
    b, c, h, w = x.shape
    levels = mixture.to_levels(x)
    margins = torch.zeros(b, c, h, w, dtype=x.dtype, device=x.device)
    for r in range(h if rows is None else rows):
        for col in range(w):
            for k in range(c):
                params = model(levels.to(x.dtype) / 255)[:, :, r, col]
                t = mixture.to_grid(levels[:, :, r, col].to(x.dtype) / 255)

                dist = SubPixel(params, t, k, model.mixtures)
                new, margins[:, k, r, col] = choose(dist, levels[:, k, r, col], eps, threshold_bits)
                levels[:, k, r, col] = new
    return levels.to(x.dtype) / 255, margins


@register_defense("pixeldefend")
class PixelDefend(Defense):
    summary = "PixelCNN purification, greedy in raster order within eps_defend (Song et al. 2018)"
    purifies = True
    differentiable = False  # arg max over pixel values: adaptive attacks need BPDA
    detects = True
    OPTIONS = (
        Option("eps_defend", float, None, "how far a sub-pixel may move, in [0, 1] pixel space; none: the paper's "
               "32/255 for MNIST-like data, 16/255 for CIFAR-10", low=0, high=1, none_ok=True),
        Option("adaptive", str, None, "none: purify every input; image: only inputs whose likelihood p-value is "
               "below alpha (the paper); pixel: only sub-pixels costing over threshold_bits (released code)",
               choices=("image", "pixel"), none_ok=True),
        Option("alpha", float, ADAPTIVE_ALPHA, "p-value below which an input is purified (adaptive=image) and "
               "flagged by the detector", low=0.001, high=0.999),
        Option("threshold_bits", float, THRESHOLD_BITS, "cost in bits above which a sub-pixel is changed "
               "(adaptive=pixel only; the released code: 3)", low=0),
        Option("pixelcnn", str, "small", "the PixelCNN preset that purifies (tiny trains in seconds, for tests)",
               choices=tuple(PIXELCNN_SIZES)),
        Option("batch_size", int, 256, "images purified at once: changes speed and memory only, not results "
               "(larger batches amortise the per-position work; `bench perf pixeldefend`)", low=1,
               changes_results=False),
    )

    def __init__(self, eps_defend: float | None = None, adaptive: str | None = None, alpha: float = ADAPTIVE_ALPHA,
                 threshold_bits: float = THRESHOLD_BITS, pixelcnn: str = "small", batch_size: int = 256) -> None:
        if eps_defend is not None:
            eps_levels(eps_defend)
        if adaptive not in (None, "image", "pixel"):
            raise BenchError(f"adaptive must be None, 'image' or 'pixel', not {adaptive!r}")
        if not 0 < alpha < 1:
            raise BenchError(f"alpha (the p-value below which an input is purified) must be in (0, 1), not {alpha!r}")
        self.eps_defend, self.adaptive, self.alpha, self.threshold_bits = eps_defend, adaptive, alpha, threshold_bits
        self.size, self.batch_size = pixelcnn, batch_size
        self.model: nn.Module | None = None
        self.reference_bpd: torch.Tensor | None = None
        self.pixelcnn_key: str | None = None

    def prepare(self, ctx: DefenseContext) -> None:
        from benchmark.training.pixelcnn import get_pixelcnn

        model, meta = get_pixelcnn(ctx.dataset, ctx.device, ctx.store, seed=0, size=self.size)
        self.use_pixelcnn(model, meta, ctx.dataset)

    def use_pixelcnn(self, model: nn.Module, meta: dict[str, Any], dataset: Any) -> None:
        """Defend with this PixelCNN (refused when trained on another data set or shape)."""
        from benchmark.training.pixelcnn import check_pixelcnn_fits

        check_pixelcnn_fits(meta, dataset)
        if self.eps_defend is None:
            self.eps_defend = EPS_DEFEND[dataset.family]
        self.model, self.pixelcnn_key = model, meta["key"]
        self.reference_bpd = torch.tensor(meta["metrics"]["reference_bpd"])

    def _model(self) -> nn.Module:
        if self.model is None:
            raise BenchError("PixelDefend has no PixelCNN yet: prepare() (or use_pixelcnn()) loads one")
        return self.model

    def p_values(self, x: torch.Tensor) -> torch.Tensor:
        from benchmark.training.pixelcnn import p_values

        assert self.reference_bpd is not None
        return p_values(self._model().bits_per_dim(x).cpu(), self.reference_bpd)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        model = self._model()
        eps = eps_levels(self.eps_defend)
        threshold = self.threshold_bits if self.adaptive == "pixel" else None
        out = []
        for i in range(0, len(x), self.batch_size):
            batch = x[i : i + self.batch_size]
            if self.adaptive == "image":
                out.append(self._purify_suspicious(model, batch, eps))
            else:
                out.append(purify(model, batch, eps, threshold))
        return torch.cat(out)

    def _purify_suspicious(self, model: nn.Module, x: torch.Tensor, eps: int) -> torch.Tensor:
        suspicious = (self.p_values(x) < self.alpha).to(x.device)
        out = x.clone()
        if suspicious.any():
            out[suspicious] = purify(model, x[suspicious], eps)
        return out

    def soft_surrogate(self, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """:func:`soft_purify` with this defense's PixelCNN and eps_defend: a BPDA approximation that `bench diagnose
        --bpda soft` tries against the identity. Not declared as ``bpda_surrogate``: it was not the stronger one."""
        return soft_purify(self._model(), x, eps_levels(self.eps_defend), temperature)

    @torch.no_grad()
    def detect(self, x: torch.Tensor, classifier: nn.Module) -> torch.Tensor:
        """The paper's test: flagged when the likelihood p-value is below alpha."""
        return (self.p_values(x) < self.alpha).to(x.device)

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"eps_defend": self.eps_defend, "pixelcnn": self.size, "pixelcnn_key": self.pixelcnn_key,
                                "quantised": "8-bit", "alpha": self.alpha}
        if self.adaptive:
            opts["adaptive"] = self.adaptive
            if self.adaptive == "pixel":
                opts["threshold_bits"] = self.threshold_bits
        return opts


@register_defense("adaptive-pixeldefend")
class AdaptivePixelDefend(PixelDefend):
    summary = "PixelDefend only on inputs whose PixelCNN likelihood p-value is below alpha (the paper's adaptive)"
    ALIAS_OF = ("pixeldefend", {"adaptive": "image"})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(adaptive=kwargs.pop("adaptive", "image"), **kwargs)


@register_defense("adaptive-pixeldefend-pixel")
class PixelAdaptivePixelDefend(PixelDefend):
    summary = "PixelDefend changing only sub-pixels that cost more than 3 bits (the paper's released code)"
    ALIAS_OF = ("pixeldefend", {"adaptive": "pixel"})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(adaptive=kwargs.pop("adaptive", "pixel"), **kwargs)
