"""Evaluate a :class:`~models.pixelcnn.PixelCNN` one position at a time while its input is being rewritten.

PixelDefend changes pixel (r, c) from the network's output at (r, c), which depends on the pixels already changed.
Recomputing the whole network per sub-pixel (the reference) costs H*W*C forward passes. Here every activation is
computed once, when its inputs are final (the idea of Ramachandran et al. 2017, "Fast generation for convolutional
autoregressive models", https://arxiv.org/abs/1704.06001):

- ``begin_row(r)``: everything that depends on rows < r only, for the whole row at once: the up stream of row r, and
  for each up-left convolution the part of its sum that reads row r-1 (and the 1x1 view of the up stream);
- ``params_at(r, c)``: the rest of the up-left stream at (r, c) (the taps on row r: (r, c-1) and (r, c)) and the head;
- ``set_pixel(r, c, x)`` (or ``set_grid``): writes the final value of pixel (r, c).

Call order per row: ``begin_row(r)``, then for c = 0..W-1 ``params_at(r, c)`` followed by ``set_pixel(r, c, ...)``.

Up-left activations of a row live in (B, W + 1, F) buffers (a zero column in front is the convolutions' left padding),
so the two taps of a row, (r, c-1) and (r, c), are one contiguous (B, 2F) view and each convolution at a position is a
single matrix product. Per position that is a few dozen small operations on (B, F) tensors, each costing more in
PyTorch's dispatch than in arithmetic: so the per-position views are made once (Python indexing costs as much as an
operation) and every intermediate is written into a buffer allocated once. The floating-point sums are grouped
differently from the full pass, so the result agrees with it to rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import mixture
from .pixelcnn import GatedResidual, PixelCNN, ShiftedConv, elu


class _Elu:
    """out = elu(x) into a given buffer, rounded as :func:`models.pixelcnn.elu`: (exp(min(x, 0)) - 1) + max(x, 0).

    Its constants are 0-dim tensors: a Python number is converted to a tensor at every call, which here costs as much
    as the arithmetic."""

    def __init__(self, like: torch.Tensor, b: int, f: int) -> None:
        self.tmp, self.zero, self.one = like.new_empty(b, f), like.new_zeros(()), like.new_ones(())

    def __call__(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        torch.minimum(x, self.zero, out=self.tmp)
        torch.exp(self.tmp, out=self.tmp)
        self.tmp.sub_(self.one)
        torch.maximum(x, self.zero, out=out)
        return out.add_(self.tmp)


def _row_conv(conv: ShiftedConv, rows: torch.Tensor) -> torch.Tensor:
    """A shifted convolution along one output row, from its kh input rows already padded at the sides: (B, Cout, W)."""
    return F.conv2d(rows, conv.conv.weight, conv.conv.bias)[:, :, 0, :]


def _pairs(rows: torch.Tensor) -> torch.Tensor:
    """rows (B, W + 1, F) -> (B, W, 2F): at c, the columns (c, c + 1), a view (the pairs overlap; a pair's row stride
    stays that of rows, so that it is a matrix BLAS takes as it is)."""
    b, w1, f = rows.shape
    return rows.view(b, w1 * f).unfold(1, 2 * f, f)


class _LeftConv:
    """A down-right-shifted 2x2 convolution split into its row-above taps (evaluated per row) and its own-row taps
    (one matrix product per position); both as (2 * Cin, Cout) matrices matching a (B, 2, Cin) view of two columns."""

    def __init__(self, conv: ShiftedConv) -> None:
        w = conv.conv.weight  # (Cout, Cin, 2, 2): [row above | own row] x [column c-1 | column c]
        self.above, self.own = (w[:, :, i, :].permute(2, 1, 0).reshape(-1, w.shape[0]) for i in (0, 1))
        self.bias = conv.conv.bias


class _LeftBlock:
    """Buffers and weights of one up-left gated residual block."""

    def __init__(self, block: GatedResidual, b: int, f: int, w: int, like: torch.Tensor) -> None:
        self.conv_in, self.conv_out = _LeftConv(block.conv_in), _LeftConv(block.conv_out)
        self.aux_w = block.aux.weight.flatten(1).t()
        self.in_bias = block.aux.bias + block.conv_in.conv.bias  # the hidden layer's two biases
        # elu of the block's input and of its hidden layer; rows alternate between the two (index r % 2)
        self.x, self.h = like.new_zeros(2, b, w + 1, f), like.new_zeros(2, b, w + 1, f)
        # the parts of the two convolutions' sums that begin_row computes, per column
        self.in_part, self.out_part = like.new_empty(b, w, f), like.new_empty(b, w, 2 * f)
        # per row parity and column: where elu(input) and elu(hidden) go, their two taps, the begin_row parts
        self.columns = [list(zip(self.x[p][:, 1:].unbind(1), _pairs(self.x[p]).unbind(1), self.in_part.unbind(1),
                                 self.h[p][:, 1:].unbind(1), _pairs(self.h[p]).unbind(1), self.out_part.unbind(1)))
                        for p in (0, 1)]
        self.hidden, self.gates, self.sigmoid, self.out = (like.new_empty(b, n * f) for n in (1, 2, 1, 1))
        self.gate_a, self.gate_b = self.gates.chunk(2, 1)

    def begin_row(self, r: int, up_elu: torch.Tensor) -> None:
        """up_elu (B, W, F): elu of the up stream that this block reads through its 1x1 convolution."""
        prev = (r - 1) % 2
        b, w, f = up_elu.shape
        # row-above taps as matrix products over (B * W) rows (faster here than a 1x2 convolution)
        aux = torch.addmm(self.in_bias, up_elu.reshape(b * w, f), self.aux_w)
        torch.addmm(aux, _pairs(self.x[prev]).reshape(b * w, 2 * f), self.conv_in.above,
                    out=self.in_part.view(b * w, f))
        torch.addmm(self.conv_out.bias, _pairs(self.h[prev]).reshape(b * w, 2 * f), self.conv_out.above,
                    out=self.out_part.view(b * w, 2 * f))

    def at(self, ul: torch.Tensor, r: int, c: int, elu_into: _Elu) -> torch.Tensor:
        """The block's output at (r, c) from its input ul (B, F) there; a buffer that the next call overwrites."""
        x_at, x_taps, in_part, h_at, h_taps, out_part = self.columns[r % 2][c]
        elu_into(ul, x_at)
        torch.addmm(in_part, x_taps, self.conv_in.own, out=self.hidden)
        elu_into(self.hidden, h_at)
        torch.addmm(out_part, h_taps, self.conv_out.own, out=self.gates)
        torch.sigmoid(self.gate_b, out=self.sigmoid)
        return torch.addcmul(ul, self.gate_a, self.sigmoid, out=self.out)


