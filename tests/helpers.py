"""Helpers shared by several test files: the CLI runner, a tick-lock holder in another process, fault
injection for atomic writes, and small /proc and file utilities. Fixtures live in conftest.py."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from ralph.cli import cli

# --- the command line --------------------------------------------------------------------------------


def invoke(*argv: str) -> Result:
    """`ralph <argv>` through the real click group, in this process."""
    return CliRunner().invoke(cli, list(argv))


def ralph(checkout: Path, *args: str) -> Result:
    """`ralph -C <checkout> <args>`."""
    return invoke("-C", str(checkout), *args)


# --- another process holding the tick lock -----------------------------------------------------------

# argv: <lock> <since, ISO 8601 or ""> [spawn <python argv>...]. With `spawn` it first starts a job
# the way ralph does (own session, no inherited stdio) and prints its pid after "held".
LOCK_HOLDER = """
import subprocess, sys
from datetime import UTC, datetime
from pathlib import Path
from ralph.lock import TickLock

since = datetime.fromisoformat(sys.argv[2]) if sys.argv[2] else datetime.now(UTC)
lock = TickLock(Path(sys.argv[1]), now=since)
lock.acquire()
if sys.argv[3:4] == ["spawn"]:
    job = subprocess.Popen(
        [sys.executable, *sys.argv[4:]],
        start_new_session=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    print("held", job.pid, flush=True)
else:
    print("held", flush=True)
sys.stdin.read()  # hold the lock until the test closes our stdin
lock.release()
print("released", flush=True)
"""


def hold_lock(
    lock: Path, *, since: datetime | None = None, spawn: Sequence[str] = ()
) -> tuple[subprocess.Popen[str], list[str]]:
    """Start a process that holds the tick lock at `lock` until its stdin is closed; return it once it
    holds the lock, with the words of its "held" line (the spawned job's pid, with `spawn`)."""
    argv = [sys.executable, "-c", LOCK_HOLDER, str(lock), since.isoformat() if since else ""]
    if spawn:
        argv += ["spawn", *spawn]
    holder = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    line = holder.stdout.readline().split()
    if line[:1] != ["held"]:
        stop(holder)
        raise AssertionError(f"the lock holder did not take the lock: {line}")
    return holder, line


def stop(process: subprocess.Popen[str]) -> None:
    """Kill `process` if it still runs, reap it and close its pipes."""
    if process.poll() is None:
        process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):  # a pipe the child left unread
                stream.close()


# --- fault injection for atomic writes ---------------------------------------------------------------


class Crash(BaseException):
    """Stands for the process dying mid-call; BaseException, so `except Exception` cannot swallow it."""


def raising(error: BaseException) -> Callable[..., Any]:
    """A stand-in for a syscall that fails with `error`."""

    def fail(*args: object, **kwargs: object) -> Any:
        raise error

    return fail


def temp_files(directory: Path) -> list[str]:
    """Names of write_atomic's temp files in `directory`."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# --- processes and files -----------------------------------------------------------------------------


def raw_state(pid: int) -> str | None:
    """Field 3 of /proc/<pid>/stat (R, S, Z, ...), parsed independently of ralph.proc; None when gone."""
    try:
        raw = (Path("/proc") / str(pid) / "stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(b")") + 2 :].split()[0].decode()


def executable(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    """A script at `path`, mode 0755."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def command_line(pid: int) -> list[str]:
    """/proc/<pid>/cmdline as a list; [] when the process is gone."""
    try:
        raw = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def pids_with(token: str) -> list[int]:
    """Live processes (zombies excluded) with `token` as one of their command-line words."""
    found = []
    for entry in Path("/proc").iterdir():
        pid = int(entry.name) if entry.name.isdigit() else 0
        if pid and token in command_line(pid) and raw_state(pid) not in (None, "Z", "X"):
            found.append(pid)
    return found


def pids_running(argv: Sequence[str]) -> list[int]:
    """Live processes (zombies excluded) whose command line is exactly `argv`, as this host numbers
    them (a job's box numbers its own processes from 1)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and command_line(int(entry.name)) == list(argv):
            state = raw_state(int(entry.name))
            if state not in (None, "Z", "X"):
                found.append(int(entry.name))
    return found
