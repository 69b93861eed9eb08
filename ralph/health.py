"""Tick health: how the last ticks ended, kept in a small ring file, and whether that is healthy.

Every `ralph run` records its end in `.ralph/cache/parallel/ticks.json`: its time, exit code and a
one-line error, including a tick that failed before it could take the lock (a broken config), one
that found the lock held (exit 75, with who held it), and one that could not reach the remote even
though it exited 0 (`note_remote_unreachable`). `ralph status` and `ralph doctor` read it to say,
first, that ticks are failing; hooks.on_event hears `ticks_failing` once when they start failing and
`ticks_recovered` once when they run again, not every minute.

Standard library only: a tick that failed on a broken install or config is recorded all the same. The
ring file itself (where, its lock, the write, an early end's quick append) is ralph.ring's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

from ralph import ring
from ralph.ring import DEFAULT_TICK_BUDGET_S, RING_SIZE, held_too_long

logger = logging.getLogger(__name__)

# Failing ticks in a row before hooks.on_event is told: one failed fetch on a flaky network is not
# worth waking anyone, three in a row (three minutes under a one-minute timer) are.
ALERT_AFTER: Final = 3
DEFAULT_HOOK_TIMEOUT_S: Final = 300.0
# Tick-health hooks log to runs/<this>/hooks.log. A task id is a prefix, a dash and a number, so no
# task's run directory can have this name.
HOOK_RUN_DIR: Final = "ticks"


def ticks_file(root: Path) -> Path:
    return Path(ring.ticks_file(str(root)))


def tick_lock_file(root: Path) -> Path:
    """The tick lock (ralph.lock writes its holder into it as `pid N since TIME`)."""
    return Path(ring.tick_lock_file(str(root)))


def find_root(start: Path) -> Path | None:
    """The checkout holding `start`, found without git: the nearest directory with a `.git`."""
    try:
        here = start.resolve()
    except OSError:
        return None
    for directory in (here, *here.parents):
        if (directory / ".git").exists():
            return directory
    return None


def _z(value: datetime) -> str:
    return ring.z(value.timestamp())


# --- who holds the tick lock -----------------------------------------------------------------------


@dataclass(frozen=True)
class Holder:
    """Who holds the tick lock, as its holder wrote it into the lock file."""

    pid: int
    since: datetime

    @classmethod
    def from_dict(cls, raw: object) -> Holder | None:
        if not isinstance(raw, dict):
            return None
        pid, since = raw.get("pid"), ring.parse_time(raw.get("since"))
        if not isinstance(pid, int) or isinstance(pid, bool) or since is None:
            return None
        return cls(pid, since)


def read_lock_holder(lock: Path) -> Holder | None:
    """The last holder the lock file names; None when it names none (or cannot be read)."""
    found = ring.read_holder(str(lock))
    since = ring.parse_time(found[1]) if found else None
    return Holder(found[0], since) if found and since else None


# --- the ring ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TickEnd:
    """How one tick ended."""

    at: datetime
    exit_code: int
    seconds: float = 0.0
    error: str | None = None  # one line; None when it succeeded
    remote_error: str | None = None  # it could not reach the remote (whatever it exited with)
    holder: Holder | None = None  # exit 75: who held the lock

    @property
    def failed(self) -> bool:
        return self.exit_code not in (0, ring.LOCKED)

    @property
    def locked_out(self) -> bool:
        return self.exit_code == ring.LOCKED

    def as_dict(self) -> dict[str, Any]:
        holder = (self.holder.pid, _z(self.holder.since)) if self.holder else None
        return ring.end_entry(
            self.at.timestamp(), self.exit_code, self.seconds, self.error, self.remote_error, holder
        )

    @classmethod
    def from_dict(cls, raw: object) -> TickEnd | None:
        """One entry of the ring file; None for one that is not a tick end (a hand edit, say)."""
        if not isinstance(raw, dict):
            return None
        at, code, seconds = ring.parse_time(raw.get("at")), raw.get("exit_code"), raw.get("seconds", 0.0)
        if at is None or not isinstance(code, int) or isinstance(code, bool):
            return None
        error, remote = raw.get("error"), raw.get("remote_error")
        return cls(
            at=at,
            exit_code=code,
            seconds=float(seconds) if isinstance(seconds, int | float) else 0.0,
            error=error if isinstance(error, str) else None,
            remote_error=remote if isinstance(remote, str) else None,
            holder=Holder.from_dict(raw.get("holder")),
        )


@dataclass(frozen=True)
class Remembered:
    """What the last tick that could read the config knew: enough to run hooks.on_event when the
    config itself is what broke."""

    on_event: tuple[str, ...] = ()
    hook_timeout_s: float = DEFAULT_HOOK_TIMEOUT_S
    base_branch: str = ""
    tick_budget_s: float = DEFAULT_TICK_BUDGET_S

    def as_dict(self) -> dict[str, Any]:
        return {
            "on_event": list(self.on_event),
            "hook_timeout_s": self.hook_timeout_s,
            "base_branch": self.base_branch,
            "tick_budget_s": self.tick_budget_s,
        }

    @classmethod
    def from_dict(cls, raw: object) -> Remembered:
        if not isinstance(raw, dict):
            return cls()
        argv = raw.get("on_event")
        timeout, base, budget = raw.get("hook_timeout_s"), raw.get("base_branch"), raw.get("tick_budget_s")
        return cls(
            on_event=tuple(argv) if isinstance(argv, list) and all(isinstance(a, str) for a in argv) else (),
            hook_timeout_s=ring.positive(timeout, DEFAULT_HOOK_TIMEOUT_S),
            base_branch=base if isinstance(base, str) else "",
            tick_budget_s=ring.positive(budget, DEFAULT_TICK_BUDGET_S),
        )


@dataclass
class Ring:
    ticks: list[TickEnd] = field(default_factory=list)  # the newest last
    remembered: Remembered = field(default_factory=Remembered)
    alerted: str | None = None  # the problem hooks.on_event was told of, until ticks recover

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "remembered": self.remembered.as_dict(),
            "alerted": self.alerted,
            "ticks": [t.as_dict() for t in self.ticks],
        }


def read_ring(path: Path) -> Ring:
    """The ring file; an empty ring when there is none, or when it is unreadable (the next tick's
    record replaces it: it only ever holds the last few ticks)."""
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return Ring()
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: nested absurdly deep
        logger.debug("%s is unreadable (%s); starting a new one", path, e)
        return Ring()
    if not isinstance(raw, dict):
        return Ring()
    ticks = raw.get("ticks")
    ends = [t for t in (TickEnd.from_dict(x) for x in ticks) if t] if isinstance(ticks, list) else []
    alerted = raw.get("alerted")
    return Ring(
        ticks=ends[-RING_SIZE:],
        remembered=Remembered.from_dict(raw.get("remembered")),
        alerted=alerted if isinstance(alerted, str) else None,
    )


# --- judging the ring -------------------------------------------------------------------------------

Verdict = Literal["ok", "failing", "offline", "hung", "unknown"]


@dataclass(frozen=True)
class Health:
    verdict: Verdict  # unknown: no tick recorded yet
    streak: int = 0  # ticks in a row that show it
    last: TickEnd | None = None  # the newest tick of all
    since: datetime | None = None  # when the streak began (for hung: since the lock was taken)
    problem: str | None = None  # one line, for the first lines of status and doctor
    capped: bool = False  # the streak fills the whole ring: it is at least this long

    @property
    def ok(self) -> bool:
        return self.verdict in ("ok", "unknown")

    @property
    def alarming(self) -> bool:
        """Worth telling hooks.on_event: a hung tick at once, failures once they repeat."""
        if self.verdict == "hung":
            return True
        return self.verdict in ("failing", "offline") and self.streak >= ALERT_AFTER

    def as_dict(self, now: datetime) -> dict[str, Any]:
        last = self.last
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "problem": self.problem,
            "streak": self.streak,
            "since": _z(self.since) if self.since else None,
            "last_tick_at": _z(last.at) if last else None,
            "last_tick_seconds_ago": int((now - last.at).total_seconds()) if last else None,
            "last_exit_code": last.exit_code if last else None,
            "last_error": last.error if last else None,
        }


def assess(ticks: Sequence[TickEnd], *, tick_budget_s: float = DEFAULT_TICK_BUDGET_S) -> Health:
    """Judge the recorded ticks, the newest last."""
    if not ticks:
        return Health("unknown")
    last = ticks[-1]
    holder = last.holder
    held = (last.at - holder.since).total_seconds() if holder is not None else 0.0
    if last.locked_out and holder is not None and held_too_long(held, tick_budget_s):
        streak = 0
        for tick in reversed(ticks):
            if not (tick.locked_out and tick.holder == holder):
                break
            streak += 1
        return Health(
            "hung",
            streak=streak,
            last=last,
            since=holder.since,
            capped=streak == len(ticks) == RING_SIZE,
            problem=(
                f"{_the_last(streak, streak == len(ticks) == RING_SIZE)} found the lock held by pid "
                f"{holder.pid} since {_z(holder.since)}: a tick that does not finish, so none since has "
                f"done anything (`ralph doctor` says how to look at it)"
            ),
        )
    # A tick that found the lock held (and not for long) says nothing either way: skip it.
    considered = [t for t in ticks if not t.locked_out]
    streak_ticks: list[TickEnd] = []
    for tick in reversed(considered):
        if not (tick.failed or tick.remote_error):
            break
        streak_ticks.append(tick)
    if not streak_ticks:
        return Health("ok", last=last)
    newest = streak_ticks[0]
    capped = len(streak_ticks) == len(considered) and len(ticks) == RING_SIZE
    which = _the_last(len(streak_ticks), capped)
    if newest.failed:
        verdict: Verdict = "failing"
        problem = f"{which} failed: {newest.error or f'exit {newest.exit_code}'}"
    else:
        verdict = "offline"
        problem = f"{which} could not reach the remote: {newest.remote_error}"
    return Health(
        verdict,
        streak=len(streak_ticks),
        last=last,
        since=streak_ticks[-1].at,
        problem=problem,
        capped=capped,
    )


def _the_last(n: int, capped: bool) -> str:
    if n == 1:
        return "the last tick"
    return f"the last {n}{'+' if capped else ''} ticks"


def load(root: Path) -> Health:
    """The health of the ticks of the checkout at `root`, as recorded."""
    kept = read_ring(ticks_file(root))
    return assess(kept.ticks, tick_budget_s=kept.remembered.tick_budget_s)


# --- recording a tick's end ------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """Ticks started failing, or recovered: what hooks.on_event hears, once."""

    event: Literal["ticks_failing", "ticks_recovered"]
    reason: str
    at: datetime
    remembered: Remembered


def record(root: Path, end: TickEnd, remembered: Remembered | None = None) -> Change | None:
    """Add `end` to the ring (and what the config said, when it could be read); return the change in
    health that hooks.on_event must hear of, if this tick made one."""
    path = ticks_file(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with ring.locked(str(path)):
        kept = read_ring(path)
        if remembered is not None:
            kept.remembered = remembered
        kept.ticks = [*kept.ticks, end][-RING_SIZE:]
        health = assess(kept.ticks, tick_budget_s=kept.remembered.tick_budget_s)
        change = None
        if kept.alerted is None and health.alarming and health.problem:
            kept.alerted = health.problem
            change = Change("ticks_failing", health.problem, end.at, kept.remembered)
        elif kept.alerted is not None and health.verdict == "ok":
            change = Change(
                "ticks_recovered", f"ticks run again; before: {kept.alerted}", end.at, kept.remembered
            )
            kept.alerted = None
        ring.write(str(path), kept.as_dict())
    return change


# Set by a tick that could not reach the remote but carried on; read when the tick's end is recorded.
_remote_errors: list[str] = []


def note_remote_unreachable(reason: str) -> None:
    """Say that this tick could not reach the remote (a fetch or a push failed to connect), even if it
    goes on and exits 0: ticks that keep doing so are unhealthy, since nothing they verify can land."""
    _remote_errors.append(ring.flatten(reason))


def _now() -> datetime:
    return datetime.now(UTC)


def record_early_end(
    root: Path,
    *,
    code: int,
    error: str | None,
    seconds: float,
    announce: Callable[[Path, Change], None],
) -> None:
    """Record a tick that ended in ralph.entry, before the full command line was imported: one that
    found the lock held (75), or one whose idle stamp said there was nothing to do (0)."""
    holder = read_lock_holder(tick_lock_file(root)) if code == ring.LOCKED else None
    error = error and ring.flatten(error)
    end = TickEnd(at=_now(), exit_code=code, seconds=seconds, error=error, holder=holder)
    change = record(root, end, None)
    if change is not None:
        announce(root, change)


class Recording:
    """Records the end of the tick run inside it, however it ends; see `recording`."""

    def __init__(
        self,
        start: Path,
        *,
        facts: Callable[[Path], Remembered | None],
        announce: Callable[[Path, Change], None],
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.start = start
        self.facts = facts
        self.announce = announce
        self.clock = clock
        self._began = 0.0

    def __enter__(self) -> Recording:
        self._began = time.monotonic()
        _remote_errors.clear()
        return self

    def read_facts_with(self, facts: Callable[[Path], Remembered | None]) -> None:
        """Read what the config says with `facts` instead: a tick that opened its checkout already
        knows, and need not find its root and parse its config over again at its end."""
        self.facts = facts

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Recording must never change how the tick ends, nor hide why it failed.
        try:
            self._record(exc)
        except Exception as e:
            logger.warning("could not record this tick's end (%s); `ralph status` will not show it", e)

    def _record(self, exc: BaseException | None) -> None:
        root = find_root(self.start)
        if root is None or not (root / ".ralph").is_dir():
            return  # not a checkout set up for ralph: nothing to record into
        code, error = _outcome(exc)
        holder = read_lock_holder(tick_lock_file(root)) if code == ring.LOCKED else None
        end = TickEnd(
            at=self.clock(),
            exit_code=code,
            seconds=time.monotonic() - self._began,
            error=error,
            remote_error=_remote_errors[-1] if _remote_errors else None,
            holder=holder,
        )
        # A tick that found the lock held read nothing new; the tick holding it remembers the config.
        change = record(root, end, None if code == ring.LOCKED else self.facts(root))
        if change is not None:
            self.announce(root, change)


def recording(
    start: Path,
    *,
    facts: Callable[[Path], Remembered | None],
    announce: Callable[[Path, Change], None],
    clock: Callable[[], datetime] = _now,
) -> Recording:
    """`with recording(start, ...):` around a tick records how it ended in the ring file of the
    checkout holding `start`. `facts` reads what the config says (None when it cannot be read);
    `announce` runs hooks.on_event when the tick changed the health of ticks."""
    return Recording(start, facts=facts, announce=announce, clock=clock)


def _outcome(exc: BaseException | None) -> tuple[int, str | None]:
    if exc is None:
        return 0, None
    # Imported here, when a tick failed: this module is imported before the tick's lock is taken.
    from ralph.errors import classify

    failure = classify(exc)  # as the command line maps it: the same code and the same words
    return int(failure.exit_code), ring.flatten(failure.message)
