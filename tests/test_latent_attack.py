"""The attacks on a GAN projection defense that BPDA misses (the latent-space attack of Athalye et al. 2018, 5.4.2,
and PGD through the unrolled projection), on a projection defense built around a tiny synthetic generator whose range
holds both classes next to each other. Seconds each, CPU."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks.adaptive import DefendedModel
from attacks.latent import LatentSpace, project_all
from benchmark.core.defense import build_defense
from benchmark.core.errors import CellFailed
from benchmark.core.registry import ATTACKS
from benchmark.core.vocab import Norm, Threat
from benchmark.engine.adversarial import generate, predict
from benchmark.engine.checks import check_adversarial
from defenses.invert_and_classify import InvertAndClassify
from models.projection import Projection, project, project_unrolled

CPU = torch.device("cpu")
EPS = 0.2
SIGN = torch.where(torch.rand(64, generator=torch.Generator().manual_seed(0)) < 0.5, -1.0, 1.0)  # class direction
NUISANCE = torch.where(torch.rand(64, generator=torch.Generator().manual_seed(1)) < 0.5, -1.0, 1.0)
WATCHED = torch.arange(4)  # the only pixels the classifier looks at


class LinearGenerator(nn.Module):
    """G(z) = sigmoid(z_1 d + z_2 e) over 8x8 images: z_1 < 0 makes class 0, z_1 > 0 class 1, z_2 is a nuisance."""

    latent, shape = 2, (1, 8, 8)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(z[:, :1] * SIGN + z[:, 1:] * NUISANCE).view(-1, *self.shape)


class WatchingClassifier(nn.Module):
    """Separates the generator's two classes by four pixels only: the class direction there, scaled."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 50 * ((x.flatten(1)[:, WATCHED] - 0.5) * SIGN[WATCHED]).sum(1)
        return torch.stack([torch.zeros_like(score), score], 1)


@pytest.fixture(scope="module")
def setting():
    generator, classifier = LinearGenerator().eval(), WatchingClassifier().eval()
    defense = InvertAndClassify(steps=100, restarts=3)
    defense.generator = generator
    z = torch.stack([torch.full((8,), -0.6), torch.linspace(-0.5, 0.5, 8)], 1)  # class 0, different nuisances
    with torch.no_grad():
        x = generator(z)
    return DefendedModel(classifier, defense).eval(), x, torch.zeros(8, dtype=torch.long)


def _accuracy(pipeline: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(pipeline, x) == y).float().mean())


def test_project_all_is_the_defenses_projection(setting):
    pipeline, x, _ = setting
    generator, cfg = pipeline.defense.generator, pipeline.defense.projection
    best, ends, images, errors = project_all(generator, x, cfg)
    real, z_star, real_errors = project(generator, x, cfg)
    assert torch.equal(best, real) and torch.equal(errors, real_errors)
    assert ends.shape == (len(x), cfg.restarts, 2) and images.shape == (len(x), cfg.restarts, 1, 8, 8)
    assert torch.equal(ends[torch.arange(len(x)), errors.argmin(1)], z_star)


def test_latent_space_fools_the_real_projection_where_bpda_pgd_does_not(setting):
    pipeline, x, y = setting
    assert _accuracy(pipeline, x, y) == 1.0
    # the latent rounds alone (no unrolled steps): they find the wrong-class codes the tiny generator holds
    attacks = {"latent-space": LatentSpace(unrolled_steps=0), "pgd": ATTACKS.get("pgd").factory()}
    runs = {name: generate(attack, pipeline, x, y, (EPS,), seed=0, batch_size=len(x), device=CPU).per_eps[0]
            for name, attack in attacks.items()}  # the harness checks box and budget inside
    for name, adv in runs.items():
        check_adversarial(x, adv, Norm.LINF, EPS, name)
    latent, pgd = _accuracy(pipeline, runs["latent-space"], y), _accuracy(pipeline, runs["pgd"], y)
    print(f"accuracy through the projection at eps {EPS}: latent-space {latent:.2f}, BPDA PGD {pgd:.2f}")
    assert latent <= 0.25 and pgd >= latent + 0.5
    # the attack's own claim: the real projection of its inputs is of the wrong class
    projected = pipeline.defense.purify(runs["latent-space"])
    assert (WatchingClassifier()(projected).argmax(1) != y).float().mean() >= 0.75


