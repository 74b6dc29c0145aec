"""The ``bench`` command. Subcommands import their machinery lazily: ``bench --help`` never imports torch.

User mistakes (a :class:`benchmark.errors.BenchError`) print one line and exit with code 2; finished work is kept.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click

THREATS = ("oblivious", "adaptive", "transfer")
EXECUTORS = ("local", "ray")
log = logging.getLogger(__name__)


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"bench: error: {self.message}", err=True)


class BenchGroup(click.Group):
    """Turns BenchError (raised anywhere below) into one line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        from .errors import BenchError

        try:
            return super().invoke(ctx)
        except BenchError as exc:
            raise UserError(str(exc)) from None


def _setup(quiet: bool) -> None:
    from .progress import set_quiet

    set_quiet(quiet)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("bench: %(message)s"))
    root = logging.getLogger("benchmark")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False


def _report_broken_plugins() -> None:
    from .registry import REGISTRIES

    for kind, registry in REGISTRIES.items():
        registry.names()  # loads entry points
        for name, why in sorted(registry.broken.items()):
            click.echo(f"bench: warning: {kind[:-1]} plugin {name!r} failed to load ({why}); continuing without it",
                       err=True)


@click.group(cls=BenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="defensebench", prog_name="bench")
def main() -> None:
    """DefenseBench: evaluate defenses against adversarial examples and regenerate the leaderboard.

    \b
    bench run --defense feature-squeezing --attack all
    bench leaderboard
    """


def _common_model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--data-root", type=click.Path(file_okay=False), default=None,
                     help="Folder with torchvision-layout data (default: $BENCH_DATA or the cache).")(f)
    f = click.option("--download", is_flag=True, help="Let torchvision download a missing data set (needs internet).")(f)
    f = click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda (auto takes CUDA when present).")(f)
    f = click.option("--seed", type=int, default=0, show_default=True, help="Seed of training and attacks.")(f)
    f = click.option("--quiet", "-q", is_flag=True, envvar="BENCH_QUIET", show_envvar=True,
                     help="No progress bars or info messages.")(f)
    return f


@main.command()
@click.option("--dataset", default="mnist5k", show_default=True, help="Registered data set (see `bench list datasets`).")
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
@click.option("--eval-draws", type=click.IntRange(min=1), default=5, show_default=True,
              help="Adaptive, randomised defenses: draws per evaluated input; correct only if correct in all.")
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
@_common_model_options
def run(dataset, model, defense_spec, attack_spec, eps_values, n, threat, eot_samples, eval_draws, real_forward,
        results_dir, batch_size, executor, address, gpus_per_cell, cell_retries, worker_cache, data_root, download,
        device, seed, quiet) -> None:
    """Evaluate defenses against attacks; one record per cell under RESULTS_DIR (finished cells are skipped)."""
    _setup(quiet)
    import time

    from .budgets import parse_eps_list
    from .errors import BenchError
    from .grid_progress import summary_line
    from .registry import ATTACKS, DEFENSES
    from .runner import RunPlan
    from .runner import run as run_grid
    from .threats import ThreatOptions
    from .vocab import Threat

    _report_broken_plugins()
    if real_forward and threat != "adaptive":
        raise BenchError(f"--real-forward only applies to --threat adaptive, not {threat}")
    defenses = tuple(DEFENSES.select(defense_spec))
    plan = RunPlan(
        dataset=dataset, model=model, defenses=defenses,
        attacks=_applicable_attacks(attack_spec, defenses, Threat(threat)),
        eps=parse_eps_list(eps_values) if eps_values else None,
        n=n, threat=Threat(threat), threat_options=ThreatOptions(eot_samples, eval_draws, not real_forward),
        seed=seed, device=device,
        results_dir=results_dir, batch_size=batch_size, data_root=data_root, download=download,
    )
    ray_only = {"--address": address, "--gpus-per-cell": gpus_per_cell, "--worker-cache": worker_cache}
    if executor == "local" and any(v is not None for v in ray_only.values()):
        given = [k for k, v in ray_only.items() if v is not None]
        verb = "needs" if len(given) == 1 else "need"
        raise BenchError(f"{' and '.join(given)} {verb} --executor ray (the local executor runs in this process)")
    if executor == "ray":
        from .ray_executor import RayExecutor

        runner = RayExecutor(address=address, gpus_per_cell=gpus_per_cell, retries=cell_retries,
                             worker_cache=worker_cache)
    else:
        from .executors import LocalExecutor

        runner = LocalExecutor()
    started = time.perf_counter()
    results = run_grid(plan, executor=runner)
    click.echo(_results_table(results))
    if not quiet:
        click.echo(f"bench: {summary_line(results, time.perf_counter() - started)}", err=True)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        for r in failed:
            click.echo(f"bench: error: cell {r.defense} x {r.attack} failed: {r.message}", err=True)
        raise SystemExit(2)


