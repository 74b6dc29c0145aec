"""What every ``bench`` command shares: the one-line user errors, logging set-up and the common options.

Only click is imported here: ``bench --help`` never imports torch.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Callable

import click

THREATS = ("oblivious", "adaptive", "transfer")
EXECUTORS = ("local", "ray")


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"bench: error: {self.message}", err=True)


class BenchGroup(click.Group):
    """Turns BenchError (raised anywhere below) into one line and exit code 2 (or the error's own ``exit_code``:
    1 for :class:`~benchmark.core.errors.WriteFailed`, which is no mistake of the user's)."""

    def invoke(self, ctx: click.Context) -> Any:
        from benchmark.core.errors import BenchError

        try:
            return super().invoke(ctx)
        except BenchError as exc:
            error = UserError(str(exc))
            error.exit_code = getattr(exc, "exit_code", UserError.exit_code)
            raise error from None


def setup(quiet: bool, threads: int | None = None) -> None:
    """Logging to stderr (``--quiet``: warnings only, no bars) and the torch thread count (``--threads``)."""
    from benchmark.core.progress import set_quiet

    set_quiet(quiet)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("bench: %(message)s"))
    root = logging.getLogger("benchmark")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False


def report_broken_plugins() -> None:
    from benchmark.core.registry import REGISTRIES

    for kind, registry in REGISTRIES.items():
        registry.names()  # loads entry points
        for name, why in sorted(registry.broken.items()):
            click.echo(f"bench: warning: {kind[:-1]} plugin {name!r} failed to load ({why}); continuing without it",
                       err=True)


def common_model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--data-root", type=click.Path(file_okay=False), default=None,
                     help="Folder with torchvision-layout data (default: $BENCH_DATA or the cache).")(f)
    f = click.option("--download", is_flag=True, help="Let torchvision download a missing data set (needs internet).")(f)
    f = click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda (auto takes CUDA when present).")(f)
    f = click.option("--seed", type=int, default=0, show_default=True, help="Seed of training and attacks.")(f)
    f = click.option("--threads", type=click.IntRange(min=1), default=None, envvar="BENCH_THREADS", show_envvar=True,
                     help="Torch threads (default: torch's, one per core; OpenMP threads wait passively unless "
                          "OMP_WAIT_POLICY says otherwise, so concurrent jobs share the cores).")(f)
    f = click.option("--quiet", "-q", is_flag=True, envvar="BENCH_QUIET", show_envvar=True,
                     help="No progress bars or info messages.")(f)
    return f