def test_latent_space_crafts_further_through_the_unrolled_projection_only_where_its_rounds_failed(setting):
    pipeline, x, y = setting
    weak = {"rounds": 1, "search_steps": 2, "refine_steps": 0, "targets": 1, "starts": 1}  # fails on some images
    rounds_only = LatentSpace(**weak, unrolled_steps=0).run(pipeline, x, y, EPS)
    both = LatentSpace(**weak, unrolled_steps=5).run(pipeline, x, y, EPS)
    fooled_by_rounds = predict(pipeline, rounds_only) != y
    assert 0 < int(fooled_by_rounds.sum()) < len(x)
    assert torch.equal(both[fooled_by_rounds], rounds_only[fooled_by_rounds])  # those are left as they were
    check_adversarial(x, both, Norm.LINF, EPS, "latent-space")
    assert _accuracy(pipeline, both, y) < _accuracy(pipeline, rounds_only, y)


def test_latent_space_is_repeatable_whatever_the_global_seed_and_batch(setting):
    pipeline, x, y = setting
    attack = LatentSpace(rounds=1, search_steps=30)
    torch.manual_seed(0)
    first = attack.run(pipeline, x, y, EPS)
    torch.manual_seed(1)
    assert torch.equal(first, LatentSpace(rounds=1, search_steps=30).run(pipeline, x, y, EPS))
    alone = LatentSpace(rounds=1, search_steps=30).run(pipeline, x[2:3], y[2:3], EPS)
    torch.testing.assert_close(alone, first[2:3], atol=1e-5, rtol=0)


def test_latent_space_leaves_inputs_the_defense_already_misclassifies(setting):
    pipeline, x, _ = setting
    wrong = torch.ones(2, dtype=torch.long)  # labels the projection of these class-0 inputs does not give
    assert torch.equal(LatentSpace(rounds=1, search_steps=5).run(pipeline, x[:2], wrong, EPS), x[:2])


def test_latent_space_says_where_it_runs(setting):
    pipeline, x, y = setting
    attack = ATTACKS.get("latent-space").factory
    gan, robust, squeeze = (build_defense(n) for n in ("invert-and-classify", "invert-and-classify-robust",
                                                       "feature-squeezing"))
    assert attack.applies_to(gan, Threat.ADAPTIVE) is None and attack.applies_to(robust, Threat.ADAPTIVE) is None
    assert "--threat adaptive only" in attack.applies_to(gan, Threat.OBLIVIOUS)
    assert "--threat adaptive only" in attack.applies_to(gan, Threat.TRANSFER)
    assert attack.applies_to(squeeze, Threat.ADAPTIVE) == ("'feature-squeezing' does not project onto a GAN "
                                                           "(invert-and-classify or invert-and-classify-robust do)")
    with pytest.raises(CellFailed) as bare:
        attack().run(pipeline.classifier, x, y, EPS)
    assert "\n" not in str(bare.value) and str(bare.value).startswith("latent-space attacks the generator")
    assert "bare classifier" in str(bare.value)
    with pytest.raises(CellFailed, match=r"^latent-space attacks the generator .* has no generator\)$"):
        attack().run(DefendedModel(pipeline.classifier, squeeze), x, y, EPS)


def test_the_unrolled_projection_is_the_defenses_and_differentiates_it(setting):
    pipeline, x, _ = setting
    generator, cfg = pipeline.defense.generator, pipeline.defense.projection
    _, _, images, errors = project_all(generator, x, cfg)
    unrolled_images, unrolled_errors = project_unrolled(generator, x.clone().requires_grad_(True), cfg)
    assert torch.equal(unrolled_images.detach(), images) and torch.equal(unrolled_errors.detach(), errors)
    # its gradient in x is the true one: finite differences through a short descent, in double precision
    short = Projection(steps=4, restarts=2, lr=1.0)
    x64 = x[:2].double().clamp(0.05, 0.95).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda inputs: project_unrolled(generator, inputs, short)[1], (x64,))


def test_pgd_unrolled_fools_the_real_projection_where_bpda_pgd_does_not(setting):
    pipeline, x, y = setting
    runs = {name: generate(ATTACKS.get(name).factory(), pipeline, x, y, (EPS,), seed=0, batch_size=len(x),
                           device=CPU).per_eps[0]
            for name in ("pgd-unrolled", "pgd")}
    for name, adv in runs.items():
        check_adversarial(x, adv, Norm.LINF, EPS, name)
    unrolled, pgd = _accuracy(pipeline, runs["pgd-unrolled"], y), _accuracy(pipeline, runs["pgd"], y)
    print(f"accuracy through the projection at eps {EPS}: pgd-unrolled {unrolled:.2f}, BPDA PGD {pgd:.2f}")
    assert unrolled <= 0.25 and pgd >= unrolled + 0.5


def test_pgd_unrolled_does_not_depend_on_the_batch(setting):
    pipeline, x, y = setting
    attack = ATTACKS.get("pgd-unrolled").factory(steps=3)
    together = attack.run(pipeline, x[:4], y[:4], EPS)
    alone = attack.run(pipeline, x[2:3], y[2:3], EPS)
    assert torch.equal(together[2:3], alone)
