"""What happened to each task: read from events.jsonl, the done archive and state.json.

`ralph history`, `ralph stats`, the summary line of `ralph status` and the status page are all built
from the `TaskRun`s here. events.jsonl is this host's record (one line per lifecycle change, rotated
to events.jsonl.1); the done archive is every host's, so a task landed elsewhere or closed by hand
still shows, without the phases only this host saw.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from ralph.clock import format_z
from ralph.nesting import loads_json
from ralph.queue import Task, TaskStatus
from ralph.state import Lifecycle, Usage, Worker

logger = logging.getLogger(__name__)


# --- events.jsonl ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One line of events.jsonl (ralph.ledger writes them)."""

    at: datetime
    task_id: str
    event: str  # the lifecycle entered
    previous: str | None
    attempt: int
    detail: str
    fields: Mapping[str, Any] = field(default_factory=dict)  # pid, kind, head, sha, ...

    @classmethod
    def parse(cls, line: str) -> Event | None:
        """None for a line that is not an event (torn by a crash, edited by hand)."""
        try:
            raw = loads_json(line)
        except ValueError:
            return None
        if not isinstance(raw, dict):
            return None
        at, task_id, event = raw.get("at"), raw.get("task_id"), raw.get("event")
        if not (isinstance(at, str) and isinstance(task_id, str) and isinstance(event, str)):
            return None
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            return None
        if when.tzinfo is None:
            return None
        previous, attempt, detail = raw.get("previous"), raw.get("attempt"), raw.get("detail")
        rest = {k: v for k, v in raw.items() if k not in _EVENT_KEYS}
        return cls(
            at=when.astimezone(UTC),
            task_id=task_id,
            event=event,
            previous=previous if isinstance(previous, str) else None,
            attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else 0,
            detail=detail if isinstance(detail, str) else "",
            fields=rest,
        )


_EVENT_KEYS = frozenset({"at", "task_id", "event", "previous", "attempt", "detail"})


@dataclass(frozen=True)
class EventLog:
    events: list[Event]  # oldest first
    skipped: int = 0  # lines that were not events


def read_events(path: Path) -> EventLog:
    """events.jsonl and its rotated copy (`events.jsonl.1`, older), oldest first."""
    events: list[Event] = []
    skipped = 0
    for part in (path.with_name(path.name + ".1"), path):
        try:
            with open(part, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if not line.strip():
                        continue
                    event = Event.parse(line)
                    if event is None:
                        skipped += 1
                    else:
                        events.append(event)
        except FileNotFoundError:
            continue
    if skipped:
        logger.debug("%s: %d lines are not events; skipped", path, skipped)
    # Appended in order by one tick at a time, but a clock stepped back must not reorder phases.
    events.sort(key=lambda e: e.at)
    return EventLog(events, skipped)


# --- tokens and cost ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spend:
    """What a task's agent runs reported spending; cost is None when no run reported one."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None

    @classmethod
    def of(cls, usage: Sequence[Usage]) -> Spend | None:
        """The total of a worker's usage entries; None when it has none (nothing known)."""
        if not usage:
            return None
        costs = [u.cost_usd for u in usage if u.cost_usd is not None]
        return cls(
            input_tokens=sum(u.input_tokens for u in usage),
            cached_input_tokens=sum(u.cached_input_tokens for u in usage),
            output_tokens=sum(u.output_tokens for u in usage),
            cost_usd=sum(costs) if costs else None,
        )

    def __add__(self, other: Spend) -> Spend:
        costs = [c for c in (self.cost_usd, other.cost_usd) if c is not None]
        return Spend(
            self.input_tokens + other.input_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.output_tokens + other.output_tokens,
            sum(costs) if costs else None,
        )

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.cached_input_tokens + self.output_tokens

    def describe(self) -> str:
        """`$0.42, 31k tokens`; the dash when nothing is known."""
        parts = []
        if self.cost_usd is not None:
            parts.append(f"${self.cost_usd:.2f}")
        if self.tokens:
            parts.append(f"{_compact(self.tokens)} tokens")
        return ", ".join(parts) or UNKNOWN

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 6),
        }


UNKNOWN = "—"  # what a person sees for a number nobody reported


def describe_spend(spend: Spend | None) -> str:
    return spend.describe() if spend else UNKNOWN


def _compact(n: int) -> str:
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k".replace(".0k", "k")
    return f"{n / 1_000_000:.1f}M".replace(".0M", "M")


# --- task runs -----------------------------------------------------------------------------------------