class IncrementalPixelCNN:
    """Incremental evaluation of ``model`` (in eval mode) on a batch whose pixels become final in raster order."""

    @torch.no_grad()
    def __init__(self, model: PixelCNN, x: torch.Tensor) -> None:
        self.model = model
        b, c, h, w = x.shape
        f = model.filters
        like = next(model.parameters())
        self.b, self.w = b, w
        # the input (model grid + ones channel), channels last so that a pixel is one (B, C + 1) matrix, with the up
        # stream's padding: one row on top, a column each side. The ones are set now: a pixel is read once final.
        self.image = like.new_zeros(b, h + 1, w + 2, c + 1)
        self.image[:, 1:, 1:-1, -1] = 1
        self.pixels = [row[:, 1:-1, :-1].unbind(1) for row in self.image[:, 1:].unbind(1)]  # [r][c]: (B, C)
        # up stream: elu of each block's input and hidden layer, previous and current row, padded at the sides
        # channels last: the row convolutions run about twice as fast on it, and their outputs come out as (B, W, F)
        self.up_x, self.up_h = ([torch.empty(b, f, 2, w + 2, dtype=like.dtype, device=like.device,
                                             memory_format=torch.channels_last).zero_() for _ in model.u_blocks]
                                for _ in range(2))
        self.left = [_LeftBlock(blk, b, f, w, like) for blk in model.ul_blocks]
        # the down-right-shifted 2x1 input convolution: its row-above tap and its own-row tap
        wl = model.ul_init_left.conv.weight  # (F, C + 1, 2, 1)
        self.init_left_above, self.init_left_own = wl[:, :, 0, 0].t(), wl[:, :, 1, 0].t()
        self.head_w, self.head_b = model.head.weight.flatten(1).t(), model.head.bias
        self.init_part = like.new_empty(b, w, f)
        self.init_columns = self.init_part.unbind(1)
        self.own_pixels: tuple[torch.Tensor, ...] = ()
        self.ul, self.ul_elu = like.new_empty(b, f), like.new_empty(b, f)
        self.elu_into = _Elu(like, b, f)

    @torch.no_grad()
    def begin_row(self, r: int) -> None:
        """Everything that depends on rows < r only: needs the final pixels of rows < r."""
        m = self.model
        image = self.image.permute(0, 3, 1, 2)  # NCHW view; padded row r + 1 is image row r
        # u(r) = u_init(r-1) (the down shift), which reads image rows r-2 and r-1
        u = _row_conv(m.u_init, image[:, :, r - 1 : r + 1]) if r > 0 else self.image.new_zeros(
            self.b, m.filters, self.w)
        up_elu = []
        for i, blk in enumerate(m.u_blocks):
            u = self._up_block(blk, self.up_x[i], self.up_h[i], u)
            up_elu.append(elu(u).permute(0, 2, 1))
        # the up-left stream's input at (r, c): ul_init_up(r-1, c) + ul_init_left(r, c-1); the latter's row-above tap
        # reads image (r-1, c-1), its own-row tap image (r, c-1) (added per position)
        above = self.image[:, r]  # (B, W + 2, C + 1), image row r-1 with side padding
        init = torch.addmm(m.ul_init_left.conv.bias, above[:, :-2].reshape(self.b * self.w, -1),
                           self.init_left_above).view(self.b, self.w, -1)
        init[:, 0] = 0  # column 0: the right shift brings in zeros, bias included
        if r > 0:
            init = init + _row_conv(m.ul_init_up, image[:, :, r : r + 1]).permute(0, 2, 1)
        self.init_part.copy_(init)
        # the own-row tap of column c reads padded column c: the left padding for c = 0, which adds 0
        self.own_pixels = self.image[:, r + 1].unbind(1)
        for block, ue in zip(self.left, up_elu):
            block.begin_row(r, ue)

    def _up_block(self, blk: GatedResidual, x_buf: torch.Tensor, h_buf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """One up-stream block on one row; its buffers hold the previous row (index 0) and this row (index 1)."""
        x_buf[:, :, 0] = x_buf[:, :, 1]
        x_buf[:, :, 1, 1:-1] = elu(u)
        hidden = _row_conv(blk.conv_in, x_buf)
        h_buf[:, :, 0] = h_buf[:, :, 1]
        h_buf[:, :, 1, 1:-1] = elu(hidden)
        gate_a, gate_b = _row_conv(blk.conv_out, h_buf).chunk(2, 1)
        return u + gate_a * torch.sigmoid(gate_b)

    @torch.no_grad()
    def params_at(self, r: int, c: int) -> torch.Tensor:
        """Mixture parameters at (r, c), (B, P); needs the final pixels before (r, c)."""
        ul = torch.addmm(self.init_columns[c], self.own_pixels[c], self.init_left_own, out=self.ul)
        for block in self.left:
            ul = block.at(ul, r, c, self.elu_into)
        return torch.addmm(self.head_b, self.elu_into(ul, self.ul_elu), self.head_w)

    def set_pixel(self, r: int, c: int, x: torch.Tensor) -> None:
        """Fix pixel (r, c) to x (B, C) in [0, 1]."""
        self.set_grid(r, c, mixture.to_grid(x))

    def set_grid(self, r: int, c: int, t: torch.Tensor) -> None:
        """Fix pixel (r, c) to t (B, C), already on the model's 8-bit grid in [-1, 1] (see :func:`mixture.to_grid`)."""
        self.pixels[r][c].copy_(t)
