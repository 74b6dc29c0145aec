"""The ``bench`` command: one module per subcommand, each imported only when it runs or shows its help.

``bench --help`` lists the subcommands from :data:`COMMANDS` without importing any of them (nor torch). User
mistakes (a :class:`benchmark.core.errors.BenchError`) print one line and exit with code 2; finished work is kept.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

import click

from benchmark.cli.common import BenchGroup

# Two torch processes whose OpenMP threads spin-wait for each other on a shared machine run 15 to 100 times slower
# than one; waiting threads that sleep instead cost a single job little (`bench perf threads` measures both). Set
# before any subcommand imports torch, and only when the user has not chosen a policy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# name -> (module:attribute, one-line help shown by `bench --help`)
COMMANDS = {
    "run": ("benchmark.cli.run:run", "Evaluate defenses against attacks; one record per cell."),
    "leaderboard": ("benchmark.cli.leaderboard:leaderboard", "Regenerate leaderboard.md from the result records."),
    "list": ("benchmark.cli.listing:list_", "List the registered attacks, defenses, models and data sets."),
    "train": ("benchmark.cli.train:train", "Train a model into the store (classifier, pixelcnn, gan, dip)."),
    "plot": ("benchmark.cli.leaderboard:plot", "Draw the accuracy and robustness-curve figures."),
    "examples": ("benchmark.cli.examples:examples", "Clean, adversarial and purified examples as a figure."),
    "diagnose": ("benchmark.cli.diagnose:diagnose", "How much of an attack's perturbation a purifier undoes."),
    "detect": ("benchmark.cli.detect:detect", "PixelCNN likelihood as a detector of adversarial inputs."),
    "perf": ("benchmark.perf.command:perf", "Speed benchmarks (results/perf/*.json) and their docs page."),
    "reproduce": ("benchmark.cli.reproduce:reproduce", "The commands that regenerate the committed records."),
}


class LazyGroup(BenchGroup):
    """Imports a subcommand's module when the subcommand is used (the pattern of click's documentation)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        target, _ = COMMANDS[name]
        module, attribute = target.split(":")
        command = getattr(importlib.import_module(module), attribute)
        command.name = name
        return command

    def format_commands(self, ctx: click.Context, formatter: Any) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="defensebench", prog_name="bench")
def main() -> None:
    """DefenseBench: evaluate defenses against adversarial examples and regenerate the leaderboard.

    \b
    bench run --defense feature-squeezing --attack all
    bench leaderboard
    """


if __name__ == "__main__":  # pragma: no cover
    main()
