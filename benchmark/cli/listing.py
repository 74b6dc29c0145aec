"""``bench list``: what the registries hold."""
from __future__ import annotations

import click

from benchmark.cli.common import report_broken_plugins


@click.command(name="list")
@click.argument("what", type=click.Choice(["attacks", "defenses", "models", "datasets", "all"]), default="all")
@click.option("--options", "show_options", is_flag=True,
              help="The options each defense and attack accepts (set them as name(key=value, ...)).")
@click.option("--markdown", is_flag=True,
              help="The built-in defenses and attacks as Markdown tables (the README's copy; CI checks it is current).")
def list_(what: str, show_options: bool, markdown: bool) -> None:
    """Registered attacks, defenses, models and data sets, with their traits and origin."""
    from tabulate import tabulate

    from benchmark.core.options import options_table
    from benchmark.core.registry import REGISTRIES

    if markdown:
        click.echo(markdown_tables(), nl=False)
        return
    report_broken_plugins()
    kinds = list(REGISTRIES) if what == "all" else [what]
    if show_options:
        for kind in [k for k in kinds if k in ("defenses", "attacks")]:
            entries = REGISTRIES[kind].entries()
            rows = options_table([(e.name, e.factory) for e in entries])
            plain = [e.name for e in entries if not getattr(e.factory, "OPTIONS", ())]
            click.echo(f"{kind}: options (set as name(key=value, ...), e.g. "
                       f"{'jpeg(quality=50)' if kind == 'defenses' else 'pgd(steps=200)'})")
            click.echo(tabulate([list(r.values()) for r in rows], headers=["name", "option", "type", "default",
                                                                          "meaning"], tablefmt="simple"))
            if plain:
                click.echo(f"without options: {', '.join(plain)}")
            click.echo("")
        return
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


def markdown_tables() -> str:
    """The project's own defenses and attacks (plugins left out) as Markdown tables, from the registries."""
    from benchmark.core.registry import ATTACKS, DEFENSES, PROJECT

    def own(registry):
        return [e for e in registry.entries() if e.origin.startswith(PROJECT)]

    lines = ["| defense | traits | summary |", "|---|---|---|"]
    for e in own(DEFENSES):
        d = e.describe()
        lines.append(f"| `{e.name}` | {d.get('traits', '')} | {d.get('summary', '')} |")
    lines += ["", "| attack | norm | kind | groups | implementation | summary |", "|---|---|---|---|---|---|"]
    for e in own(ATTACKS):
        d = e.describe()
        lines.append(f"| `{e.name}` | {d.get('norm', '')} | {d.get('kind', '')} | {d.get('groups', '')} | "
                     f"{d.get('implementation', '')} | {d.get('summary', '')} |")
    return "\n".join(lines) + "\n"
