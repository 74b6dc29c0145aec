"""``bench perf``: the speed benchmarks.

Every command times with :mod:`benchmark.perf.timing` and saves (``--save DIR``) one JSON file per table,
``DIR/<name>.json``: the rows, the machine they were measured on (threads, load before and after, OpenMP settings,
device, CPU), the command that regenerates the file and the targets beside the numbers. ``bench perf render`` turns
the saved files into docs/performance.md.
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from benchmark.cli.common import setup

LOAD_BEFORE = "bench.perf.load_before"


@click.group()
@click.pass_context
def perf(ctx: click.Context) -> None:
    """Speed benchmarks: ratios measured in one run on this machine (docs/performance.md: `bench perf render`)."""
    from benchmark.perf.timing import load_average

    ctx.meta[LOAD_BEFORE] = load_average()  # before the subcommand's work: saved beside its numbers


def _command(ctx: click.Context) -> str:
    """The subcommand with every option spelled out (defaults too): what regenerates its files."""
    words = ["bench", "perf", ctx.info_name or ctx.command.name or ""]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        value = ctx.params.get(param.name)
        if value is None or value is False:
            continue
        flag = max(param.opts, key=len)  # the long form
        if param.is_flag:
            words.append(flag)
        else:
            for v in (value if param.multiple else (value,)):
                words += [flag, str(v)]
    return " ".join(shlex.quote(w) for w in words)


def _emit_perf(name: str, rows: list[dict], save: Path | None, extra: dict[str, Any] | None = None,
               device: Any = None) -> None:
    """Print the rows as a table with the machine they ran on; with ``save``, write the report to save/NAME.json."""
    from tabulate import tabulate

    from benchmark.perf.render import machine_line
    from benchmark.perf.timing import dumps, report
    from benchmark.store.fileio import atomic_write_text

    ctx = click.get_current_context()
    data = report(name, rows, {"command": _command(ctx), **(extra or {})}, ctx.meta.get(LOAD_BEFORE), device)
    click.echo(tabulate(rows, headers="keys", tablefmt="github"))
    click.echo(machine_line(data["machine"]))
    if save is not None:
        atomic_write_text(save / f"{name}.json", dumps(data))
        click.echo(f"saved {save / f'{name}.json'}")


def _step(message: str) -> None:
    click.echo(f"bench perf: {message}", err=True)


_save_option = click.option("--save", type=click.Path(file_okay=False, path_type=Path), default=None,
                            help="Also write the measurements as JSON into this folder (e.g. results/perf).")
_threads_option = click.option("--threads", type=click.IntRange(min=1), default=None,
                               help="torch threads of the measurement (default: torch's, e.g. from OMP_NUM_THREADS); "
                                    "restored afterwards and saved with the numbers.")


@perf.command()
@click.option("--n", type=int, default=200, show_default=True)
@click.option("--repeats", type=int, default=3, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True,
              help="Untimed calls of each side before the timed rounds.")
@click.option("--device", default="auto", show_default=True)
@_threads_option
@_save_option
def overhead(n: int, repeats: int, warmup: int, device: str, threads: int | None, save: Path | None) -> None:
    """Harness overhead over calling foolbox / torchattacks directly (FGSM, BIM, CW), mnist5k ResNet."""
    setup(True)
    from benchmark.perf.grid import harness_overhead
    from benchmark.perf.timing import pinned_threads

    with pinned_threads(threads):
        rows = harness_overhead(n=n, repeats=repeats, device=device, warmup=warmup)
        _emit_perf("overhead", rows, save, {"targets": {"overhead_pct": "<= 5"}}, device)


@perf.command()
@click.option("--n", type=int, default=100, show_default=True)
@click.option("--attack", "attack_spec", default="all", show_default=True,
              help="The job's attack selection, e.g. 'all,-square,-autoattack,-pgd-restarts,-pgd-l2'.")
@_save_option
def grid(n: int, attack_spec: str, save: Path | None) -> None:
    """Wall time of `bench run --defense feature-squeezing --attack all` on mnist5k, cold and cached, per attack."""
    setup(True)
    from benchmark.perf.grid import grid_time

    summary, per_attack = grid_time(n=n, attack=attack_spec)
    _emit_perf("grid", [summary], save)
    _emit_perf("grid_attacks", per_attack, save)


@perf.command("first-command")
@click.option("--n", type=click.IntRange(min=1), default=100, show_default=True, help="Test points (the job's: 100).")
@click.option("--attack", "attack_spec", default="paper", show_default=True,
              help="The job's attacks (the targets apply to 'paper' with n=100 only).")
@click.option("--all", "include_all", is_flag=True, help="Also time `--attack all` from an empty cache (long).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="OMP_NUM_THREADS (and --threads) of each `bench run` (default: what a user's run gets).")
@_save_option
def first_command(n: int, attack_spec: str, include_all: bool, threads: int | None, save: Path | None) -> None:
    """The README's main job (`bench run --defense feature-squeezing --attack paper`, mnist5k) as a user's process:
    cold (empty cache, shipped weights), warm (caches kept) and with the attacks recomputed; targets 300 s and 90 s."""
    setup(True)
    from benchmark.perf.jobs import first_command as measure

    rows = measure(n=n, attack=attack_spec, include_all=include_all, threads=threads, progress=_step)
    child = {"OMP_NUM_THREADS": str(threads) if threads is not None else os.environ.get("OMP_NUM_THREADS"),
             "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}  # what each `bench run` process was given
    _emit_perf("first_command", rows, save, {"child_env": child})


@perf.command("threads")
@click.option("--n", type=click.IntRange(1, 360), default=360, show_default=True, help="Test points of each cell.")
@click.option("--attack", "attack_spec", default="fgsm,bim,pgd", show_default=True)
@click.option("--policy", "policies", default="PASSIVE,ACTIVE", show_default=True,
              help="OMP_WAIT_POLICY values, comma-separated, one row each (PASSIVE is the CLI's default; 'unset' "
                   "leaves the variable out, so that the CLI's own default applies).")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="OMP_NUM_THREADS (and --threads) of each process.")
@click.option("--processes", type=click.IntRange(min=2), default=2, show_default=True,
              help="Copies of the grid run at once.")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="Interleaved rounds; the best time of each is kept.")
@_save_option
def threads_perf(n: int, attack_spec: str, policies: str, threads: int, processes: int, repeats: int,
                 save: Path | None) -> None:
    """A small digits grid alone against copies of it run at once, per OpenMP wait policy (target: ratio <= 2)."""
    setup(True)
    from benchmark.perf.jobs import concurrency

    chosen = tuple(p.strip() for p in policies.split(",") if p.strip())
    rows, note = concurrency(n=n, attacks=attack_spec, policies=chosen, threads=threads, processes=processes,
                             repeats=repeats, progress=_step)
    _emit_perf("threads", rows, save, {**note, "targets": {"ratio": "<= 2"}})


@perf.command("api")
@click.option("--dataset", default="digits", show_default=True)
@click.option("--defense", "defense_spec", default="none", show_default=True)
@click.option("--attack", "attack_spec", default="fgsm,bim,pgd", show_default=True)
@click.option("--n", type=click.IntRange(min=1), default=360, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Interleaved rounds; the best time of each side is kept.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True,
              help="Untimed calls of each side before the timed rounds.")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="BENCH_CACHE to use (default: a private one, filled by an untimed first call).")
@_threads_option
@_save_option
def api_perf(dataset: str, defense_spec: str, attack_spec: str, n: int, repeats: int, warmup: int,
             cache: Path | None, threads: int | None, save: Path | None) -> None:
    """benchmark.evaluate() against the equivalent `bench run`, same cells, warm cache, in this process (<= 1.05)."""
    setup(True)
    from benchmark.perf.api import TARGET_RATIO, api_overhead
    from benchmark.perf.timing import pinned_threads

    with pinned_threads(threads):
        row = api_overhead(dataset=dataset, defense=defense_spec, attacks=attack_spec, n=n, repeats=repeats,
                           warmup=warmup, threads=threads, cache=cache)
        _emit_perf("api", [row], save, {"targets": {"ratio": f"<= {TARGET_RATIO}"}})


@perf.command("render")
@click.option("--perf-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results/perf"),
              show_default=True, help="The saved measurements (*.json).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("docs/performance.md"),
              show_default=True)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when OUTPUT differs from what would be written.")
def render_perf(perf_dir: Path, output: Path, check: bool) -> None:
    """Write docs/performance.md from the saved measurements: one section per file, with its command and machine."""
    from benchmark.perf.render import render
    from benchmark.store.fileio import atomic_write_text

    if not perf_dir.is_dir():
        from benchmark.core.errors import BenchError

        raise BenchError(f"--perf-dir {perf_dir} is not a folder")
    text = render(perf_dir)
    if check:
        current = output.read_text(encoding="utf-8") if output.is_file() else None
        if current != text:
            click.echo(f"bench: {output} is out of date; run `bench perf render`", err=True)
            sys.exit(1)
        click.echo(f"{output} is up to date")
        return
    atomic_write_text(output, text)
    click.echo(f"wrote {output}")


@perf.command("attacks")
@click.option("--attack", "attack_names", default="cw,deepfool,gaussian-blur,fgm,uniform-noise", show_default=True,
              help="Comma-separated attacks that have a reference (the implementation and settings they replaced).")
@click.option("--n", type=int, default=100, show_default=True)
@click.option("--repeats", type=int, default=1, show_default=True, help="Interleaved runs; the best time is kept.")
@click.option("--warmup", type=click.IntRange(min=0), default=0, show_default=True,
              help="Untimed runs of each side first (each takes seconds to minutes).")
@click.option("--device", default="auto", show_default=True)
@_threads_option
@_save_option
def attacks_perf(attack_names: str, n: int, repeats: int, warmup: int, device: str, threads: int | None,
                 save: Path | None) -> None:
    """Cheaper attacks against what they replaced: time, success, median size, accuracy per budget (mnist5k ResNet)."""
    setup(True)
    from benchmark.perf.attacks import compare_attacks
    from benchmark.perf.timing import pinned_threads

    names = tuple(a.strip() for a in attack_names.split(",") if a.strip())
    with pinned_threads(threads):
        rows = compare_attacks(names, n=n, repeats=repeats, device=device, warmup=warmup)
        _emit_perf("attacks", rows, save, {"targets": {"not_weaker": "yes"}}, device)


@perf.command("ray")
@click.option("--n", type=click.IntRange(1, 360), default=360, show_default=True, help="Test points of each cell.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@_save_option
def ray_perf(n: int, workers: int, save: Path | None) -> None:
    """Eight cheap cells (digits) on a local Ray cluster of WORKERS against the same grid run serially."""
    setup(True)
    from benchmark.perf.ray_speedup import ray_speedup

    _emit_perf("ray", [ray_speedup(n=n, workers=workers)], save, {"targets": {"ratio": "<= 0.7"}})


@perf.command("pixeldefend")
@click.option("--case", "cases", multiple=True, default=("mnist5k", "32x32x3"), show_default=True,
              help="A data set with a trained PixelCNN, or 32x32x3 (untrained network of the default size).")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Images purified at once (default: the defense's batch_size).")
@click.option("--reference-rows", type=int, default=2, show_default=True,
              help="Rows the reference purifies (its time is scaled to the image); 0 runs it in full.")
@click.option("--device", default="auto", show_default=True)
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder with the data sets of the cases (default: $BENCH_DATA or the cache).")
@_threads_option
@_save_option
def pixeldefend_perf(cases: tuple[str, ...], batch: int | None, reference_rows: int, device: str, data_root: str | None,
                     threads: int | None, save: Path | None) -> None:
    """Faithful purification against the one-pass-per-sub-pixel reference; PixelCNN training speed."""
    setup(True)
    from benchmark.perf.pixeldefend import pixelcnn_training_speed, pixeldefend_speed
    from benchmark.perf.timing import pinned_threads

    with pinned_threads(threads):
        rows = [pixeldefend_speed(c, batch=batch, reference_rows=reference_rows, device=device, data_root=data_root)
                for c in cases]
        _emit_perf("pixeldefend", rows, save, {"targets": {"speedup": ">= 500", "fast_over_forward": "<= 2"}},
                   device)
        _emit_perf("pixelcnn_training", [pixelcnn_training_speed(device=device)], save, device=device)


@perf.command("network")
@click.option("--dataset", default="mnist5k", show_default=True)
@click.option("--model", "model_names", default="resnet,vgg", show_default=True, help="Comma-separated classifiers.")
@click.option("--n", type=int, default=100, show_default=True, help="Images per pass.")
@click.option("--steps", type=int, default=10, show_default=True, help="Timed passes; the fastest is reported.")
@click.option("--device", default="auto", show_default=True)
@_threads_option
@_save_option
def network_perf(dataset: str, model_names: str, n: int, steps: int, device: str, threads: int | None,
                 save: Path | None) -> None:
    """Cost of one forward and backward pass of a classifier, batch norms folded into convolutions or not."""
    setup(True)
    from benchmark.perf.network import network_step_cost
    from benchmark.perf.timing import pinned_threads

    names = [m.strip() for m in model_names.split(",") if m.strip()]
    with pinned_threads(threads):
        _emit_perf("network", network_step_cost(dataset, names, n=n, steps=steps, device=device), save,
                   device=device)


@perf.command("training")
@click.option("--dataset", default="cifar10", show_default=True)
@click.option("--model", "model_names", default="resnet,vgg", show_default=True, help="Comma-separated classifiers.")
@click.option("--defense", "defense_names", default="none,adv-fgsm,adv-bim,label-smoothing", show_default=True,
              help="Comma-separated training-time defenses (their losses set the step's cost).")
@click.option("--pixelcnn/--no-pixelcnn", default=True, show_default=True, help="Also the PixelCNN (small preset).")
@click.option("--steps", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed steps after an untimed first one; their mean is reported.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder with the data set (default: $BENCH_DATA or the cache).")
@click.option("--device", default="auto", show_default=True)
@_threads_option
@_save_option
def training_perf(dataset: str, model_names: str, defense_names: str, pixelcnn: bool, steps: int,
                  data_root: str | None, device: str, threads: int | None, save: Path | None) -> None:
    """Minutes per epoch of each classifier (per training defense) and of the PixelCNN, at the default configs."""
    setup(True)
    from benchmark.perf.timing import pinned_threads
    from benchmark.perf.training import classifier_epoch_cost, pixelcnn_epoch_cost

    def names(text: str) -> list[str]:
        return [m.strip() for m in text.split(",") if m.strip()]

    with pinned_threads(threads):
        rows = classifier_epoch_cost(dataset, names(model_names), names(defense_names), steps, device, data_root)
        if pixelcnn:
            rows.append(pixelcnn_epoch_cost(dataset, steps, device=device, data_root=data_root))
        _emit_perf(f"training_{dataset}", rows, save, device=device)


@perf.command("adaptive")
@click.option("--dataset", default="mnist5k", show_default=True)
@click.option("--model", default="resnet", show_default=True)
@click.option("--defense", "defense_spec", default="all", show_default=True,
              help="Defenses, as `bench run` takes them ('all', a list, compositions with '+').")
@click.option("--n", type=int, default=32, show_default=True, help="Images per step.")
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True,
              help="Timed steps after an untimed first one; their mean is reported.")
@click.option("--device", default="auto", show_default=True)
@_threads_option
@_save_option
def adaptive_perf(dataset: str, model: str, defense_spec: str, n: int, steps: int, device: str, threads: int | None,
                  save: Path | None) -> None:
    """Cost of one adaptive attack step (forward and backward through the defended pipeline), ms per image."""
    setup(True)
    from benchmark.core.registry import DEFENSES
    from benchmark.perf.adaptive import adaptive_step_cost
    from benchmark.perf.timing import pinned_threads

    names = DEFENSES.select(defense_spec)
    with pinned_threads(threads):
        rows = adaptive_step_cost(dataset, model, names, n=n, steps=steps, device=device)
        _emit_perf("adaptive", rows, save, device=device)


@perf.command("gan")
@click.option("--case", "cases", multiple=True, default=("28x28x1", "32x32x3"), show_default=True,
              help="HxWxC (untrained networks of the default size) or a data set with a trained GAN.")
@click.option("--n", type=click.IntRange(min=1), default=16, show_default=True, help="Images per case.")
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True, help="Projection steps L.")
@click.option("--restarts", type=click.IntRange(min=1), default=10, show_default=True, help="Projection restarts R.")
@click.option("--iterations", type=click.IntRange(min=1), default=100, show_default=True,
              help="Deep image prior iterations.")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="Interleaved rounds of batched and per-image runs; the best time of each is kept.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="torch threads of the work (the peak it is compared with is always one thread's).")
@click.option("--device", default="auto", show_default=True)
@_save_option
def gan_perf(cases, n, steps, restarts, iterations, repeats, threads, device, save) -> None:
    """Projection onto a GAN and deep image prior fits: batched against one image at a time, same outputs, and the
    per-image loop's share of the one-thread matrix-product peak measured in the same run."""
    setup(True)
    from benchmark.perf.gan import dip_speed, one_thread_peak, projection_speed
    from benchmark.perf.timing import pinned_threads

    peak = one_thread_peak(device)
    with pinned_threads(threads):
        rows = [projection_speed(c, n, steps, restarts, device, peak, repeats) for c in cases]
        _emit_perf("gan_projection", rows, save, device=device)
        rows = [dip_speed(c, n, iterations, device, peak, repeats) for c in cases]
        _emit_perf("dip", rows, save, device=device)