def _applicable_attacks(spec: str, defense_names: tuple[str, ...], threat) -> tuple[str, ...]:
    """The selected attacks, less those that ``all``, a group or a wildcard brought in but that apply to none of the
    defenses under this threat model (each left out with a warning)."""
    from .defense import build_defense
    from .errors import BenchError
    from .registry import ATTACKS

    chosen, named = ATTACKS.select(spec), ATTACKS.named(spec)
    defenses = [build_defense(d) for d in defense_names]
    kept = []
    for name in chosen:
        reasons = [ATTACKS.get(name).factory.applies_to(d, threat) for d in defenses]
        if name not in named and all(reasons):
            log.warning("leaving out %s: %s", name, reasons[0])
        else:
            kept.append(name)
    if not kept:
        raise BenchError(f"no attack of {spec!r} applies to {', '.join(defense_names)} under --threat {threat.value}")
    return tuple(kept)


def _results_table(results) -> str:
    from tabulate import tabulate

    from .budgets import format_eps

    rows = []
    for r in results:
        if r.record is None:
            rows.append([r.defense, r.attack, r.status, "", "", r.message])
            continue
        s, cfg = r.record["summary"], r.record["config"]
        norm = r.record["attack"]["norm"] if r.record["attack"]["kind"] == "fixed-eps" else "linf"
        robust = "  ".join(f"{format_eps(e, norm)}: {100 * a:.1f}" for e, a in zip(cfg["eps"], s["robust_accuracy"]))
        rows.append([r.defense, r.attack, r.status, f"{100 * s['clean_accuracy']:.1f}", robust, f"n={cfg['n']}"])
    return tabulate(rows, headers=["defense", "attack", "status", "clean %", "robust % per budget", ""],
                    tablefmt="simple")


@main.command(name="list")
@click.argument("what", type=click.Choice(["attacks", "defenses", "models", "datasets", "all"]), default="all")
def list_(what: str) -> None:
    """Registered attacks, defenses, models and data sets, with their traits and origin."""
    from tabulate import tabulate

    from .registry import REGISTRIES

    _report_broken_plugins()
    kinds = list(REGISTRIES) if what == "all" else [what]
    for kind in kinds:
        entries = REGISTRIES[kind].entries()
        described = [(e, e.describe()) for e in entries]
        columns = [c for c in ("kind", "norm", "traits", "groups", "shape", "shapes", "classes", "default eps",
                                  "implementation")
                   if any(c in d for _, d in described)]
        rows = [[e.name, *[d.get(c, "") for c in columns], e.origin, d.get("summary") or d.get("source", "")]
                for e, d in described]
        click.echo(f"{kind} ({len(rows)})")
        click.echo(tabulate(rows, headers=["name", *columns, "origin", "summary"], tablefmt="simple"))
        click.echo("")


@main.command()
@click.argument("what", default="classifier")
@click.option("--dataset", default="mnist5k", show_default=True)
@click.option("--model", default="resnet", show_default=True, help="Classifier architecture.")
@click.option("--defense", "defense_name", default="none", show_default=True,
              help="Training-time defense (adv-fgsm, adv-bim, label-smoothing) or none.")
