"""Evaluate a :class:`~models.pixelcnn.PixelCNN` one position at a time while its input is being rewritten.

PixelDefend changes pixel (r, c) from the network's output at (r, c), which depends on the pixels already changed.
Recomputing the whole network per sub-pixel (the reference) costs H*W*C forward passes. Here every activation of every
layer is computed exactly once, when its inputs are final, and kept in a zero-padded buffer (the padding is the network's
own zero padding). The whole cost is one forward pass plus Python overhead per position (the idea of Ramachandran et al.
2017, "Fast generation for convolutional autoregressive models", https://arxiv.org/abs/1704.06001):

- ``begin_row(r)``: the up stream of row r (it sees rows < r only, so the whole row at once);
- ``params_at(r, c)``: the up-left stream and the mixture head at (r, c);
- ``set_pixel(r, c, x)``: writes the final value of pixel (r, c) into the input buffer.

Call order per row: ``begin_row(r)``, then for c = 0..W-1 ``params_at(r, c)`` followed by ``set_pixel(r, c, ...)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import mixture
from .pixelcnn import GatedResidual, PixelCNN, ShiftedConv

PAD = 1  # every convolution here reaches at most one row up and one column to either side


class _Buffer:
    """An activation map (B, C, H, W) with one zero row on top and one zero column on each side."""

    def __init__(self, b: int, c: int, h: int, w: int, like: torch.Tensor) -> None:
        self.data = like.new_zeros(b, c, h + PAD, w + 2 * PAD)

    def write_row(self, r: int, value: torch.Tensor) -> None:  # value (B, C, W)
        self.data[:, :, r + PAD, PAD:-PAD] = value

    def write_at(self, r: int, c: int, value: torch.Tensor) -> None:  # value (B, C)
        self.data[:, :, r + PAD, c + PAD] = value


def _conv_row(conv: ShiftedConv, buf: _Buffer, r: int) -> torch.Tensor:
    """The convolution's output along row r, (B, Cout, W)."""
    left, right, top, _ = conv.pad
    kh = conv.conv.kernel_size[0]
    rows = buf.data[:, :, r + PAD - top : r + PAD - top + kh, PAD - left : buf.data.shape[3] - PAD + right]
    return F.conv2d(rows, conv.conv.weight, conv.conv.bias)[:, :, 0, :]


def _conv_at(conv: ShiftedConv, buf: _Buffer, r: int, c: int) -> torch.Tensor:
    """The convolution's output at (r, c), (B, Cout): one matrix product over its window."""
    left, _, top, _ = conv.pad
    kh, kw = conv.conv.kernel_size
    window = buf.data[:, :, r + PAD - top : r + PAD - top + kh, c + PAD - left : c + PAD - left + kw]
    return torch.addmm(conv.conv.bias, window.reshape(window.shape[0], -1), conv.conv.weight.flatten(1).t())


class _BlockState:
    """Buffers of one gated residual block: elu of its input and elu of its hidden layer."""

    def __init__(self, block: GatedResidual, b: int, f: int, h: int, w: int, like: torch.Tensor) -> None:
        self.block = block
        self.x_elu = _Buffer(b, f, h, w, like)
        self.h_elu = _Buffer(b, f, h, w, like)


class IncrementalPixelCNN:
    """Incremental evaluation of ``model`` (in eval mode) on a batch whose pixels become final in raster order."""

    @torch.no_grad()
    def __init__(self, model: PixelCNN, x: torch.Tensor) -> None:
        self.model = model
        b, c, h, w = x.shape
        f = model.filters
        self.shape = (b, c, h, w)
        like = next(model.parameters())
        self.input = _Buffer(b, c + 1, h, w, like)  # the final pixels so far, on the model's grid, plus ones
        self.up = [_BlockState(blk, b, f, h, w, like) for blk in model.u_blocks]
        # elu of each up block's output, read by the up-left block through its 1x1 convolution
        self.up_outs = [_Buffer(b, f, h, w, like) for _ in model.u_blocks]
        self.left = [_BlockState(blk, b, f, h, w, like) for blk in model.ul_blocks]
        self.init_up = like.new_zeros(b, f, w)  # u_init and ul_init_up of the previous row (down-shifted)
        self.init_ul_up = like.new_zeros(b, f, w)

    @torch.no_grad()
    def begin_row(self, r: int) -> None:
        """Compute the up stream of row r (needs the final pixels of rows < r) and the down-shifted inputs of row r."""
        m = self.model
        if r > 0:  # the down shift: row r reads the initial convolutions of row r-1
            self.init_up = _conv_row(m.u_init, self.input, r - 1)
            self.init_ul_up = _conv_row(m.ul_init_up, self.input, r - 1)
        u = self.init_up
        for state, out in zip(self.up, self.up_outs):
            u = self._block_row(state, u, r)
            out.write_row(r, F.elu(u))

    def _block_row(self, state: _BlockState, x: torch.Tensor, r: int) -> torch.Tensor:
        blk = state.block
        state.x_elu.write_row(r, F.elu(x))
        hidden = _conv_row(blk.conv_in, state.x_elu, r)
        state.h_elu.write_row(r, F.elu(hidden))
        gate_a, gate_b = _conv_row(blk.conv_out, state.h_elu, r).chunk(2, 1)
        return x + gate_a * torch.sigmoid(gate_b)

    @torch.no_grad()
    def params_at(self, r: int, c: int) -> torch.Tensor:
        """Mixture parameters at (r, c), (B, P); needs the final pixels before (r, c)."""
        m = self.model
        ul = self.init_ul_up[:, :, c]
        if c > 0:  # the right shift: (r, c) reads the left initial convolution at (r, c-1)
            ul = ul + _conv_at(m.ul_init_left, self.input, r, c - 1)
        for state, up_out in zip(self.left, self.up_outs):
            blk = state.block
            state.x_elu.write_at(r, c, F.elu(ul))
            hidden = _conv_at(blk.conv_in, state.x_elu, r, c)
            hidden = hidden + torch.addmm(blk.aux.bias, up_out.data[:, :, r + PAD, c + PAD], blk.aux.weight.flatten(1).t())
            state.h_elu.write_at(r, c, F.elu(hidden))
            gate_a, gate_b = _conv_at(blk.conv_out, state.h_elu, r, c).chunk(2, 1)
            ul = ul + gate_a * torch.sigmoid(gate_b)
        return torch.addmm(m.head.bias, F.elu(ul), m.head.weight.flatten(1).t())

    def set_pixel(self, r: int, c: int, x: torch.Tensor) -> None:
        """Fix pixel (r, c) to x (B, C) in [0, 1]."""
        self.input.write_at(r, c, torch.cat([mixture.to_grid(x), torch.ones_like(x[:, :1])], 1))