PhaseKind = Literal["agent", "gate", "remediation", "landing"]
_PHASE_OF: dict[str, PhaseKind] = {
    str(Lifecycle.RUNNING): "agent",
    str(Lifecycle.CHECKING): "gate",
    str(Lifecycle.REMEDIATING): "remediation",
    str(Lifecycle.INTEGRATING): "landing",
}
Outcome = Literal["landed", "failed", "blocked", "in_flight", "done", "rejected"]
_OUTCOME_OF: dict[str, Outcome] = {
    str(Lifecycle.COMPLETED): "landed",
    str(Lifecycle.FAILED): "failed",
    str(Lifecycle.BLOCKED_PUSH): "blocked",
}
# A gate that ends in one of these failed: its own exit, or its timeout (not a lost job or a cancel).
_GATE_FAILED = re.compile(r"^CI failed|^ci job timed out")


@dataclass(frozen=True)
class Phase:
    kind: PhaseKind
    start: datetime
    end: datetime
    attempt: int
    open: bool = False  # still going when the history was read

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "start": format_z(self.start),
            "end": format_z(self.end),
            "attempt": self.attempt,
            "open": self.open,
        }


@dataclass
class TaskRun:
    """One task's story: how it ended (so far), when, how long it took and what it took."""

    task_id: str
    outcome: Outcome
    at: datetime  # when it reached the outcome; for one in flight, its latest change
    title: str | None = None
    queued_at: datetime | None = None  # the task's created_at, when the queue or archive has it
    started_at: datetime | None = None  # its first agent start on this host
    attempts: int = 0
    remediations: int = 0
    gate_runs: int = 0
    gate_passes: int = 0
    push_attempts: int | None = None  # pushes that did not land first time; None: not known
    sha: str | None = None  # what landed
    error: str | None = None  # why it failed or is blocked
    spend: Spend | None = None
    phases: list[Phase] = field(default_factory=list)

    @property
    def took(self) -> timedelta | None:
        """From its first agent start to its outcome."""
        return self.at - self.started_at if self.started_at else None

    @property
    def landed(self) -> bool:
        return self.outcome in ("landed", "done")

    @property
    def time_to_land(self) -> timedelta | None:
        """From queued to landed."""
        return self.at - self.queued_at if self.landed and self.queued_at else None

    def as_dict(self) -> dict[str, Any]:
        took, to_land = self.took, self.time_to_land
        return {
            "task_id": self.task_id,
            "title": self.title,
            "outcome": self.outcome,
            "at": format_z(self.at),
            "queued_at": format_z(self.queued_at) if self.queued_at else None,
            "started_at": format_z(self.started_at) if self.started_at else None,
            "took_seconds": int(took.total_seconds()) if took is not None else None,
            "time_to_land_seconds": int(to_land.total_seconds()) if to_land is not None else None,
            "attempts": self.attempts,
            "remediations": self.remediations,
            "gate_runs": self.gate_runs,
            "gate_passes": self.gate_passes,
            "push_attempts": self.push_attempts,
            "sha": self.sha,
            "error": self.error,
            "usage": self.spend.as_dict() if self.spend else None,
            "phases": [p.as_dict() for p in self.phases],
        }


def task_runs(
    events: Iterable[Event],
    *,
    tasks: Iterable[Task] = (),
    workers: Mapping[str, Worker] | None = None,
    since: datetime | None = None,
    now: datetime,
) -> list[TaskRun]:
    """Every task that changed at or after `since` (all of them with None), oldest outcome first.

    `tasks` are the queue's and the done archive's (for titles, queue times, and what landed
    elsewhere); `workers` are state.json's (for push attempts and tokens, while their records last).
    """
    workers = workers or {}
    known = {t.id: t for t in tasks}
    by_task: dict[str, list[Event]] = {}
    for event in events:
        by_task.setdefault(event.task_id, []).append(event)
    runs: dict[str, TaskRun] = {}
    for task_id, task_events in by_task.items():
        worker = workers.get(task_id)
        in_flight = worker is not None and worker.lifecycle not in Lifecycle.terminal()
        if since is not None and task_events[-1].at < since and not in_flight:
            continue
        runs[task_id] = _run_of(task_id, task_events, worker, now)
    for task in known.values():
        closed = task.completed_at
        if task.id in runs or not _closed(task) or closed is None or (since is not None and closed < since):
            continue
        outcome: Outcome = "rejected" if task.status is TaskStatus.REJECTED else "done"
        runs[task.id] = TaskRun(task_id=task.id, outcome=outcome, at=closed)
    for run in runs.values():
        listed = known.get(run.task_id)
        if listed is not None:
            run.title = listed.title
            run.queued_at = listed.created_at
    return sorted(runs.values(), key=lambda r: (r.at, r.task_id))