@click.option("--size", default="small", show_default=True,
              help="PixelCNN preset: tiny, small or large; GAN: tiny or small.")
@click.option("--latent", type=click.IntRange(min=1), default=None, help="GAN latent size (default 128).")
@click.option("--figures", type=click.Path(file_okay=False, path_type=Path), default=Path("results/figures"),
              show_default=True, help="Where the PixelCNN's or GAN's sample grid is written.")
@_common_model_options
def train(what, dataset, model, defense_name, size, latent, figures, data_root, download, device, seed, quiet) -> None:
    """Train a model into the store (or report the cached one). WHAT: classifier (default), pixelcnn, gan, or dip
    (tunes the deep image prior's iteration count on validation data)."""
    _setup(quiet)
    from .data import load_dataset
    from .device import resolve_device
    from .errors import BenchError
    from .store import ModelStore

    if what not in ("classifier", "pixelcnn", "gan", "dip"):
        raise BenchError(f"cannot train {what!r}: trainable here: classifier, pixelcnn, gan, "
                         "dip (tunes its iterations)")
    data = load_dataset(dataset, data_root, download)
    if what in ("gan", "dip"):
        from .dip_tuning import train_dip_command
        from .gan_training import train_gan_command

        lines = (train_gan_command(data, resolve_device(device), seed, size, latent, figures) if what == "gan"
                 else train_dip_command(data, resolve_device(device), seed))
        click.echo("\n".join(lines))
        return
    if what == "pixelcnn":
        from .generative import get_pixelcnn, sample_figure

        pixelcnn, meta = get_pixelcnn(data, resolve_device(device), ModelStore(), seed=seed, size=size)
        m = meta["metrics"]
        click.echo(f"pixelcnn ({size}) on {dataset} (seed {seed}): test {m['test_bpd']:.3f} bits/dim, "
                   f"val {m['val_bpd']:.3f}; trained in {m['train_seconds']:.0f} s at "
                   f"{m['train_images_per_second']} images/s on {m['device']}  [{meta['key']}]")
        path = sample_figure(pixelcnn, data, figures / f"{dataset}_pixelcnn_samples.png", seed=seed)
        click.echo(f"wrote {path}")
        return
    _train_classifier(data, model, defense_name, device, seed)


def _train_classifier(data, model: str, defense_name: str, device: str, seed: int) -> None:
    from .defense import build_defense
    from .device import resolve_device
    from .errors import BenchError
    from .store import ModelStore
    from .zoo import get_classifier

    defense = build_defense(defense_name)
    if defense_name != "none" and not defense.trains_classifier:
        from .registry import DEFENSES

        trainable = [e.name for e in DEFENSES.entries() if getattr(e.factory, "trains_classifier", False)]
        raise BenchError(f"defense {defense_name!r} has no training-time part (it acts at inference, in `bench run`); "
                         f"training-time defenses: {', '.join(trainable)}, or none")
    _, meta = get_classifier(data, model, defense, seed, resolve_device(device), ModelStore())
    m = meta["metrics"]
    click.echo(f"{model} on {data.name} ({defense_name}, seed {seed}): test accuracy {100 * m['test_accuracy']:.2f}%, "
               f"val {100 * m['val_accuracy']:.2f}%  [{meta['key']}]")


def _require_records(results_dir: Path) -> None:
    """A mistyped --results-dir must not regenerate an empty leaderboard over the real one."""
    from .records import records_dir

    records = records_dir(results_dir)
    if not records.is_dir():
        raise UserError(f"no records under {records}: point --results-dir at a folder that `bench run` wrote (it holds "
                        "records/)")


@main.command()
@click.option("--check", is_flag=True, help="Exit non-zero when the leaderboard is stale instead of writing it.")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("leaderboard.md"),
              show_default=True)
