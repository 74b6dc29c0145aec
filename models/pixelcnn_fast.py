"""Evaluate a :class:`~models.pixelcnn.PixelCNN` one position at a time while its input is being rewritten.

PixelDefend changes pixel (r, c) from the network's output at (r, c), which depends on the pixels already changed.
Recomputing the whole network per sub-pixel (the reference) costs H*W*C forward passes. Here every activation is
computed once, when its inputs are final (the idea of Ramachandran et al. 2017, "Fast generation for convolutional
autoregressive models", https://arxiv.org/abs/1704.06001):

- ``begin_row(r)``: everything that depends on rows < r only, for the whole row at once: the up stream of row r, and
  for each up-left convolution the part of its sum that reads row r-1 (and the 1x1 view of the up stream);
- ``params_at(r, c)``: the rest of the up-left stream at (r, c) (the taps on row r: (r, c-1) and (r, c)) and the head;
- ``set_pixel(r, c, x)``: writes the final value of pixel (r, c).

Call order per row: ``begin_row(r)``, then for c = 0..W-1 ``params_at(r, c)`` followed by ``set_pixel(r, c, ...)``.

Up-left activations of a row live in (B, W + 1, F) buffers (a zero column in front is the convolutions' left padding),
so the two taps of a row, (r, c-1) and (r, c), are one contiguous (B, 2F) view and each convolution at a position is a
single matrix product. Per position that is a few dozen small operations; the floating-point sums are grouped
differently from the full pass, so the result agrees with it to rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import mixture
from .pixelcnn import GatedResidual, PixelCNN, ShiftedConv, elu


def _elu_into(x: torch.Tensor, out: torch.Tensor) -> None:
    """out = elu(x), in the same operation order as :func:`models.pixelcnn.elu`."""
    torch.exp(x.clamp(max=0), out=out)
    out.sub_(1).add_(x.clamp(min=0))


def _row_conv(conv: ShiftedConv, rows: torch.Tensor) -> torch.Tensor:
    """A shifted convolution along one output row, from its kh input rows already padded at the sides: (B, Cout, W)."""
    return F.conv2d(rows, conv.conv.weight, conv.conv.bias)[:, :, 0, :]


class _LeftConv:
    """A down-right-shifted 2x2 convolution split into its row-above taps (evaluated per row) and its own-row taps
    (one matrix product per position)."""

    def __init__(self, conv: ShiftedConv) -> None:
        w = conv.conv.weight  # (Cout, Cin, 2, 2): [row above | own row] x [column c-1 | column c]
        self.above = w[:, :, 0, :]  # (Cout, Cin, 2)
        self.own = w[:, :, 1, :].permute(2, 1, 0).reshape(-1, w.shape[0])  # (2 * Cin, Cout), matching a (B, 2, Cin) view
        self.bias = conv.conv.bias

    def row_part(self, prev: torch.Tensor) -> torch.Tensor:
        """prev (B, W + 1, Cin): the row above with its padding column -> (B, W, Cout) incl. bias."""
        x = prev.permute(0, 2, 1)  # (B, Cin, W + 1)
        return F.conv1d(x, self.above, self.bias).permute(0, 2, 1)


class _LeftBlock:
    """Buffers and weights of one up-left gated residual block."""

    def __init__(self, block: GatedResidual, b: int, f: int, w: int, like: torch.Tensor) -> None:
        self.conv_in, self.conv_out = _LeftConv(block.conv_in), _LeftConv(block.conv_out)
        self.aux_w, self.aux_b = block.aux.weight.flatten(1).t(), block.aux.bias
        self.f = f
        # elu of the block's input and of its hidden layer, for the row above and the current row
        self.x_prev, self.x_cur = like.new_zeros(b, w + 1, f), like.new_zeros(b, w + 1, f)
        self.h_prev, self.h_cur = like.new_zeros(b, w + 1, f), like.new_zeros(b, w + 1, f)
        self.in_part: torch.Tensor | None = None
        self.out_part: torch.Tensor | None = None

    def begin_row(self, up_elu: torch.Tensor) -> None:
        """up_elu (B, W, F): elu of the up stream that this block reads through its 1x1 convolution."""
        self.x_prev, self.x_cur = self.x_cur, self.x_prev
        self.h_prev, self.h_cur = self.h_cur, self.h_prev
        aux = torch.matmul(up_elu, self.aux_w) + self.aux_b
        self.in_part = (self.conv_in.row_part(self.x_prev) + aux).contiguous()
        self.out_part = self.conv_out.row_part(self.h_prev).contiguous()

    def at(self, ul: torch.Tensor, c: int) -> torch.Tensor:
        b = ul.shape[0]
        _elu_into(ul, self.x_cur[:, c + 1])
        hidden = torch.addmm(self.in_part[:, c], self.x_cur[:, c : c + 2].reshape(b, -1), self.conv_in.own)
        _elu_into(hidden, self.h_cur[:, c + 1])
        out = torch.addmm(self.out_part[:, c], self.h_cur[:, c : c + 2].reshape(b, -1), self.conv_out.own)
        return torch.addcmul(ul, out[:, : self.f], torch.sigmoid(out[:, self.f :]))


class IncrementalPixelCNN:
    """Incremental evaluation of ``model`` (in eval mode) on a batch whose pixels become final in raster order."""

    @torch.no_grad()
    def __init__(self, model: PixelCNN, x: torch.Tensor) -> None:
        self.model = model
        b, c, h, w = x.shape
        f = model.filters
        like = next(model.parameters())
        self.b, self.w = b, w
        # the input (model grid + ones channel), NCHW with the up stream's padding: one row on top, a column each side
        self.image = like.new_zeros(b, c + 1, h + 1, w + 2)
        # up stream: elu of each block's input and hidden layer, previous and current row, padded at the sides
        self.up_x = [like.new_zeros(b, f, 2, w + 2) for _ in model.u_blocks]
        self.up_h = [like.new_zeros(b, f, 2, w + 2) for _ in model.u_blocks]
        self.left = [_LeftBlock(blk, b, f, w, like) for blk in model.ul_blocks]
        # the down-right-shifted 2x1 input convolution: its row-above tap and its own-row tap
        wl = model.ul_init_left.conv.weight  # (F, C + 1, 2, 1)
        self.init_left_above, self.init_left_own = wl[:, :, 0, 0].t(), wl[:, :, 1, 0].t()
        self.head_w, self.head_b = model.head.weight.flatten(1).t(), model.head.bias
        self.init_part: torch.Tensor | None = None

    @torch.no_grad()
    def begin_row(self, r: int) -> None:
        """Everything that depends on rows < r only: needs the final pixels of rows < r."""
        m = self.model
        padded_rows = self.image[:, :, r : r + 2]  # image rows r-1 and r (row r not final yet: only row r-1 is read)
        # u(r) = u_init(r-1) (the down shift), which reads image rows r-2 and r-1
        u = _row_conv(m.u_init, self.image[:, :, r - 1 : r + 1]) if r > 0 else self.image.new_zeros(
            self.b, m.filters, self.w)
        up_elu = []
        for i, blk in enumerate(m.u_blocks):
            u = self._up_block(blk, self.up_x[i], self.up_h[i], u)
            up_elu.append(elu(u).permute(0, 2, 1))
        # the up-left stream's input at (r, c): ul_init_up(r-1, c) + ul_init_left(r, c-1); the latter's row-above tap
        # reads image (r-1, c-1), its own-row tap image (r, c-1) (added per position)
        above = padded_rows[:, :, 0]  # (B, C + 1, W + 2), image row r-1 with side padding
        init = torch.matmul(above[:, :, :-2].permute(0, 2, 1), self.init_left_above) + m.ul_init_left.conv.bias
        init[:, 0] = 0  # column 0: the right shift brings in zeros, bias included
        if r > 0:
            init = init + _row_conv(m.ul_init_up, above[:, :, None]).permute(0, 2, 1)
        self.init_part = init.contiguous()
        for block, ue in zip(self.left, up_elu):
            block.begin_row(ue)

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
        ul = self.init_part[:, c]
        if c > 0:
            ul = torch.addmm(ul, self.image[:, :, r + 1, c], self.init_left_own)  # image (r, c-1): padded column c
        for block in self.left:
            ul = block.at(ul, c)
        return torch.addmm(self.head_b, elu(ul), self.head_w)

    def set_pixel(self, r: int, c: int, x: torch.Tensor) -> None:
        """Fix pixel (r, c) to x (B, C) in [0, 1]."""
        self.image[:, :-1, r + 1, c + 1] = mixture.to_grid(x)
        self.image[:, -1, r + 1, c + 1] = 1
