"""Training state beside a model's final checkpoint, so that an interrupted training resumes where it was last saved:
after an epoch (PixelCNN, GAN, classifiers) or, for classifiers, also within one. Tensors go to safetensors (no code
runs on loading), counters to JSON."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence, Union

import torch
from torch import nn

from benchmark.store.fileio import atomic_write_text

log = logging.getLogger(__name__)

PARTIAL_STATE, PARTIAL_META = "partial.safetensors", "partial.json"  # an unfinished training, beside its model
PARTIAL_SPEC = "partial-spec.json"  # what a shipped unfinished training trains (kind and spec)
Optimizers = Union[torch.optim.Optimizer, Sequence[torch.optim.Optimizer]]


def _owner(opt: Optimizers, p: nn.Parameter) -> torch.optim.Optimizer:
    """The optimizer that updates ``p`` (a GAN has one for the generator and one for the critic)."""
    opts = [opt] if isinstance(opt, torch.optim.Optimizer) else opt
    for o in opts:
        if any(p is q for group in o.param_groups for q in group["params"]):
            return o
    raise ValueError("a parameter of the model belongs to none of the optimizers")


class EpochCheckpoint:
    """Model weights, the state of its optimizer(s) and any ``extra`` tensors (e.g. random generator states) after an
    epoch."""

    def __init__(self, folder: Path, what: str = "training") -> None:
        self.weights, self.meta = Path(folder) / PARTIAL_STATE, Path(folder) / PARTIAL_META
        self.what = what

    def save(self, model: nn.Module, opt: Optimizers, epoch: int, seconds: float,
             extra: dict[str, torch.Tensor] | None = None) -> None:
        from safetensors.torch import save_file

        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        for i, p in enumerate(model.parameters()):
            for k, v in _owner(opt, p).state[p].items():
                if torch.is_tensor(v):
                    tensors[f"opt.{i}.{k}"] = v.detach().cpu().contiguous().reshape(v.shape)
        for k, v in (extra or {}).items():
            tensors[f"extra.{k}"] = v.detach().cpu().contiguous()
        self.weights.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.weights.with_suffix(".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(self.weights)
        atomic_write_text(self.meta, json.dumps({"epoch": epoch, "seconds": seconds}))

    def load(self, model: nn.Module, opt: Optimizers) -> tuple[int, float, dict[str, torch.Tensor]]:
        """(epochs done, seconds spent, extra tensors) restored into model and optimizer; (0, 0, {}) when there is
        nothing to resume."""
        from safetensors.torch import load_file

        if not (self.meta.exists() and self.weights.exists()):
            return 0, 0.0, {}
        try:
            info = json.loads(self.meta.read_text())
            tensors = load_file(str(self.weights))
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            for i, p in enumerate(model.parameters()):
                state = {k.split(".", 2)[2]: v.to(p.device) for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
                if state:
                    _owner(opt, p).state[p] = state
            extra = {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}
            return int(info["epoch"]), float(info["seconds"]), extra
        except Exception as exc:  # an unreadable partial state only costs the epochs it held
            log.warning("cannot resume %s from %s (%s); starting over", self.what, self.weights, exc)
            return 0, 0.0, {}

    def remove(self) -> None:
        self.weights.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)
