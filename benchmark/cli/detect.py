"""``bench detect``: PixelCNN likelihood as a detector of adversarial inputs (see :mod:`benchmark.engine.detection`).

Only click is imported at module level: the machinery loads when the command runs.
"""
from __future__ import annotations

from pathlib import Path

import click

from benchmark.cli.common import common_model_options


@click.command("detect")
@click.option("--dataset", default="mnist5k", show_default=True,
              help="Registered data set (see `bench list datasets`).")
@click.option("--model", default="resnet", show_default=True, help="Undefended classifier that the attacks target.")
@click.option("--attack", "attack_spec", default="all", show_default=True,
              help="Attacks: a name, a list 'fgsm,bim', 'all', 'all,-lbfgs', wildcards such as 'pgd*'.")
@click.option("--eps", "eps_values", multiple=True,
              help="Budgets in [0,1] pixel space, repeatable or comma-separated: 8/255 or 0.0314 "
              "(default: the paper's).")
@click.option("--n", type=int, default=100, show_default=True,
              help="Number of test points (the first n, as in `bench run`).")
@click.option("--pixelcnn-size", type=click.Choice(["tiny", "small", "large"]), default="small", show_default=True,
              help="PixelCNN preset (tiny: seconds to train, for tests).")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True, help="Records go to RESULTS_DIR/detection, figures to RESULTS_DIR/figures.")
@click.option("--batch-size", type=click.IntRange(min=1), default=250, show_default=True,
              help="Keep `bench run`'s value to reuse its cached adversarial inputs.")
@common_model_options
def detect(dataset, model, attack_spec, eps_values, n, pixelcnn_size, results_dir, batch_size, data_root, download,
           device, seed, threads, quiet) -> None:
    """Tell adversarial from clean inputs by PixelCNN bits/dim: ROC AUC per attack and budget (oblivious attacks).

    Writes RESULTS_DIR/detection/DATASET/MODEL.json (merged with an earlier run's attacks) and three figures.
    """
    from tabulate import tabulate

    from benchmark.cli.common import report_broken_plugins, setup
    from benchmark.core.budgets import format_eps, parse_eps_list
    from benchmark.core.registry import ATTACKS
    from benchmark.engine.detection import (
        DetectPlan,
        draw_detection_figures,
        summary_rows,
    )
    from benchmark.engine.detection import detect as run_detection
    from benchmark.store.paths import FIGURES_SUBDIR

    setup(quiet, threads)
    report_broken_plugins()
    plan = DetectPlan(dataset=dataset, model=model, attacks=tuple(ATTACKS.select(attack_spec)),
                      eps=parse_eps_list(eps_values) if eps_values else None, n=n, seed=seed, device=device,
                      results_dir=results_dir, batch_size=batch_size, data_root=data_root, download=download,
                      pixelcnn_size=pixelcnn_size)
    record, path = run_detection(plan)
    click.echo(f"wrote {path}")
    for figure in draw_detection_figures(record, Path(results_dir) / FIGURES_SUBDIR):
        click.echo(f"wrote {figure}")
    budgets = ", ".join(format_eps(e) for e in record["config"]["eps"])
    click.echo(f"PixelCNN {record['pixelcnn']['key']} (test bits/dim {record['pixelcnn']['test_bpd']:.3f}); "
               f"budgets {budgets}")
    click.echo(tabulate(summary_rows(record), headers=["attack", "AUC", "adversarial used", "mean bits/dim"],
                        tablefmt="simple", disable_numparse=True))
