"""Claims on cells, so that several ``bench run`` processes can share one results directory.

A process evaluates a cell only while it holds the cell's claim: an OS file lock (``filelock``, as the model store
uses for checkpoints) on ``<results>/.claims/<record id>.lock``. Claims never wait: a cell claimed by another process
is left to it and this one moves on. The OS drops the lock when its holder dies, so a killed run leaves no stale claim
behind. Lock files live outside ``records/`` (the leaderboard never sees them) and stay after release, as filelock
leaves them on POSIX: unlinking a file another process is about to lock would let two processes hold "one" lock.
"""
from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout

CLAIMS_SUBDIR = ".claims"


class CellClaims:
    """The claims this process holds in one results directory, by record id."""

    def __init__(self, results_dir: Path) -> None:
        self.folder = Path(results_dir) / CLAIMS_SUBDIR
        self._held: dict[str, FileLock] = {}

    def try_claim(self, record_id: str) -> bool:
        """Claim the cell unless another process holds it; True when this process now holds it."""
        if record_id in self._held:
            return True
        self.folder.mkdir(parents=True, exist_ok=True)
        # not a singleton: a claim is exclusive even between two CellClaims of one process (tests play two runs)
        lock = FileLock(str(self.folder / f"{record_id}.lock"), timeout=0, is_singleton=False)
        try:
            lock.acquire()
        except Timeout:
            return False
        self._held[record_id] = lock
        return True

    def release(self, record_id: str) -> None:
        lock = self._held.pop(record_id, None)
        if lock is not None:
            lock.release()

    def release_all(self) -> None:
        for record_id in list(self._held):
            self.release(record_id)
