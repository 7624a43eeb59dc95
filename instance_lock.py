"""One daemon per state directory (BEHAVIOUR.md 7.5, incident 45).

Two daemons on one state would both believe every trade is theirs: double closes, double
entries. ``InstanceLock`` takes an exclusive ``flock`` on ``<state_dir>/trader.lock`` before
anything else happens; the kernel releases it when the process dies, even by SIGKILL, so a
crash never leaves a stale lock behind. The file holds the owner's pid, for the operator, and
the path of the state store the owner writes to (``publish_store``): after a store lost while
the daemon runs it writes to a recovered copy, and an operator's ``kill`` queued into the old
path would never be seen.
"""
from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_NAME = "trader.lock"
STORE_PREFIX = "store="


class InstanceLock:
    """An exclusive, non-blocking lock on a state directory."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> bool:
        """True if this process now holds the lock; False if another live process does."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        os.fsync(fd)
        self._fd = fd
        return True

    def _lines(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return []

    def holder(self) -> str:
        """The pid written by the holder (for the error message); empty if unreadable."""
        lines = self._lines()
        return lines[0].strip() if lines else ""

    def holder_store(self) -> Path | None:
        """The state store the holder said it writes to (``publish_store``), or None."""
        for line in self._lines()[1:]:
            if line.startswith(STORE_PREFIX) and line[len(STORE_PREFIX):].strip():
                return Path(line[len(STORE_PREFIX):].strip())
        return None

    def publish_store(self, store_path: str | Path) -> None:
        """Say (in the lock file, for the command line) which state store this holder writes to.

        Only the holder calls it, through its own descriptor: the file keeps its inode, so
        the ``flock`` on it is untouched.
        """
        if self._fd is None:
            raise RuntimeError(f"publish_store: this process does not hold {self.path}")
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.write(self._fd, f"{os.getpid()}\n{STORE_PREFIX}{Path(store_path).resolve()}\n".encode("utf-8"))
        os.fsync(self._fd)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "InstanceLock":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