def _add_phase(phases: list[Phase], phase: Phase) -> None:
    """Append `phase`, or extend the last one when it is the same kind of the same attempt."""
    last = phases[-1] if phases else None
    if (
        last is not None
        and (last.kind, last.attempt) == (phase.kind, phase.attempt)
        and last.end == phase.start
    ):
        phases[-1] = Phase(last.kind, last.start, phase.end, last.attempt, open=phase.open)
        return
    phases.append(phase)


def _closed(task: Task) -> bool:
    return task.status in (TaskStatus.DONE, TaskStatus.REJECTED)


def _run_of(task_id: str, events: Sequence[Event], worker: Worker | None, now: datetime) -> TaskRun:
    phases: list[Phase] = []
    current: tuple[PhaseKind, datetime, int] | None = None
    run = TaskRun(task_id=task_id, outcome="in_flight", at=events[-1].at)
    for event in events:
        if current is not None:
            kind, start, attempt = current
            _add_phase(phases, Phase(kind, start, event.at, attempt))
            current = None
        kind_now = _PHASE_OF.get(event.event)
        if kind_now == "landing" and not event.detail.startswith("CI passed"):
            # Committed and waiting for its train position's gate (or a gate's failure waiting to be
            # blamed): part of the gate's phase, not of the landing's.
            kind_now = "gate"
        if kind_now is not None:
            current = (kind_now, event.at, event.attempt)
        if event.event == str(Lifecycle.RUNNING) and run.started_at is None:
            run.started_at = event.at
        if event.event == str(Lifecycle.REMEDIATING):
            run.remediations += 1
        if event.previous == str(Lifecycle.CHECKING):
            # The gate's verdict: the worker goes back to integrating, saying "CI passed" or "CI failed"
            # (ralph before the merge train went straight on to a remediation or to failed).
            passed = event.event == str(Lifecycle.INTEGRATING) and event.detail.startswith("CI passed")
            failed = bool(_GATE_FAILED.match(event.detail)) and event.event in (
                str(Lifecycle.INTEGRATING),
                str(Lifecycle.REMEDIATING),
                str(Lifecycle.FAILED),
            )
            if passed or failed:
                run.gate_runs += 1
                run.gate_passes += passed
        run.attempts = max(run.attempts, event.attempt)
        if event.event == str(Lifecycle.COMPLETED):
            sha = event.fields.get("sha")
            run.sha = sha if isinstance(sha, str) else None
            pushes = event.fields.get("push_attempts")
            if isinstance(pushes, int) and not isinstance(pushes, bool):
                run.push_attempts = pushes
    last = events[-1]
    if current is not None:
        kind, start, attempt = current
        _add_phase(phases, Phase(kind, start, max(now, start), attempt, open=True))
    run.phases = phases
    run.outcome = _OUTCOME_OF.get(last.event, "in_flight")
    if run.outcome in ("failed", "blocked"):
        run.error = last.detail or None
    if worker is not None:
        if run.push_attempts is None and worker.lifecycle in (Lifecycle.COMPLETED, Lifecycle.BLOCKED_PUSH):
            run.push_attempts = worker.push_attempts
        run.spend = Spend.of(worker.usage)
    return run


# --- --since ----------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([mhdw])$")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DEFAULT_SINCE = "24h"


class SinceError(ValueError):
    """A --since value that is neither a duration nor a time."""


Since = timedelta | datetime | None  # None: everything recorded


def parse_since(text: str) -> Since:
    """`30m`, `24h`, `7d`, `2w` (ago), an RFC 3339 time or a date (UTC when no offset is given), or
    `all`."""
    value = text.strip().lower()
    shown = repr(text if len(text) <= 40 else text[:39] + "…")  # the error is one short line
    if value == "all":
        return None
    relative = _RELATIVE.match(value)
    if relative:
        seconds = float(relative.group(1)) * _UNITS[relative.group(2)]
        if seconds > 100 * 366 * 86400:
            raise SinceError(f"{shown} is further back than anything ralph recorded; use `all`")
        return timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SinceError(
            f"{shown} is not a duration (30m, 24h, 7d, 2w), a time (2026-11-20 or "
            "2026-11-20T22:00:00Z) or `all`"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def since_time(since: Since, now: datetime) -> datetime | None:
    if isinstance(since, timedelta):
        return now - since
    return since
