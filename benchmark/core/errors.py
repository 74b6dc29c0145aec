"""User-facing errors.

A :class:`BenchError` is a mistake of the user's (an unknown name, a malformed budget, missing data): the CLI prints
its message as one line and exits with code 2. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class BenchError(Exception):
    """One line saying what was wrong and what would be right."""


class CellFailed(Exception):
    """An evaluation cell failed a harness check; the cell is reported and no record is written."""
