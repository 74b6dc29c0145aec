"""``bench reproduce``: the commands that regenerate the committed records."""
from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True)
@click.option("--markdown", is_flag=True, help="Write the docs page (--output) instead of printing the commands.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("docs/reproducing.md"),
              show_default=True)
@click.option("--check", is_flag=True, help="With --markdown: exit 1 when the page is stale instead of writing it.")
def reproduce(results_dir: Path, markdown: bool, output: Path, check: bool) -> None:
    """Print the `bench run` commands that regenerate every record under RESULTS_DIR (generated from the records'
    own configs), or write them as docs/reproducing.md."""
    from benchmark.report.reproduce import commands, markdown as page
    from benchmark.store.fileio import atomic_write_text
    from benchmark.store.records import load_all

    loaded = load_all(results_dir)
    if not markdown:
        for cmd in commands(loaded):
            click.echo(cmd.text())
        return
    text = page(loaded)
    if check:
        if not output.is_file() or output.read_text(encoding="utf-8") != text:
            click.echo(f"bench: {output} is stale: run `bench reproduce --markdown`", err=True)
            raise SystemExit(1)
        click.echo(f"{output} is up to date with {results_dir}")
        return
    atomic_write_text(output, text)
    click.echo(f"wrote {output}")
