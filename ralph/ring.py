"""The tick-health ring file (`ticks.json`): where it is, its lock, and one tick's end added to it.

Every tick adds how it ended, and most ticks of a quiet night end in ralph.entry before anything heavy
is imported: one whose idle stamp said nothing changed, one that found the tick lock held. So this
module is the standard library's smallest pieces (no dataclasses, pathlib, logging or tempfile: ~25 ms
a tick on a cheap machine) and adds an end as the raw JSON entry ralph.health reads. Judging the ring
and telling hooks.on_event of a change is ralph.health's: `append_quiet` declines whenever the end
could change the verdict hooks were told (an alert pending, a holder that looks hung), and the caller
then records through ralph.health.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import time
from datetime import UTC, datetime

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

RING_SIZE = 50  # tick ends kept, the newest last
# A tick that has held the lock this many tick budgets is hung: a healthy one takes about one budget
# (parallel.tick_budget_s) plus a few bounded git calls.
HUNG_BUDGETS = 5
DEFAULT_TICK_BUDGET_S = 45.0  # parallel.tick_budget_s until a tick has remembered the real one
MAX_ERROR_CHARS = 500
LOCK_WAIT_S = 5.0
LOCKED = 75

_PARALLEL = os.path.join(".ralph", "cache", "parallel")
_HOLDER = re.compile(r"pid (\d+) since (\S+)")


def ticks_file(root: str) -> str:
    return os.path.join(root, _PARALLEL, "ticks.json")


def tick_lock_file(root: str) -> str:
    """The tick lock (its holder writes itself into it as `pid N since TIME`)."""
    return os.path.join(root, _PARALLEL, "state.json.lock")


def flatten(text: str) -> str:
    """One line, bounded; kept as it was otherwise (whoever prints it escapes it: ralph.text)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_ERROR_CHARS else flat[: MAX_ERROR_CHARS - 1] + "…"


def z(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def parse_time(text: object) -> datetime | None:
    """An aware RFC 3339 time, in UTC; None for anything else."""
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.astimezone(UTC) if value.tzinfo is not None else None


def read_holder(lock: str) -> tuple[int, str] | None:
    """(pid, since) of the last holder the lock file names; None when it names none or cannot be read."""
    try:
        with open(lock, errors="replace") as f:
            found = _HOLDER.search(f.read())
    except OSError:
        return None
    if found is None or parse_time(found.group(2)) is None:
        return None
    return int(found.group(1)), found.group(2)


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """Ticks that found the tick lock held record too, beside the one that holds it: a read-modify-write
    of the ring is serialised by a lock of its own, held for a few milliseconds."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # releases the flock


def write(path: str, document: dict[str, Any]) -> None:
    """Replace the ring file with `document`, atomically (ralph.files.write_atomic's steps, spelled out
    so this module imports nothing of ralph's; no directory fsync: a ring lost to a power cut costs a
    few ticks' history, nothing more)."""
    data = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def end_entry(
    at: float,
    code: int,
    seconds: float,
    error: str | None,
    remote_error: str | None,
    holder: tuple[int, str] | None,
) -> dict[str, Any]:
    """One tick's end as the ring file keeps it (`holder`: the lock holder's pid and since)."""
    return {
        "at": z(at),
        "exit_code": code,
        "seconds": round(seconds, 3),
        "error": error,
        "remote_error": remote_error,
        "holder": {"pid": holder[0], "since": holder[1]} if holder else None,
    }


def held_too_long(held_s: float, tick_budget_s: float) -> bool:
    """Whether a tick that has held the lock `held_s` seconds is hung."""
    return held_s > HUNG_BUDGETS * tick_budget_s


def positive(value: object, default: float) -> float:
    """`value` as a number of seconds if it is a sensible one, else `default`."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1e9:
        return float(value)
    return default


def append_quiet(root: str, *, code: int, error: str | None, seconds: float, now: float) -> bool:
    """Add the end of a tick that ended early (0: idle, 75: locked out) when it cannot change what
    hooks.on_event was told; False, having written nothing, when ralph.health must judge it."""
    path = ticks_file(root)
    holder = read_holder(tick_lock_file(root)) if code == LOCKED else None
    end = end_entry(now, code, seconds, error and flatten(error), None, holder)
    if not os.path.exists(path):
        return False  # the first end of all: ralph.health makes the file
    with locked(path):
        try:
            with open(path, "rb") as f:
                document = json.loads(f.read())
        except (OSError, ValueError, RecursionError):
            return False  # unreadable: ralph.health starts a new one
        if not isinstance(document, dict) or document.get("alerted") is not None:
            return False  # an alert stands: this end may be the recovery hooks must hear of
        ticks = document.get("ticks")
        if not isinstance(ticks, list) or (holder and _looks_hung(document, holder[1], now)):
            return False
        document["ticks"] = [*ticks, end][-RING_SIZE:]
        write(path, document)
    return True


def _looks_hung(document: dict[str, Any], since: str, now: float) -> bool:
    remembered = document.get("remembered")
    budget = positive(
        remembered.get("tick_budget_s") if isinstance(remembered, dict) else None, DEFAULT_TICK_BUDGET_S
    )
    began = parse_time(since)
    assert began is not None  # read_holder keeps only a holder whose time parses
    # A second early: the ring keeps whole seconds, and ralph.health judges a hung holder to the second.
    return held_too_long(now - began.timestamp() + 1, budget)
