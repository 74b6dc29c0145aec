"""An attack in the generator's latent space on a defense that projects its input onto a GAN generator
(``invert-and-classify``, ``invert-and-classify-robust``): the attack that broke Defense-GAN in Athalye, Carlini and
Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018 (https://arxiv.org/abs/1802.00420),
Section 5.4.2, for a fixed L-infinity budget.

The defense classifies G(z*) where z* minimises ||G(z) - x||^2 over the latent codes its descent reaches (L steps of
SGD from R fixed starts, the best start kept). An input x' therefore fools it when some code of a wrong class explains
x' better than every code of the true class that the descent reaches. For a test input x with label y this attack:

1. projects x as the defense does, keeping every start's end point (the codes the descent reaches, nearly all of
   class y): the same computation as the defense's, so that its best start is the defense's z* exactly;
2. searches, for each of the ``targets`` wrong classes t the classifier ranks highest on that projection, a latent
   code z_t with Adam from ``starts`` points (half z* plus noise, half drawn from N(0, I)), minimising
   ||clip(G(z_t), x - eps, x + eps) - G(z_t)||^2 (how far G(z_t) lies outside the budget's ball around x) plus
   ``weight`` * max(0, max_{j != t} C_j(G(z_t)) - C_t(G(z_t)) + kappa) (a CW margin towards t): a wrong-class image
   as close as can be found to the ball;
3. starts from x' = clip(G(z_t), x - eps, x + eps), clipped to [0, 1], the point of the ball closest to the best
   target's image, and refines it by ``refine_steps`` signed steps of ``step_size`` * eps, each moving x' towards the
   image of the best-fitting wrong-class code A and away from that of the best-fitting true-class code B: the
   gradient of ||G(z_A) - x'||^2 - ||G(z_B) - x'||^2 (exact by Danskin's theorem, since both codes are minimisers),
   plus ``classifier_weight`` times the classifier's margin gradient at G(z_A). Between steps the codes follow x':
   the R start end points by ``track_steps`` of the defense's own descent (at its final learning rate), the target
   codes by as many Adam steps of the search's objective with ||G(z) - x'||^2 as its distance (so that they stay of
   their class);
4. verifies with the defense's real projection (again keeping every start's end point, which replace the tracked
   ones) and the classifier: an image whose projection is misclassified is done and keeps that x'; the others go
   through 3 and 4 again, ``rounds`` verifications in all. An image the defense already misclassifies is returned
   as it is;
5. crafts the inputs of the images still not fooled further with the projection's exact gradient: from each one's
   last refined x', ``unrolled_steps`` steps of ``pgd-unrolled`` (:mod:`attacks.unrolled`, its descent unrolled),
   which move one of the defense's descents into a wrong class's basin. The latent rounds bring x' to where a
   wrong-class code explains it almost as well as the true class; the exact gradient finishes what the energies of
   step 3, blind to which basin each of the defense's fixed starts falls into, cannot. An image never fooled
   returns its last x'.

Cost per image and budget: one projection of x (shared by the budgets of a run when they attack the same batch),
``targets * starts`` codes for ``search_steps`` generator and classifier passes, and per round one projection plus
``refine_steps * track_steps`` passes of the R + ``targets`` tracked codes (about half a projection at the defaults);
rounds stop for images already fooled. Step 5 costs about three projections per step and image still standing, and
memory for an unrolled projection of ``unrolled.BATCH`` images.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from attacks.projecting import margin, projecting_defense, projection_applies_to
from attacks import unrolled
from benchmark.core.attack import Attack
from benchmark.core.modes import eval_mode
from benchmark.core.options import Option
from benchmark.core.registry import register_attack
from benchmark.core.vocab import AttackKind, Norm
from models.projection import Projection, check_fits, descend

log = logging.getLogger(__name__)
NAME = "latent-space"


def project_all(generator: nn.Module, x: torch.Tensor, cfg: Projection) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  torch.Tensor, torch.Tensor]:
    """The defense's projection (``models.projection.project``, the same computation) keeping every start's end:
    G(z*) (B, C, H, W), the end codes (B, R, latent), their images (B, R, C, H, W) and errors (B, R)."""
    check_fits(generator, x)
    b, r = len(x), cfg.restarts
    target = x.detach().repeat_interleave(r, 0)
    z = cfg.starts(generator.latent).to(x.device, x.dtype).repeat(b, 1)
    z, images = descend(generator, z, target, cfg.steps, cfg.lr, cfg.momentum, int(cfg.decay_at * cfg.steps))
    errors = (images - target).square().flatten(1).mean(1).view(b, r)
    rows = torch.arange(b, device=x.device) * r + errors.argmin(1)
    return images[rows], z.view(b, r, -1), images.view(b, r, *x.shape[1:]), errors


def outside(images: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Per row, ||clip(images, x - eps, x + eps) - images||^2: how far each image lies outside the ball around x."""
    return ((images - x).abs() - eps).clamp(min=0).square().flatten(1).sum(1)


