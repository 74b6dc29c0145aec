"""User-facing errors.

A :class:`BenchError` is a mistake of the user's (an unknown name, a malformed budget, missing data): the CLI prints
its message as one line and exits with code 2. :class:`WriteFailed` (a full disk) is printed the same way but exits
with 1: the user did nothing wrong. Ctrl-C exits ``bench run`` with 130 and SIGTERM (:class:`Terminated`) with 143.
Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class BenchError(Exception):
    """One line saying what was wrong and what would be right."""


class CellFailed(Exception):
    """An evaluation cell failed a harness check; the cell is reported and no record is written."""


class WriteFailed(BenchError):
    """A result could not be written (a full disk, a folder turned read-only): the grid stops, the cells finished
    before are kept, and a rerun resumes. Not a mistake of the user's, so the CLI exits with :attr:`exit_code` 1, not
    2; it prints the table of ``results`` (or of ``cells``) first."""

    exit_code = 1

    def __init__(self, message: str, cells: list | None = None) -> None:
        super().__init__(message)
        self.cells = list(cells or [])  # the CellResults of the grid that finished (benchmark.engine.grid)
        self.results = None  # benchmark.api.results.Results of ``cells``, when evaluate() made them


class Terminated(KeyboardInterrupt):
    """SIGTERM during ``bench run`` (raised by the handler the command installs): unwinds like Ctrl-C (claims released,
    nothing half-written), and the command exits with 143 instead of 130."""


# How many records a grid wrote before it was interrupted: set on the KeyboardInterrupt (or Terminated) that stopped
# it, for `bench run` to report (benchmark.engine.runner.run).
RECORDS_WRITTEN = "bench_records_written"
