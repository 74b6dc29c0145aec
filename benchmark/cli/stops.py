"""How ``bench run`` ends when it is stopped: Ctrl-C (exit 130), SIGTERM (exit 143) or a result it cannot write (a
full disk: exit 1). Each says in one line how many cells finished, that they are kept, and that rerunning the same
command resumes; never a traceback. Only click is imported here (``bench --help`` must not import torch)."""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any, Callable, NoReturn

import click

INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process that Ctrl-C ended
TERMINATED = 143  # 128 + SIGTERM


def sigterm_raises() -> Callable[[], None]:
    """From now on, SIGTERM raises :class:`~benchmark.core.errors.Terminated` in the main thread (so a kill unwinds
    like Ctrl-C: claims released, nothing half-written); returns the function that puts the previous handler back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signal handlers can only be set from the main thread

    def terminate(signum: int, frame: Any) -> None:
        from benchmark.core.errors import Terminated

        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    return lambda: signal.signal(signal.SIGTERM, previous)


def stopped(exc: KeyboardInterrupt, results_dir: Path) -> NoReturn:
    """Report a run stopped by Ctrl-C or SIGTERM in one line; exit 130 or 143."""
    from benchmark.core.errors import RECORDS_WRITTEN, Terminated

    written = getattr(exc, RECORDS_WRITTEN, 0)
    what, code = ("terminated (SIGTERM)", TERMINATED) if isinstance(exc, Terminated) else ("interrupted (Ctrl-C)",
                                                                                             INTERRUPTED)
    kept = (f"{written} cell(s) finished in this run and their records are kept under {results_dir}"
            if written else "no cell finished in this run")
    click.echo(f"bench: {what}: {kept}; rerun the same command to resume (finished cells are skipped)", err=True)
    raise SystemExit(code)
