"""``bench examples``: purified examples as a figure."""
from __future__ import annotations

from pathlib import Path

import click

from benchmark.cli.common import common_model_options, setup


@click.command()
@click.option("--dataset", default="mnist5k", show_default=True)
@click.option("--model", default="resnet", show_default=True)
@click.option("--defense", "defense_name", default="pixeldefend", show_default=True, help="A purifying defense.")
@click.option("--attack", "attack_name", default="fgsm", show_default=True)
@click.option("--eps", "eps_value", default="25/255", show_default=True, help="The attack's budget.")
@click.option("--n", type=click.IntRange(1, 16), default=8, show_default=True, help="Images shown.")
@click.option("--figures", type=click.Path(file_okay=False, path_type=Path), default=Path("results/figures"),
              show_default=True)
@common_model_options
def examples(dataset, model, defense_name, attack_name, eps_value, n, figures, data_root, download, device, seed,
             quiet, threads) -> None:
    """Figure: clean, adversarial and defended images with the classifier's labels and confidences."""
    setup(quiet, threads)
    from benchmark.core.budgets import parse_eps
    from benchmark.engine.examples import examples_figure

    path = examples_figure(dataset, model, defense_name, attack_name, parse_eps(eps_value), n=n, seed=seed,
                           device=device, figures=figures, data_root=data_root)
    click.echo(f"wrote {path}")