def leaderboard(check: bool, results_dir: Path, output: Path) -> None:
    """Regenerate leaderboard.md from the records alone (deterministic)."""
    from . import leaderboard as lb

    _require_records(results_dir)

    if check:
        problems = lb.check(results_dir, output)
        if problems:
            for p in problems:
                click.echo(f"bench: {p}", err=True)
            raise SystemExit(1)
        click.echo(f"{output} is up to date with {results_dir}")
        return
    try:
        changed = lb.write(results_dir, output)
    except OSError as exc:
        why = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else (exc.strerror or str(exc))
        raise UserError(f"cannot write {output} ({why}); choose another with --output") from None
    click.echo(f"{'wrote' if changed else 'unchanged:'} {output}")


@main.command()
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True)
def plot(results_dir: Path) -> None:
    """Draw figures from the records into RESULTS_DIR/figures (linked from the leaderboard)."""
    from .detection import detection_figures
    from .plots import accuracy_heatmaps, robustness_curves

    _require_records(results_dir)

    for path in [*accuracy_heatmaps(results_dir), *robustness_curves(results_dir), *detection_figures(results_dir)]:
        click.echo(f"wrote {path}")


@main.command()
@click.option("--dataset", default="mnist5k", show_default=True)
@click.option("--model", default="resnet", show_default=True)
@click.option("--defense", "defense_name", default="pixeldefend", show_default=True, help="A purifying defense.")
@click.option("--attack", "attack_name", default="fgsm", show_default=True)
@click.option("--eps", "eps_value", default="25/255", show_default=True, help="The attack's budget.")
@click.option("--n", type=click.IntRange(1, 16), default=8, show_default=True, help="Images shown.")
@click.option("--figures", type=click.Path(file_okay=False, path_type=Path), default=Path("results/figures"),
              show_default=True)
@_common_model_options
def examples(dataset, model, defense_name, attack_name, eps_value, n, figures, data_root, download, device, seed,
             quiet) -> None:
    """Figure: clean, adversarial and defended images with the classifier's labels and confidences."""
    _setup(quiet)
    from .budgets import parse_eps
    from .examples import examples_figure

    path = examples_figure(dataset, model, defense_name, attack_name, parse_eps(eps_value), n=n, seed=seed,
                           device=device, figures=figures, data_root=data_root)
    click.echo(f"wrote {path}")


@main.group()
def perf() -> None:
    """Speed benchmarks: ratios measured in one run on this machine (see the README's Benchmarks section)."""


def _emit_perf(name: str, rows: list[dict], save: Path | None) -> None:
    import json

    from tabulate import tabulate

    from .fileio import atomic_write_text

    click.echo(tabulate(rows, headers="keys", tablefmt="github"))
    if save is not None:
        atomic_write_text(save / f"{name}.json", json.dumps(rows, indent=1) + "\n")
        click.echo(f"saved {save / f'{name}.json'}")


_save_option = click.option("--save", type=click.Path(file_okay=False, path_type=Path), default=None,
                            help="Also write the measurements as JSON into this folder (e.g. results/perf).")


@perf.command()
@click.option("--n", type=int, default=200, show_default=True)
@click.option("--repeats", type=int, default=3, show_default=True)
@click.option("--device", default="auto", show_default=True)
@_save_option
def overhead(n: int, repeats: int, device: str, save: Path | None) -> None:
    """Harness overhead over calling foolbox / torchattacks directly (FGSM, BIM, CW), mnist5k ResNet."""
    _setup(True)
    from .perf import harness_overhead

    _emit_perf("overhead", harness_overhead(n=n, repeats=repeats, device=device), save)


@perf.command()
@click.option("--n", type=int, default=100, show_default=True)
@click.option("--attack", "attack_spec", default="all", show_default=True,
              help="The job's attack selection, e.g. 'all,-square,-autoattack,-pgd-restarts,-pgd-l2'.")
