"""PGD through a GAN projection defense's own descent (``invert-and-classify``, ``invert-and-classify-robust``), its
steps unrolled: the defense's exact gradient, no BPDA.

The projection is a fixed computation: L steps of SGD with momentum on ||G(z) - x||^2 from R starts drawn once from
the defense's seed, the best end kept. Every step is differentiable in x, so the whole projection is too
(:func:`models.projection.project_unrolled` keeps its L steps in autograd's graph, second derivatives of the
generator included, and its forward pass equals the defense's bit for bit). Athalye, Carlini and Wagner (ICML 2018,
https://arxiv.org/abs/1802.00420) call this differentiating through the optimisation and note its cost; BPDA (the
project's ``pgd``, whose backward pass is the identity at the projection) and the latent-space attack avoid it. On
small generators it is affordable, and it finds what they miss: an input that moves one of the R descents into
another class's basin, which no gradient taken at the projection's end point sees.

Only the best start's class counts, and which start is best jumps as x moves; the loss is therefore a softmin over
the starts (temperature ``temperature`` on their per-pixel mean squared errors) of each end image's CW margin
(clipped at ``kappa``): raising it moves the ends into wrong classes and favours the ends already there. Each of
``steps`` iterations takes one signed step of ``step_size`` * eps, projected onto the budget's ball and [0, 1]. The
forward pass of an iteration is the defense's projection, so an image whose best end is misclassified is done and
keeps that input; the others return their last step's input (the harness evaluates it with the real defense).
Deterministic (no random start): its output depends neither on torch's global seed nor on the batch an image is in.

Cost per image and iteration: the projection's L x R generator passes, forward and backward with second
derivatives (about three projections), and memory for L steps of R generator activations per image (``batch_size``
images at once). It runs only under ``--threat adaptive`` against a defense whose one purifier is a GAN projection.
"""
from __future__ import annotations

import torch

from attacks.projecting import margin, projecting_defense, projection_applies_to
from benchmark.core.attack import Attack
from benchmark.core.modes import eval_mode
from benchmark.core.options import Option
from benchmark.core.registry import register_attack
from benchmark.core.vocab import AttackKind, Norm
from models.projection import project_unrolled

NAME = "pgd-unrolled"
TEMPERATURE = 0.002  # softmin temperature over the starts (also the latent-space attack's, for its unrolled steps)
BATCH = 10  # images unrolled at once (memory: L steps of R generator activations each)


@register_attack(NAME)
class UnrolledPGD(Attack):
    summary = ("PGD with the projection's exact gradient, its descent unrolled (no BPDA), softmin over the starts; "
               "GAN defenses, adaptive only")
    norm, kind, library = Norm.LINF, AttackKind.FIXED, "defensebench"
    randomised = False
    needs_generator = True
    own_gradients = "exact (the projection's descent unrolled)"  # never the pipeline's BPDA stand-in
    OPTIONS = (
        Option("steps", int, 10, "signed gradient steps (each one unrolled projection, forward and backward)", low=1),
        Option("step_size", float, 0.25, "step size relative to the budget eps", low=1e-6),
        Option("temperature", float, TEMPERATURE, "softmin temperature over the starts' per-pixel mean squared errors",
               low=1e-9),
        Option("kappa", float, 5.0, "the CW margin is clipped at this many logits (a done end stops pulling)", low=0),
        Option("batch_size", int, BATCH, "images unrolled at once: changes memory and speed only, not results", low=1,
               changes_results=False),
    )

    def __init__(self, steps: int = 10, step_size: float = 0.25, temperature: float = TEMPERATURE, kappa: float = 5.0,
                 batch_size: int = BATCH) -> None:
        super().__init__(steps=steps, step_size=step_size, temperature=temperature, kappa=kappa,
                         batch_size=batch_size)

    @classmethod
    def applies_to(cls, defense, threat):
        return projection_applies_to(defense, threat)

    def run(self, model, x, y, eps):
        defense = projecting_defense(model, NAME)
        generator, classifier = defense.generator, model.classifier
        out = x.clone()
        size = self._options["batch_size"]
        with eval_mode(generator), eval_mode(classifier):
            for i in range(0, len(x), size):
                rows = slice(i, i + size)
                out[rows] = self._attack(generator, classifier, defense.projection, x[rows], y[rows], eps)
        return out

    def _attack(self, generator, classifier, cfg, x, y, eps):
        o = self._options
        return unrolled_pgd(generator, classifier, cfg, x, y, eps, o["steps"], o["step_size"], o["temperature"],
                            o["kappa"])


def unrolled_pgd(generator, classifier, cfg, x, y, eps, steps, step_size, temperature, kappa, start=None):
    """``steps`` signed steps through the unrolled projection (the module's docstring), from ``start`` (by default
    x itself) inside the eps ball around x; returns the inputs, each the first one found fooling the projection or
    the last step's."""
    x_adv = (x if start is None else start).clone()
    todo = torch.arange(len(x), device=x.device)
    for _ in range(steps):
        xa = x_adv[todo].clone().requires_grad_(True)
        with torch.enable_grad():
            images, errors = project_unrolled(generator, xa, cfg)
            r = errors.shape[1]
            margins = margin(classifier(images.flatten(0, 1)), y[todo].repeat_interleave(r)).view(-1, r)
            weights = torch.softmax(-errors / temperature, 1)
            (grad,) = torch.autograd.grad((weights * margins.clamp(max=kappa)).sum(), xa)
        with torch.no_grad():  # the forward pass was the defense's projection: its best end decides
            fooled = margins.gather(1, errors.argmin(1, keepdim=True))[:, 0] > 0
            todo, grad = todo[~fooled], grad[~fooled]
            if len(todo) == 0:
                break
            moved = x_adv[todo] + step_size * eps * grad.sign()
            x_adv[todo] = torch.minimum(torch.maximum(moved, x[todo] - eps), x[todo] + eps).clamp(0, 1)
    return x_adv
