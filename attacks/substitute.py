"""The substitute-model black-box attack (Papernot, McDaniel, Goodfellow, Jha, Celik and Swami, "Practical Black-Box
Attacks against Machine Learning", AsiaCCS 2017, https://arxiv.org/abs/1602.02697), as the robust manifold paper
(Ilyas et al. 2017) turns it on invert-and-classify.

The attacked model is an oracle that answers labels only: no gradients, no scores. A small substitute classifier is
trained on its labels, starting from a seed set of inputs and growing it by Jacobian-based data set augmentation:
each round, every input x of the set adds x + lambda * sign(d F_O(x)(x) / dx), F the substitute's logits, O(x) the
oracle's label, clipped to [0, 1]; the oracle labels the new points and the substitute is retrained on all of them.
The adversarial inputs are then crafted on the substitute with the project's own FGSM (``substitute``) or BIM
(``substitute-bim``, the ``bim`` schedule) against the true labels, and transferred.

- **Seed set: the attack's own inputs** (the batch the harness hands over; their true labels are not used to train).
  An attacker always holds the inputs it means to perturb, and the attack interface gives it nothing else: a held-out
  slice would need the data set, which no attack is handed. The substitute is trained per batch (one with the
  default batch size of 250 and n <= 250) and depends only on the batch, the seed and the oracle.
- **Two registered names, not an option**: a record holds one attack and its id hashes the attack's name, not its
  options, so FGSM and BIM as one option could not both be on the leaderboard for one cell; as two names they are
  two columns and both count in the per-example worst case. Each trains its own substitute (a few seconds).
- **Gradient-free**: ``needs_gradients`` is False, so under ``--threat adaptive`` the oracle is the whole defended
  pipeline as deployed, one draw per query (``benchmark.engine.threats.adaptive_target``): this is the black-box attack on
  the defense. Under ``oblivious`` the oracle is the undefended classifier, under ``transfer`` the transfer substitute.
- **Affordable** (defaults): a two-convolution network (32 and 64 filters, 3x3, max pooling, 128 hidden units),
  4 augmentation rounds with lambda = 0.1 (Papernot's lambda; they ran 6 rounds from 150 points), Adam 1e-3, 10 epochs
  per round, batches of 64. From a seed set of m inputs the oracle answers 16 m queries (m, then m, 2m, 4m, 8m new
  points); on 100 mnist5k points the whole attack takes seconds (README).
- **Seeded**: the substitute's initial weights and batch order come from a seed read off torch's global generator
  (which the harness seeds per batch) without drawing from it, so every budget of a batch sees the same substitute;
  it is trained once per batch and reused for the other budgets. Deterministic for a seed; ``randomised`` because it
  follows the seed.
"""
from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.attack import Attack
from benchmark.core.errors import BenchError
from benchmark.core.modes import eval_mode
from benchmark.core.options import Option
from benchmark.core.registry import ATTACKS, register_attack
from benchmark.core.vocab import AttackKind, Norm


