"""The pause file: while it exists, ticks start no new task; work in flight still runs, is verified and lands.

`ralph pause` writes `.ralph/cache/parallel/paused` (JSON: when, why, by whom); `ralph resume` removes it.
A file, not a state field, so that pausing needs no lock and works even while a tick runs.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from ralph.clock import format_z
from ralph.constants import MAX_REASON_CHARS
from ralph.files import FileTooLarge, read_bounded, write_json
from ralph.nesting import loads_json
from ralph.text import one_line

# A pause file ralph writes is a few hundred bytes; a bigger one was not written by it.
MAX_PAUSE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Pause:
    since: str
    reason: str
    by: str

    def describe(self) -> str:
        """One line; the reason and the rest come from a file anyone can edit: shown, never obeyed."""
        why = f": {one_line(self.reason, MAX_REASON_CHARS)}" if self.reason else ""
        return f"paused since {one_line(self.since)} by {one_line(self.by)}{why}"


def pause(path: Path, *, now: datetime, reason: str) -> Pause:
    """Pause, or (already paused) keep the first pause: its time, who, and its reason, with a new
    reason added after it. A second `ralph pause` must not erase why the first person paused."""
    by = os.environ.get("USER") or f"uid {os.getuid()}"
    earlier = read_pause(path)
    if earlier is None:
        marker = Pause(since=format_z(now), reason=reason, by=by)
    else:
        reasons = earlier.reason.split("; ") if earlier.reason else []
        if reason and reason not in reasons:
            reasons.append(reason)
        marker = Pause(since=earlier.since, reason="; ".join(reasons), by=earlier.by)
        if marker == earlier:
            return earlier
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, asdict(marker))
    return marker


def resume(path: Path) -> bool:
    """Remove the pause file; False if there was none."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def read_pause(path: Path) -> Pause | None:
    try:
        raw = loads_json(read_bounded(path, MAX_PAUSE_BYTES))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, FileTooLarge):
        # A pause file someone wrote by hand (`touch paused`) still pauses.
        return Pause(since="?", reason="(unreadable pause file)", by="?")
    with contextlib.suppress(TypeError):
        marker = Pause(**raw)
        if all(isinstance(value, str) for value in asdict(marker).values()):
            return marker
    return Pause(since="?", reason="(unreadable pause file)", by="?")
