"""The `ralph` command's entry point: `ralph run` takes its tick lock before anything heavy is imported.

Eight ticks started at once on a loaded machine spent seconds importing click, pydantic and sh before
seven of them found the lock held. So a tick (`ralph run` without --dry-run or --help) first finds its
checkout (the nearest directory with a `.git`, and a `.ralph` in it), takes the lock with `fcntl.flock`
on `state.json.lock` — the same lock the `filelock` package takes, so the two agree — and only then
imports the rest. A tick that finds the lock held says so and exits 75; a tick whose idle stamp says
nothing changed (ralph.stamp) exits 0 after one `git ls-remote`; any other tick hands the lock it holds
to ralph.lock.TickLock and runs as usual. Whatever this cannot read with certainty (an option it does
not know, no checkout) it leaves to the full command line, which takes the lock itself.

This module imports nothing but the standard library's smallest pieces until the lock is settled.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import time

from ralph import ring

_GLOBAL_FLAGS = {"-v", "-vv", "-vvv", "-q", "-qq", "--verbose", "--quiet"}
_GLOBAL_VALUES = {"-C", "--log-file"}
_RUN_FLAGS = {"--allow-root", "--include-draft", "--json"}
_RUN_VALUES = {"--workers", "--max-tasks", "--only"}

# The lock this process took before the full command line was imported: (path, descriptor).
_held: tuple[str, int] | None = None
_started = time.monotonic()


def take_held(path: str) -> int | None:
    """The descriptor of the tick lock at `path` if this process already holds it (once)."""
    global _held
    if _held is None or os.path.realpath(_held[0]) != os.path.realpath(path):
        return None
    fd = _held[1]
    _held = None
    return fd


def main() -> None:
    # Everything ralph creates (state, logs, run directories, workspaces, a job's HOME) is the owner's
    # alone: a transcript can hold secrets, and a group-writable run directory lets another local user
    # pause ralph or edit a live workspace. Jobs inherit it.
    os.umask(0o077)
    tick = _tick_options(sys.argv[1:])
    if tick is not None:
        _lock_first(*tick)
    from ralph.cli import main as cli_main

    cli_main()


def _tick_options(argv: list[str]) -> tuple[str, str | None, bool] | None:
    """(where the command runs, --log-file, whether it may end idle here) when `argv` is a tick this
    module can read with certainty; None leaves everything to the full command line."""
    start, log_file, as_json, allow_root = ".", None, False, False
    i = 0
    while i < len(argv) and argv[i] != "run":
        word = argv[i]
        if word in _GLOBAL_FLAGS:
            i += 1
        elif word in _GLOBAL_VALUES and i + 1 < len(argv):
            if word == "-C":
                start = argv[i + 1]
            else:
                log_file = argv[i + 1]
            i += 2
        elif word.startswith("--log-file="):
            log_file = word.split("=", 1)[1]
            i += 1
        else:
            return None
    if i == len(argv):
        return None
    i += 1
    while i < len(argv):
        word = argv[i]
        if word in _RUN_FLAGS:
            as_json = as_json or word == "--json"
            allow_root = allow_root or word == "--allow-root"
            i += 1
        elif word in _RUN_VALUES and i + 1 < len(argv):
            i += 2
        elif "=" in word and word.split("=", 1)[0] in _RUN_VALUES:
            i += 1
        else:
            return None  # --dry-run, --help, or something to let click explain
    # --json wants the summary document, and root without --allow-root the refusal: full tick for both.
    may_idle = not as_json and (allow_root or os.geteuid() != 0)
    return start, log_file, may_idle


def _find_root(start: str) -> str | None:
    here = os.path.realpath(start)
    while True:
        if os.path.exists(os.path.join(here, ".git")):
            return here if os.path.isdir(os.path.join(here, ".ralph")) else None
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def _lock_first(start: str, log_file: str | None, may_idle: bool) -> None:
    global _held
    root = _find_root(start)
    if root is None:
        return
    path = ring.tick_lock_file(root)
    parallel = os.path.dirname(path)
    try:
        os.makedirs(parallel, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return  # the full command line says what is wrong with the directory
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            _busy(root, path, log_file)
        return  # a filesystem that cannot lock: the full command line explains
    holder = f"pid {os.getpid()} since {ring.z(time.time())}\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, holder.encode(), 0)
    if may_idle and _idle(root, parallel):
        os.close(fd)
        sys.exit(0)
    _held = (path, fd)


def _busy(root: str, path: str, log_file: str | None) -> None:
    """Another tick runs: one line, the tick's end recorded for `ralph status`, exit 75."""
    try:
        with open(path, errors="replace") as f:
            holder = f.read().strip()
    except OSError:
        holder = ""
    message = (
        f"another ralph tick holds {path}" + (f" ({holder})" if holder else "") + "; nothing was changed, "
        "the next tick will run"
    )
    sys.stderr.write(f"ralph: {message}\n")
    if log_file:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime())
        try:
            with open(log_file, "a", encoding="utf-8") as f:
                f.write(f"{stamp} INFO {message}\n")
        except OSError:
            pass
    _record(root, code=ring.LOCKED, error=message)
    sys.exit(ring.LOCKED)


def _idle(root: str, parallel: str) -> bool:
    """Whether the idle stamp says this tick has nothing to do; records its end if so."""
    from datetime import UTC, datetime

    from ralph import stamp

    if not stamp.still_idle(root, parallel, datetime.now(UTC)):
        return False
    _record(root, code=0, error=None)
    return True


def _record(root: str, *, code: int, error: str | None) -> None:
    """The tick's end in the tick-health ring, as `ralph run` records a full tick's (README "Tick
    health"): appended by ralph.ring alone when it cannot change the ticks' health, else through
    ralph.health, which tells hooks of the change."""
    try:
        seconds = time.monotonic() - _started
        if ring.append_quiet(root, code=code, error=error, seconds=seconds, now=time.time()):
            return
        from pathlib import Path

        from ralph import health

        health.record_early_end(Path(root), code=code, error=error, seconds=seconds, announce=_announce)
    except Exception as e:  # recording must never change how the tick ends
        sys.stderr.write(f"ralph: warning: could not record this tick's end ({e})\n")


def _announce(root: object, change: object) -> None:
    from ralph import alerts

    alerts.announce(root, change)  # type: ignore[arg-type]