@dataclass(frozen=True)
class SubstituteTraining:
    rounds: int = 4  # Jacobian augmentation rounds (each doubles the set)
    lam: float = 0.1  # augmentation step lambda, in [0, 1] pixel space
    epochs: int = 10  # substitute training epochs per round
    width: int = 32  # filters of the first convolution (the second has twice as many)
    lr: float = 1e-3
    batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("epochs", "width", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BenchError(f"substitute {name} must be a positive integer, not {value!r}")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 0:
            raise BenchError(f"substitute rounds must be a non-negative integer, not {self.rounds!r}")
        if not self.lam > 0 or not self.lr > 0:
            raise BenchError(f"substitute lam and lr must be positive, not {self.lam!r} and {self.lr!r}")


class SubstituteNet(nn.Module):
    """Two 3x3 convolutions with max pooling, one hidden layer: small enough to train in seconds on a CPU."""

    def __init__(self, shape: tuple[int, int, int], classes: int, width: int = 32) -> None:
        super().__init__()
        c, h, w = shape
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * (h // 4) * (w // 4), 128), nn.ReLU(),
                                  nn.Linear(128, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def oracle_labels(oracle: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The attacked model's labels, nothing else (x carries no gradient: a defended pipeline answers as deployed)."""
    return torch.cat([oracle(x[i : i + batch_size].detach()).argmax(1) for i in range(0, len(x), batch_size)])


def jacobian_augment(substitute: nn.Module, x: torch.Tensor, labels: torch.Tensor, lam: float) -> torch.Tensor:
    """x + lam * sign(d F_label(x) / dx), clipped to [0, 1]: one new point per point of the set."""
    with eval_mode(substitute), torch.enable_grad():
        probe = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(substitute(probe).gather(1, labels[:, None]).sum(), probe)
    return (x + lam * grad.sign()).clamp(0, 1).detach()


def _fit(substitute: nn.Module, x: torch.Tensor, labels: torch.Tensor, cfg: SubstituteTraining,
         gen: torch.Generator) -> None:
    opt = torch.optim.Adam(substitute.parameters(), lr=cfg.lr)
    substitute.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(x), generator=gen).to(x.device)
        for i in range(0, len(x), cfg.batch_size):
            rows = order[i : i + cfg.batch_size]
            loss = F.cross_entropy(substitute(x[rows]), labels[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    substitute.eval()


def train_substitute(oracle: nn.Module, seed_x: torch.Tensor, cfg: SubstituteTraining, seed: int
                     ) -> tuple[nn.Module, int]:
    """A substitute trained on the oracle's labels of ``seed_x`` and of ``cfg.rounds`` Jacobian augmentations;
    returns it (in eval mode) and the number of oracle queries made."""
    x = seed_x.detach()
    labels = oracle_labels(oracle, x)
    queries = len(x)
    with torch.random.fork_rng(devices=[]):  # the weights' initialisation must not draw from the harness's generator
        torch.manual_seed(seed)
        substitute = SubstituteNet(tuple(x.shape[1:]), _classes(oracle, x), cfg.width).to(x.device)
    gen = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        _fit(substitute, x, labels, cfg, gen)
        for _ in range(cfg.rounds):
            new = jacobian_augment(substitute, x, labels, cfg.lam)
            new_labels = oracle_labels(oracle, new)
            queries += len(new)
            x, labels = torch.cat([x, new]), torch.cat([labels, new_labels])
            _fit(substitute, x, labels, cfg, gen)
    return substitute.requires_grad_(False), queries


@torch.no_grad()
def _classes(oracle: nn.Module, x: torch.Tensor) -> int:
    return int(oracle(x[:1]).shape[1])


def _peek_seed() -> int:
    """The seed the next draw of torch's global generator would give, without drawing it."""
    with torch.random.fork_rng(devices=[]):
        return int(torch.randint(0, 2**31 - 1, ()))


@register_attack("substitute")
class Substitute(Attack):
    summary = ("black box: a substitute trained on the attacked model's labels with Jacobian augmentation, "
               "FGSM on it transferred (Papernot et al. 2017)")
    norm, kind, library = Norm.LINF, AttackKind.FIXED, "defensebench"
    needs_gradients, randomised = False, True
    crafting = "fgsm"  # the registered attack run on the substitute
    OPTIONS = (
        Option("rounds", int, 4, "Jacobian augmentation rounds, each doubling the training set (Papernot: 6)", low=0),
        Option("lam", float, 0.1, "augmentation step lambda, in [0, 1] pixel space (Papernot: 0.1)", low=1e-6,
               high=1),
        Option("epochs", int, 10, "substitute training epochs per round", low=1),
        Option("width", int, 32, "filters of the substitute's first convolution (the second has twice as many)",
               low=1),
        Option("lr", float, 1e-3, "Adam learning rate of the substitute", low=1e-6),
        Option("batch_size", int, 64, "substitute training batch size (changes the substitute, so the results)",
               low=1),
    )

    def __init__(self, rounds: int = 4, lam: float = 0.1, epochs: int = 10, width: int = 32, lr: float = 1e-3,
                 batch_size: int = 64) -> None:
        self.config = SubstituteTraining(rounds, lam, epochs, width, lr, batch_size)
        super().__init__(**asdict(self.config), crafting=self.crafting)
        self._cache: tuple[Any, torch.Tensor, int, nn.Module] | None = None
        self.queries = 0  # oracle queries of the last substitute trained

    def substitute_for(self, model: nn.Module, x: torch.Tensor) -> nn.Module:
        """The substitute for this oracle, seed set and seed: trained on first use, then reused (other budgets)."""
        seed = _peek_seed()
        if self._cache is not None:
            ref, cached_x, cached_seed, substitute = self._cache
            if ref() is model and cached_seed == seed and cached_x.shape == x.shape and torch.equal(cached_x, x):
                return substitute
        substitute, self.queries = train_substitute(model, x, self.config, seed)
        self._cache = (weakref.ref(model), x.detach().clone(), seed, substitute)
        return substitute

    def run(self, model, x, y, eps):
        substitute = self.substitute_for(model, x)
        return ATTACKS.build(self.crafting).run(substitute, x, y, eps).detach()


@register_attack("substitute-bim")
class SubstituteBIM(Substitute):
    summary = ("black box: the substitute attack with BIM (the bim schedule) on the substitute, transferred "
               "(Papernot et al. 2017)")
    crafting = "bim"
