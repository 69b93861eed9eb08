"""The tick lock: one tick at a time, and a tick that finds it held never waits (DESIGN §1.6)."""

from __future__ import annotations

import errno
import os
from datetime import datetime
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from ralph.clock import format_z
from ralph.entry import take_held
from ralph.errors import LockBusy, PreflightError


class TickLock:
    """A kernel flock on `state.json.lock`, released by the kernel if the holder dies.

    The lock file is never deleted (a waiter on the old inode and a newcomer on a new one could both
    "hold" it), and its descriptor is not inherited by jobs (PEP 446; filelock closes it after fork).
    """

    def __init__(self, path: Path, *, now: datetime, wait_s: float = 0) -> None:
        """`wait_s` 0 (the tick) tries once; a short command that edits files may wait a little."""
        self.path = path
        self._owner = f"pid {os.getpid()} since {format_z(now)}\n".encode()
        self._handed_over: int | None = None  # taken by ralph.entry before the heavy imports
        self._lock = FileLock(
            path,
            timeout=wait_s,
            fallback_to_soft=False,  # a marker-file lock would stay held after a crash; refuse instead
            preserve_lock_file=True,
            on_acquired=self._write_owner,
        )

    def _write_owner(self, fd: int) -> None:
        # Who holds it, for the message a waiting tick prints; not a liveness signal.
        os.ftruncate(fd, 0)
        os.pwrite(fd, self._owner, 0)

    def owner(self) -> str:
        try:
            return self.path.read_text(errors="replace").strip()
        except OSError:
            return ""

    def acquire(self) -> None:
        held = take_held(str(self.path))
        if held is not None:
            self._handed_over = held
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            holder = self.owner()
            raise LockBusy(
                f"another ralph tick holds {self.path}"
                + (f" ({holder})" if holder else "")
                + "; nothing was changed, the next tick will run"
            ) from None
        except OSError as e:
            if e.errno in (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP):
                raise PreflightError(
                    f"{self.path}: this filesystem cannot lock files ({e.strerror}); "
                    "keep the checkout on a local disk, not NFS"
                ) from None
            raise

    def release(self) -> None:
        if self._handed_over is not None:
            os.close(self._handed_over)  # closing the last descriptor releases the flock
            self._handed_over = None
            return
        self._lock.release()

    def __enter__(self) -> TickLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
