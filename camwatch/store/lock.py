"""One daemon per store: a lock file beside the store, held with ``flock`` for the daemon's
life. The kernel drops the lock when the process dies (even by ``kill -9``), so a stale file
never blocks a restart. The file holds the holder's pid and listen address, for the error
message of the second daemon. CLI commands (``report``, ``exempt``) do not take it: they read,
or write through SQLite's own locking."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from camwatch.errors import StoreError


class StoreLock:
    def __init__(self, store_path: str | Path) -> None:
        self.path = Path(f"{store_path}.lock")
        self._fd: int | None = None
        self.problem: str | None = None  # a flock cannot be lost while the process lives

    def acquire(self, holder: str) -> None:
        """Take the lock or raise :class:`StoreError` naming who holds it."""
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create the store's lock file: "
                             f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                other = os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise StoreError(
                f"{str(self.path)[:-5]}: another camwatch is running on this store ({other}); "
                f"stop it first, or give this one its own store.path") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, {holder}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
