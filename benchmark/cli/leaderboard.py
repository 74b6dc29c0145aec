"""``bench leaderboard`` and ``bench plot``: the generated leaderboard and figures."""
from __future__ import annotations

from pathlib import Path

import click

from benchmark.cli.common import UserError


def _require_records(results_dir: Path) -> None:
    """A mistyped --results-dir must not regenerate an empty leaderboard over the real one."""
    from benchmark.store.records import records_dir

    records = records_dir(results_dir)
    if not records.is_dir():
        raise UserError(f"no records under {records}: point --results-dir at a folder that `bench run` wrote (it holds "
                        "records/)")


@click.command()
@click.option("--check", is_flag=True,
              help="Exit non-zero when leaderboard.md or the site is stale instead of writing them.")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("leaderboard.md"),
              show_default=True)
@click.option("--html", "site", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the static site (default: leaderboard/ beside --output).")
def leaderboard(check: bool, results_dir: Path, output: Path, site: Path | None) -> None:
    """Regenerate leaderboard.md and its static site from the records alone (deterministic)."""
    from benchmark.report import leaderboard as lb
    from benchmark.report import site as html

    _require_records(results_dir)
    site = site if site is not None else output.parent / lb.SITE
    if check:
        # a record that does not validate: a BenchError naming it and the field (exit 2); stale files exit 1
        problems = lb.differences(output, lb.expected(results_dir, output)) + html.check_site(results_dir, site)
        if problems:
            for p in problems[:10]:
                click.echo(f"bench: {p}", err=True)
            if len(problems) > 10:
                click.echo(f"bench: ... and {len(problems) - 10} more; run `bench leaderboard`", err=True)
            raise SystemExit(1)
        click.echo(f"{output} and {site}/ are up to date with {results_dir}")
        return
    changed = _writing(output, "--output", lambda: lb.write(results_dir, output))
    pages = _writing(site, "--html", lambda: html.write_site(results_dir, site))
    click.echo(f"{'wrote' if changed else 'unchanged:'} {output}")
    click.echo(f"{site}/: {pages} page{'s' if pages != 1 else ''} written" if pages else f"unchanged: {site}/")


def _writing(target: Path, option: str, write):
    """``write()``, with an OSError as one line that names ``target`` and the option that chooses another."""
    try:
        return write()
    except OSError as exc:
        why = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else (exc.strerror or str(exc))
        raise UserError(f"cannot write {target} ({why}); choose another with {option}") from None


@click.command()
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True)
def plot(results_dir: Path) -> None:
    """Draw figures from the records into RESULTS_DIR/figures (linked from the leaderboard)."""
    from benchmark.engine.detection import detection_figures
    from benchmark.report.plots import accuracy_heatmaps, robustness_curves

    _require_records(results_dir)

    for path in [*accuracy_heatmaps(results_dir), *robustness_curves(results_dir), *detection_figures(results_dir)]:
        click.echo(f"wrote {path}")
