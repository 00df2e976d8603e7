"""The lock that keeps two writers (a recorder, ``nova recover``) off one local data root.

Why flock on a file that is removed at a clean stop: the kernel drops the lock when its holder dies, so a
``kill -9`` never leaves a root locked, and a clean stop leaves no trace. Removing a lock file races with a
process that opened it just before: that process may lock the removed inode while a third creates and locks
a new file. So a lock counts only while the path still names the inode that was locked (checked after
locking, retried otherwise).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from typing import IO

LOCK_NAME = ".nova-recorder.lock"


class RootBusy(Exception):
    """Another process holds the root's lock."""


class RootLock:
    """An exclusive, non-blocking lock on a local data root, held until ``release``."""

    def __init__(self, root: str) -> None:
        self.path = os.path.join(root, LOCK_NAME)
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise RootBusy (OSError when the root cannot hold a lock file, e.g. read-only)."""
        for _ in range(100):
            handle = open(self.path, "a+")  # noqa: SIM115 - held open for the life of the lock
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                handle.close()
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RootBusy(self.path) from None
                raise
            try:
                same = os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                handle.truncate(0)
                handle.write(f"{os.getpid()}\n")
                handle.flush()
                self._handle = handle
                return
            handle.close()  # the holder removed it between our open and our lock: take the new one
        raise RootBusy(self.path)

    def release(self) -> None:
        """Remove the lock file, then let go of the lock."""
        if self._handle is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self._handle.close()
        self._handle = None


def held(root: str) -> bool:
    """Whether a live process holds the root's lock; works on a read-only root (never creates the file)."""
    path = os.path.join(root, LOCK_NAME)
    try:
        handle = open(path)  # noqa: SIM115
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False
