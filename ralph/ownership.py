"""Whether this checkout is ralph's to work on: set up, and not in use by a running Rust ralph.

The Rust ralph takes `.ralph/lock/` (a directory made with an atomic mkdir, with an `owner` file of
`key: value` lines: pid, started_at, command, label) and holds it for a whole `run loop`: its
coordinator rewrites the queue files and runs workers of its own. While it lives, a tick here would
start the same tasks a second time, and an edit of the working-tree queue would be overwritten; so
both wait for it. A lock whose process is gone (or whose pid now belongs to a younger process) is
stale and ignored, as the Rust ralph itself clears it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ralph import proc
from ralph.errors import LockBusy, PreflightError
from ralph.git import Git
from ralph.paths import CACHE_IGNORE, Paths
from ralph.queue import parse_rfc3339

# The Rust ralph makes the directory, then writes `owner`: an owner-less lock this young is being taken.
FRESH_LOCK_S = 60.0
# Clocks and /proc's start time disagree by a little; a process this much younger than its lock is
# another one that got the pid.
START_SLACK_S = 5.0


@dataclass(frozen=True)
class RustLock:
    path: Path
    state: str  # "live", "stale" or "unreadable"
    pid: int | None = None
    started_at: str = ""
    command: str = ""
    label: str = ""

    def describe(self) -> str:
        who = f"pid {self.pid}" if self.pid is not None else "an unknown process"
        what = f" `{self.command}`" if self.command and self.command != "unknown" else ""
        since = f" since {self.started_at}" if self.started_at else ""
        return f"the Rust ralph's lock {self.path} is held by {who}{what}{since}"


def inspect_rust_lock(paths: Paths, *, now: float | None = None) -> RustLock | None:
    """The Rust ralph's lock, if its directory exists: live, stale, or unreadable. For `ralph doctor` too."""
    lock = paths.rust_lock
    if not lock.is_dir():
        return None
    try:
        raw = (lock / "owner").read_text(errors="replace")
    except OSError:
        try:
            age = (now if now is not None else time.time()) - lock.stat().st_mtime
        except OSError:
            return None  # released meanwhile
        return RustLock(lock, "live" if age < FRESH_LOCK_S else "unreadable")
    fields = {}
    for line in raw.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    try:
        pid = int(fields.get("pid", ""))
    except ValueError:
        return RustLock(lock, "unreadable", command=fields.get("command", ""))
    owner = RustLock(
        lock,
        "live" if _alive_since(pid, fields.get("started_at", "")) else "stale",
        pid,
        fields.get("started_at", ""),
        fields.get("command", ""),
        fields.get("label", ""),
    )
    return owner


def _alive_since(pid: int, started_at: str) -> bool:
    """Whether `pid` lives and may be the process that took the lock at `started_at`."""
    stat = proc.read_stat(pid)
    if stat is None or stat.state in ("Z", "X"):
        return False
    taken = parse_rfc3339(started_at)
    began = _start_time(stat.start_ticks)
    if taken is None or began is None:
        return True  # nothing to compare: a live pid is taken at its word
    return began.timestamp() <= taken.timestamp() + START_SLACK_S


def _start_time(start_ticks: int) -> datetime | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                boot = int(line.split()[1])
                return datetime.fromtimestamp(boot + start_ticks / os.sysconf("SC_CLK_TCK"), UTC)
    except (OSError, ValueError):
        pass
    return None


def refuse_if_rust_runs(paths: Paths) -> None:
    """LockBusy (exit 75, nothing changed) while a Rust ralph holds its lock; PreflightError when its
    lock cannot be read (a person must look)."""
    lock = inspect_rust_lock(paths)
    if lock is None or lock.state == "stale":
        return
    if lock.state == "live":
        raise LockBusy(
            f"{lock.describe()}; a Rust ralph is working on this queue, so ralph waits for it to finish "
            "(stop it, or let it end, before switching to ralph)"
        )
    raise PreflightError(
        f"{lock.path} exists but names no process ralph can check (no readable `owner` file); if no "
        f"Rust ralph runs in {paths.root}, remove the directory (`rmdir` it, or `ralph queue unlock` "
        "with the Rust ralph)"
    )


def cache_not_ignored(git: Git, paths: Paths) -> str | None:
    """A problem when git does not ignore `.ralph/cache/` (the Rust ralph's `init` never adds it): the
    job specs there hold the agent's environment, and one `git add -A` would commit them. For doctor."""
    probe = f"{CACHE_IGNORE}__ralph_ignore_probe__"
    if git.is_ignored(probe):
        return None
    return (
        f"{CACHE_IGNORE} is not ignored by git, yet ralph keeps the jobs' specs (with the agent's "
        f"environment) there: add `{CACHE_IGNORE}` to .gitignore (`ralph init` does)"
    )


def check(paths: Paths) -> None:
    """Before a tick does anything: the checkout is set up for ralph, and no Rust ralph works in it."""
    paths.require_initialised()
    refuse_if_rust_runs(paths)
