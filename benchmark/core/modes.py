"""Model modes: snapshot every submodule's ``training`` flag and restore it afterwards."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Put ``model`` in train or eval mode for the block, then restore each submodule's own flag."""
    saved = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield model
    finally:
        for m, flag in saved:
            m.training = flag


def eval_mode(model: nn.Module):
    return mode(model, False)