@_save_option
def grid(n: int, attack_spec: str, save: Path | None) -> None:
    """Wall time of `bench run --defense feature-squeezing --attack all` on mnist5k, cold and cached, per attack."""
    _setup(True)
    from .perf import grid_time

    summary, per_attack = grid_time(n=n, attack=attack_spec)
    _emit_perf("grid", [summary], save)
    _emit_perf("grid_attacks", per_attack, save)


@perf.command("attacks")
@click.option("--attack", "attack_names", default="cw,deepfool,gaussian-blur,fgm,uniform-noise", show_default=True,
              help="Comma-separated attacks that have a reference (the implementation and settings they replaced).")
@click.option("--n", type=int, default=100, show_default=True)
@click.option("--repeats", type=int, default=1, show_default=True, help="Interleaved runs; the best time is kept.")
@click.option("--device", default="auto", show_default=True)
@_save_option
def attacks_perf(attack_names: str, n: int, repeats: int, device: str, save: Path | None) -> None:
    """Cheaper attacks against what they replaced: time, success, median size, accuracy per budget (mnist5k ResNet)."""
    _setup(True)
    from .perf_attacks import compare_attacks

    names = tuple(a.strip() for a in attack_names.split(",") if a.strip())
    _emit_perf("attacks", compare_attacks(names, n=n, repeats=repeats, device=device), save)


@perf.command("ray")
@click.option("--n", type=click.IntRange(1, 360), default=360, show_default=True, help="Test points of each cell.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@_save_option
def ray_perf(n: int, workers: int, save: Path | None) -> None:
    """Eight cheap cells (digits) on a local Ray cluster of WORKERS against the same grid run serially."""
    _setup(True)
    from .perf_ray import ray_speedup

    _emit_perf("ray", [ray_speedup(n=n, workers=workers)], save)


@perf.command("pixeldefend")
@click.option("--case", "cases", multiple=True, default=("mnist5k", "32x32x3"), show_default=True,
              help="A data set with a trained PixelCNN, or 32x32x3 (untrained network of the default size).")
@click.option("--batch", type=int, default=64, show_default=True)
@click.option("--reference-rows", type=int, default=2, show_default=True,
              help="Rows the reference purifies (its time is scaled to the image); 0 runs it in full.")
@click.option("--device", default="auto", show_default=True)
@_save_option
def pixeldefend_perf(cases: tuple[str, ...], batch: int, reference_rows: int, device: str, save: Path | None) -> None:
    """Faithful purification against the one-pass-per-sub-pixel reference; PixelCNN training speed."""
    _setup(True)
    from .perf_pixeldefend import pixelcnn_training_speed, pixeldefend_speed

    rows = [pixeldefend_speed(c, batch=batch, reference_rows=reference_rows, device=device) for c in cases]
    _emit_perf("pixeldefend", rows, save)
    _emit_perf("pixelcnn_training", [pixelcnn_training_speed(device=device)], save)


@perf.command("network")
@click.option("--dataset", default="mnist5k", show_default=True)
@click.option("--model", "model_names", default="resnet,vgg", show_default=True, help="Comma-separated classifiers.")
@click.option("--n", type=int, default=100, show_default=True, help="Images per pass.")
@click.option("--steps", type=int, default=10, show_default=True, help="Timed passes; the fastest is reported.")
@click.option("--device", default="auto", show_default=True)
@_save_option
def network_perf(dataset: str, model_names: str, n: int, steps: int, device: str, save: Path | None) -> None:
    """Cost of one forward and backward pass of a classifier, batch norms folded into convolutions or not."""
    _setup(True)
    from .perf_network import network_step_cost

    names = [m.strip() for m in model_names.split(",") if m.strip()]
    _emit_perf("network", network_step_cost(dataset, names, n=n, steps=steps, device=device), save)


@perf.command("adaptive")
@click.option("--dataset", default="mnist5k", show_default=True)
@click.option("--model", default="resnet", show_default=True)
@click.option("--defense", "defense_spec", default="all", show_default=True,
              help="Defenses, as `bench run` takes them ('all', a list, compositions with '+').")
@click.option("--n", type=int, default=32, show_default=True, help="Images per step.")
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True,
              help="Timed steps after an untimed first one; their mean is reported.")
