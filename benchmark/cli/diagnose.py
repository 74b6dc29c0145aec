"""``bench diagnose``: how much of a perturbation survives a purifier."""
from __future__ import annotations

import click

from benchmark.cli.common import common_model_options, setup


@click.command()
@click.option("--dataset", default="mnist5k", show_default=True)
@click.option("--model", default="resnet", show_default=True)
@click.option("--defense", "defense_name", default="pixeldefend", show_default=True, help="A purifying defense.")
@click.option("--attack", "attack_name", default="pgd", show_default=True)
@click.option("--threat", type=click.Choice(["oblivious", "adaptive"]), default="adaptive", show_default=True)
@click.option("--eps", "eps_values", multiple=True, help="Budgets (default: the data set's).")
@click.option("--n", type=click.IntRange(1), default=20, show_default=True, help="Test points.")
@click.option("--bpda", type=click.Choice(["declared", "soft"]), default="declared", show_default=True,
              help="The attacker's BPDA approximation: the defense's own, or PixelDefend's smooth stand-in.")
@common_model_options
def diagnose(dataset, model, defense_name, attack_name, threat, eps_values, n, bpda, data_root, download, device,
             seed, quiet, threads) -> None:
    """How much of an attack's perturbation survives a purifier (undone sub-pixels, surviving L1 share, median
    L-infinity size)."""
    setup(quiet, threads)
    from tabulate import tabulate

    from benchmark.core.budgets import parse_eps_list
    from benchmark.core.registry import ATTACKS, DEFENSES
    from benchmark.core.vocab import Threat
    from benchmark.data.dataset import load_dataset
    from benchmark.engine.diagnose import purification_survival

    DEFENSES.select(defense_name)
    ATTACKS.get(attack_name)
    eps = parse_eps_list(eps_values) if eps_values else load_dataset(dataset, data_root, download).default_eps
    rows = purification_survival(dataset, model, defense_name, attack_name, tuple(eps), n, Threat(threat), seed=seed,
                                 device=device, data_root=data_root, bpda=bpda)
    click.echo(tabulate(rows, headers="keys", tablefmt="github"))
