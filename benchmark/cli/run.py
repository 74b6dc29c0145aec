"""``bench run``: evaluate defenses against attacks, one record per cell."""
from __future__ import annotations

import logging
from pathlib import Path

import click

from benchmark.cli.common import EXECUTORS, THREATS, common_model_options, report_broken_plugins, setup

log = logging.getLogger("benchmark.cli")


@click.command()
@click.option("--dataset", default="mnist5k", show_default=True,
              help="Registered data set (see `bench list datasets`), or folder:PATH for PATH/train/<class>/ and "
                   "PATH/test/<class>/ images.")
@click.option("--model", default="resnet", show_default=True, help="Classifier architecture (see `bench list models`).")
@click.option("--defense", "defense_spec", default="none", show_default=True,
              help="Defenses: a name, a list 'a,b', 'all', 'all,-x', wildcards; compose with '+' (adv-fgsm+feature-squeezing).")
@click.option("--attack", "attack_spec", default="all", show_default=True,
              help="Attacks: a name, a list 'fgsm,bim', 'all', 'all,-lbfgs', wildcards such as 'pgd*'.")
@click.option("--eps", "eps_values", multiple=True,
              help="Budgets in [0,1] pixel space, repeatable or comma-separated: 8/255 or 0.0314 (default: the paper's).")
@click.option("--n", type=int, default=100, show_default=True, help="Number of test points.")
@click.option("--threat", type=click.Choice(THREATS), default="oblivious", show_default=True,
              help="oblivious: attack the classifier; adaptive: the whole defended pipeline (BPDA, EOT); "
                   "transfer: a separately trained substitute classifier.")
@click.option("--eot-samples", type=click.IntRange(min=1), default=10, show_default=True,
              help="Adaptive, randomised defenses: draws of the pipeline averaged per gradient (EOT).")
@click.option("--eval-draws", type=click.IntRange(min=1), default=10, show_default=True,
              help="Adaptive, randomised defenses: draws per evaluated input; correct only if right in all (the "
                   "record keeps the mean over draws too).")
@click.option("--real-forward", is_flag=True,
              help="Adaptive: run each purifier itself in every gradient step, not the cheaper stand-in some offer "
                   "(bpda_forward); slower, and a separate record that shows what the stand-in costs the attack.")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True, help="Where records are written (and looked up to resume).")
@click.option("--batch-size", type=click.IntRange(min=1), default=250, show_default=True)
@click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
              help="local: cells one after the other in this process; ray: each cell a Ray task "
                   "(pip install -e \".[ray]\").")
@click.option("--address", default=None,
              help="Ray: the cluster to join (e.g. 10.0.0.5:6379 or auto); default: start one on this machine.")
@click.option("--gpus-per-cell", type=click.FloatRange(min=0), default=None,
              help="Ray: GPUs each cell asks for (fractions share one); default 1 when the cluster has GPUs, else 0.")
@click.option("--cell-retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="Ray: times a cell whose worker died is run again before it is reported as failed.")
@click.option("--worker-cache", default=None,
              help="Ray: the workers' cache folder (BENCH_CACHE: models, adversarial inputs), e.g. on a shared file "
                   "system; default: each worker's own. Checkpoints reach workers through Ray's object store anyway.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Evaluate --model with these weights (a .safetensors file or a .pt state dict) instead of the "
                   "project's training; records name the weights' SHA-256.")
@common_model_options
def run(dataset, model, defense_spec, attack_spec, eps_values, n, threat, eot_samples, eval_draws, real_forward,
        results_dir, batch_size, executor, address, gpus_per_cell, cell_retries, worker_cache, weights, data_root,
        download,
        device, seed, quiet, threads) -> None:
    """Evaluate defenses against attacks; one record per cell under RESULTS_DIR (finished cells are skipped).

    Defenses and attacks take options in parentheses (`bench list defenses --options`):
    --defense 'jpeg(quality=50)+pixeldefend(eps_defend=16/255)' --attack 'pgd(steps=200)'.
    """
    setup(quiet, threads)
    import time

    from benchmark.cli.stops import sigterm_raises, stopped

    click.get_current_context().call_on_close(sigterm_raises())  # SIGTERM ends the run like Ctrl-C, exit 143

    from benchmark.api.evaluate import evaluate
    from benchmark.core.errors import BenchError, WriteFailed
    from benchmark.engine.grid_progress import summary_line

    report_broken_plugins()
    if real_forward and threat != "adaptive":
        raise BenchError(f"--real-forward only applies to --threat adaptive, not {threat}")
    ray_only = {"--address": address, "--gpus-per-cell": gpus_per_cell, "--worker-cache": worker_cache}
    if executor == "local" and any(v is not None for v in ray_only.values()):
        given = [k for k, v in ray_only.items() if v is not None]
        verb = "needs" if len(given) == 1 else "need"
        raise BenchError(f"{' and '.join(given)} {verb} --executor ray (the local executor runs in this process)")
    if executor == "ray":
        from benchmark.engine.ray_executor import RayExecutor

        runner = RayExecutor(address=address, gpus_per_cell=gpus_per_cell, retries=cell_retries,
                             worker_cache=worker_cache)
    else:
        runner = None
    started = time.perf_counter()
    try:
        results = evaluate(model, defense=defense_spec, dataset=dataset, attacks=attack_spec,
                           eps=list(eps_values) or None, threat=threat, n=n, seed=seed, device=device,
                           results_dir=results_dir, batch_size=batch_size, progress=not quiet, weights=weights,
                           data_root=data_root, download=download, executor=runner, eot_samples=eot_samples,
                           eval_draws=eval_draws, real_forward=real_forward)
    except WriteFailed as exc:  # a full disk: the table of the finished cells, then one line (exit 1)
        if exc.results is not None:
            click.echo(exc.results.table())
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C (exit 130) or SIGTERM (exit 143): one line, finished cells kept
        stopped(exc, results_dir)
    click.echo(results.table())
    if not quiet:
        click.echo(f"bench: {summary_line(results.cells, time.perf_counter() - started)}", err=True)
    if results.failed:
        for c in results.failed:
            click.echo(f"bench: error: cell {c.defense} x {c.attack} failed: {c.message}", err=True)
        raise SystemExit(2)