@click.option("--device", default="auto", show_default=True)
@_save_option
def adaptive_perf(dataset: str, model: str, defense_spec: str, n: int, steps: int, device: str,
                  save: Path | None) -> None:
    """Cost of one adaptive attack step (forward and backward through the defended pipeline), ms per image."""
    _setup(True)
    from .perf_adaptive import adaptive_step_cost
    from .registry import DEFENSES

    names = DEFENSES.select(defense_spec)
    _emit_perf("adaptive", adaptive_step_cost(dataset, model, names, n=n, steps=steps, device=device), save)


@main.command()
@click.option("--dataset", default="mnist5k", show_default=True)
@click.option("--model", default="resnet", show_default=True)
@click.option("--defense", "defense_name", default="pixeldefend", show_default=True, help="A purifying defense.")
@click.option("--attack", "attack_name", default="pgd", show_default=True)
@click.option("--threat", type=click.Choice(["oblivious", "adaptive"]), default="adaptive", show_default=True)
@click.option("--eps", "eps_values", multiple=True, help="Budgets (default: the data set's).")
@click.option("--n", type=click.IntRange(1), default=20, show_default=True, help="Test points.")
@click.option("--bpda", type=click.Choice(["declared", "soft"]), default="declared", show_default=True,
              help="The attacker's BPDA approximation: the defense's own, or PixelDefend's smooth stand-in.")
@_common_model_options
def diagnose(dataset, model, defense_name, attack_name, threat, eps_values, n, bpda, data_root, download, device,
             seed, quiet) -> None:
    """How much of an attack's perturbation survives a purifier (undone sub-pixels, surviving L1 share)."""
    _setup(quiet)
    from tabulate import tabulate

    from .budgets import parse_eps_list
    from .data import load_dataset
    from .diagnose import purification_survival
    from .registry import ATTACKS, DEFENSES
    from .vocab import Threat

    DEFENSES.select(defense_name)
    ATTACKS.get(attack_name)
    eps = parse_eps_list(eps_values) if eps_values else load_dataset(dataset, data_root, download).default_eps
    rows = purification_survival(dataset, model, defense_name, attack_name, tuple(eps), n, Threat(threat), seed=seed,
                                 device=device, data_root=data_root, bpda=bpda)
    click.echo(tabulate(rows, headers="keys", tablefmt="github"))


@perf.command("gan")
@click.option("--case", "cases", multiple=True, default=("28x28x1", "32x32x3"), show_default=True,
              help="HxWxC (untrained networks of the default size) or a data set with a trained GAN.")
@click.option("--n", type=click.IntRange(min=1), default=16, show_default=True, help="Images per case.")
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True, help="Projection steps L.")
@click.option("--restarts", type=click.IntRange(min=1), default=10, show_default=True, help="Projection restarts R.")
@click.option("--iterations", type=click.IntRange(min=1), default=100, show_default=True,
              help="Deep image prior iterations.")
@click.option("--device", default="auto", show_default=True)
@_save_option
def gan_perf(cases, n, steps, restarts, iterations, device, save) -> None:
    """Projection onto a GAN and deep image prior fits: batched against one image at a time, same outputs."""
    _setup(True)
    from .perf_gan import dip_speed, matmul_flops_per_second, projection_speed

    peak = matmul_flops_per_second()
    _emit_perf("gan_projection", [projection_speed(c, n, steps, restarts, device, peak) for c in cases], save)
    _emit_perf("dip", [dip_speed(c, n, iterations, device, peak) for c in cases], save)


from .detect_cmd import detect  # noqa: E402  (defined in its own module; registered here)

main.add_command(detect)


if __name__ == "__main__":  # pragma: no cover
    main()