@register_attack(NAME)
class LatentSpace(Attack):
    summary = ("wrong-class latent codes whose images explain an input in the ball better than the true class's, "
               "verified through the real projection (Athalye et al. 2018, 5.4.2); GAN defenses, adaptive only")
    norm, kind, library = Norm.LINF, AttackKind.FIXED, "defensebench"
    randomised = False  # its draws come from its own seed: the same output whatever torch's global seed
    needs_generator = True
    own_gradients = "exact (generator and classifier)"  # it differentiates them itself, never the projection
    OPTIONS = (
        Option("targets", int, 3, "wrong classes searched (those the classifier ranks highest on the projection)",
               low=1),
        Option("starts", int, 4, "latent starts per wrong class (half the projection's code plus noise, half "
               "random)", low=1),
        Option("search_steps", int, 100, "Adam steps of the latent search", low=1),
        Option("lr", float, 0.05, "Adam step size of the latent search and of the target codes' tracking", low=1e-6),
        Option("weight", float, 1.0, "weight of the CW margin towards the wrong class against the distance", low=0),
        Option("kappa", float, 5.0, "CW confidence: the margin in logits the latent search asks for", low=0),
        Option("start_noise", float, 0.5, "standard deviation of the noise added to the projection's code", low=0),
        Option("rounds", int, 3, "verifications through the real projection (each after a refinement)", low=1),
        Option("refine_steps", int, 20, "signed input steps before each verification", low=0),
        Option("step_size", float, 0.1, "input step size relative to the budget eps", low=1e-6),
        Option("track_steps", int, 5, "descent steps of each tracked code per input step", low=1),
        Option("classifier_weight", float, 1.0, "weight of the classifier's margin gradient in the input steps",
               low=0),
        Option("unrolled_steps", int, 10, "steps through the unrolled projection (pgd-unrolled) from the last "
               "refined input of the images still not fooled; 0: the latent rounds only", low=0),
        Option("unrolled_step_size", float, 0.25, "their step size relative to the budget eps", low=1e-6),
        Option("seed", int, 0, "seed of the search's starts (the same draws for every image)", low=0),
    )

    def __init__(self, targets: int = 3, starts: int = 4, search_steps: int = 100, lr: float = 0.05,
                 weight: float = 1.0, kappa: float = 5.0, start_noise: float = 0.5, rounds: int = 3,
                 refine_steps: int = 20, step_size: float = 0.1, track_steps: int = 5,
                 classifier_weight: float = 1.0, unrolled_steps: int = 10, unrolled_step_size: float = 0.25,
                 seed: int = 0) -> None:
        super().__init__(targets=targets, starts=starts, search_steps=search_steps, lr=lr, weight=weight,
                         kappa=kappa, start_noise=start_noise, rounds=rounds, refine_steps=refine_steps,
                         step_size=step_size, track_steps=track_steps, classifier_weight=classifier_weight,
                         unrolled_steps=unrolled_steps, unrolled_step_size=unrolled_step_size, seed=seed)
        self._clean: tuple | None = None  # the last batch's clean projection, shared by the budgets of a run

    @classmethod
    def applies_to(cls, defense, threat):
        return projection_applies_to(defense, threat)

    def run(self, model, x, y, eps):
        defense = projecting_defense(model, NAME)
        generator, classifier = defense.generator, model.classifier
        out = x.clone()
        with eval_mode(generator), eval_mode(classifier):
            for i in range(0, len(x), defense.batch_size):
                rows = slice(i, i + defense.batch_size)
                out[rows] = self._attack(generator, classifier, defense.projection, x[rows], y[rows], eps)
        return out

    def _clean_projection(self, generator, cfg, x):
        key = (id(generator), cfg)
        if self._clean is not None and self._clean[0] == key and torch.equal(self._clean[1], x):
            return self._clean[2]
        with torch.no_grad():
            result = project_all(generator, x, cfg)
        self._clean = (key, x.clone(), result)
        return result

    def _attack(self, generator, classifier, cfg, x, y, eps):
        o = self._options
        home, z_ends, _, errors = self._clean_projection(generator, cfg, x)
        with torch.no_grad():
            logits = classifier(home)
        todo = (logits.argmax(1) == y).nonzero()[:, 0]  # the defense already misclassifies the others
        out = x.clone()
        if len(todo) == 0:
            return out
        x, y, z_ends, logits = x[todo], y[todo], z_ends[todo], logits[todo]
        z_star = z_ends[torch.arange(len(todo)), errors[todo].argmin(1)]
        k = min(o["targets"], logits.shape[1] - 1)
        targets = logits.scatter(1, y[:, None], float("-inf")).topk(k, 1).indices  # (n, k)
        z_targets, targets = self._search(generator, classifier, x, z_star, targets, eps)
        x_adv, standing = self._refine_and_verify(generator, classifier, cfg, x, y, z_ends, z_targets, targets, eps)
        steps = o["unrolled_steps"]
        for rows in standing.split(unrolled.BATCH) if steps else ():
            x_adv[rows] = unrolled.unrolled_pgd(generator, classifier, cfg, x[rows], y[rows], eps, steps,
                                                o["unrolled_step_size"], unrolled.TEMPERATURE, o["kappa"],
                                                start=x_adv[rows])
        out[todo] = x_adv
        return out

    def _search(self, generator, classifier, x, z_star, targets, eps):
        """Per image and target class, the best code of ``starts`` Adam searches (n, k, latent), and the targets,
        both ordered best first."""
        o = self._options
        n, k = targets.shape
        s = o["starts"]
        latent = z_star.shape[-1]
        image = torch.arange(n, device=x.device).repeat_interleave(k * s)
        label = targets.repeat_interleave(s, 1).reshape(-1)
        near = (torch.arange(n * k * s, device=x.device) % s) < (s + 1) // 2
        # the same draws for every image: an image's result does not depend on the batch it is in
        noise = torch.randn(k * s, latent, generator=torch.Generator().manual_seed(o["seed"]))
        noise = noise.to(x.device, x.dtype).repeat(n, 1)
        z = torch.where(near[:, None], z_star[image] + o["start_noise"] * noise, noise).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=o["lr"])
        xr = x[image]
        with torch.enable_grad():
            for _ in range(o["search_steps"]):
                g = generator(z)
                loss = outside(g, xr, eps) + o["weight"] * (margin(classifier(g), label) + o["kappa"]).clamp(min=0)
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
        with torch.no_grad():
            g = generator(z)
            wrong = classifier(g).argmax(1) != label
            score = (outside(g, xr, eps) + 1e6 * wrong).view(n, k, s)
            best = score.argmin(2)  # (n, k)
            z = z.detach().view(n, k, s, latent)[torch.arange(n)[:, None], torch.arange(k)[None], best]
            order = score.gather(2, best[..., None])[..., 0].argsort(1)  # targets by their best score
        return z[torch.arange(n)[:, None], order], targets.gather(1, order)

    def _refine_and_verify(self, generator, classifier, cfg, x, y, z_ends, z_targets, targets, eps):
        o = self._options
        n = len(x)
        with torch.no_grad():
            x_adv = generator(z_targets[:, 0]).clamp(x - eps, x + eps).clamp(0, 1)
        result = x_adv.clone()
        todo = torch.arange(n, device=x.device)
        for _ in range(o["rounds"]):
            x_adv[todo], z_targets[todo] = self._refine(generator, classifier, cfg, x[todo], y[todo], x_adv[todo],
                                                        z_ends[todo], z_targets[todo], targets[todo], eps)
            result[todo] = x_adv[todo]
            with torch.no_grad():
                projected, ends, _, _ = project_all(generator, x_adv[todo], cfg)
                fooled = classifier(projected).argmax(1) != y[todo]
            z_ends[todo] = ends
            log.debug("latent-space at eps %.4f: round fooled %d of %d", eps, int(fooled.sum()), len(todo))
            todo = todo[~fooled]
            if len(todo) == 0:
                break
        return result, todo

    def _refine(self, generator, classifier, cfg, x, y, x_adv, z_ends, z_targets, targets, eps):
        """``refine_steps`` signed steps of x_adv towards the best-fitting wrong-class code's image and away from the
        best-fitting true-class code's, the codes following x_adv between steps."""
        o = self._options
        n, r, latent = z_ends.shape
        k = z_targets.shape[1]
        if o["refine_steps"] == 0:
            return x_adv, z_targets
        ends = z_ends.flatten(0, 1).clone()
        codes = z_targets.flatten(0, 1).clone().requires_grad_(True)
        label = targets.reshape(-1)
        opt = torch.optim.Adam([codes], lr=o["lr"])
        x_adv = x_adv.clone()
        for _ in range(o["refine_steps"]):
            ends, end_images = descend(generator, ends, x_adv.repeat_interleave(r, 0), o["track_steps"],
                                       cfg.lr / 10, cfg.momentum)
            xk = x_adv.repeat_interleave(k, 0)
            with torch.enable_grad():
                for _ in range(o["track_steps"]):  # noqa: B007
                    g = generator(codes)
                    loss = (g - xk).square().flatten(1).sum(1) + \
                        o["weight"] * (margin(classifier(g), label) + o["kappa"]).clamp(min=0)
                    opt.zero_grad(set_to_none=True)
                    loss.sum().backward()
                    opt.step()
            with torch.no_grad():
                images = torch.cat([end_images.view(n, r, *x.shape[1:]),
                                    generator(codes).view(n, k, *x.shape[1:])], 1)  # (n, r + k, C, H, W)
                energy = (images - x_adv[:, None]).square().flatten(2).sum(2)
            all_images = images.flatten(0, 1).clone().requires_grad_(True)
            with torch.enable_grad():
                logits = classifier(all_images)
                (grad_images,) = torch.autograd.grad(margin(logits, y.repeat_interleave(r + k)).sum(), all_images)
            with torch.no_grad():
                true = (logits.argmax(1) == y.repeat_interleave(r + k)).view(n, r + k)
                inf = torch.tensor(float("inf"), device=x.device)
                a = torch.where(true, inf, energy).argmin(1)  # best-fitting wrong-class code
                b = torch.where(true, energy, inf).argmin(1)  # best-fitting true-class code
                has_b = true.any(1)
                rows = torch.arange(n, device=x.device)
                image_a, image_b = images[rows, a], images[rows, b]
                # descent direction of E_A - E_B - classifier_weight * margin_y(G(z_A)) in x_adv
                grad = 2 * (image_b - image_a) - o["classifier_weight"] * grad_images.view(n, r + k, *x.shape[1:])[
                    rows, a]
                grad = grad * has_b.view(-1, 1, 1, 1)  # nothing to move away from: leave it
                x_adv = (x_adv - o["step_size"] * eps * grad.sign()).clamp(x - eps, x + eps).clamp(0, 1)
        return x_adv, codes.detach().view(n, k, latent)
