"""The line a person reads first: what landed, what is in flight, blocked or failed, how the ticks
are doing, and what starts next; and `look`, which reads everything it is made of once, for `ralph
status` and the status page."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ralph import health as ticks
from ralph.bookkeeping import current_queues
from ralph.checkout import Checkout
from ralph.errors import GitError, PreflightError, QueueError
from ralph.health import Health
from ralph.history import TaskRun, read_events, task_runs
from ralph.pause import read_pause
from ralph.queues import Queues
from ralph.state import Lifecycle, State, load_state
from ralph.text import duration

# "What happened last night": the landings the summary counts.
WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Summary:
    base: str
    landed: int  # in the last WINDOW
    in_flight: int
    blocked: int
    failed: int
    health: Health
    next_runnable: str | None
    runnable: int
    paused: bool
    queue_readable: bool

    def line(self, now: datetime) -> str:
        """`main: 14 landed in 24h, 3 in flight, 1 blocked, 2 failed · last tick 40s ago, ok · next
        runnable RQ-0012`."""
        counts = (
            f"{self.base}: {self.landed} landed in 24h, {self.in_flight} in flight, "
            f"{self.blocked} blocked, {self.failed} failed"
        )
        return " · ".join((counts, self._ticks(now), self._next()))

    def _ticks(self, now: datetime) -> str:
        last = self.health.last
        if last is None:
            return "no tick recorded yet"
        verdict = "ok" if self.health.ok else self.health.verdict.upper()
        return f"last tick {duration(now - last.at)} ago, {verdict}"

    def _next(self) -> str:
        if self.paused:
            return "paused"
        if not self.queue_readable:
            return "queue unreadable"
        if self.next_runnable is None:
            return "nothing runnable"
        more = f" (+{self.runnable - 1} more)" if self.runnable > 1 else ""
        return f"next runnable {self.next_runnable}{more}"

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "line": self.line(now),
            "landed_last_24h": self.landed,
            "in_flight": self.in_flight,
            "blocked": self.blocked,
            "failed": self.failed,
            "next_runnable": self.next_runnable,
            "runnable": self.runnable,
            "paused": self.paused,
        }


def summarize(
    *,
    base: str,
    state: State,
    queues: Queues | None,
    runs: Sequence[TaskRun],
    health: Health,
    paused: bool,
    max_attempts: int,
    now: datetime,
) -> Summary:
    """`runs` are the task runs of (at least) the last WINDOW, from ralph.history."""
    counts = state.lifecycle_counts()
    runnable = queues.runnable(state.by_task(), now, max_attempts=max_attempts) if queues is not None else []
    return Summary(
        base=base,
        landed=sum(1 for r in runs if r.landed and now - r.at <= WINDOW),
        in_flight=sum(1 for w in state.workers if w.lifecycle not in Lifecycle.terminal()),
        blocked=counts[str(Lifecycle.BLOCKED_PUSH)],
        failed=counts[str(Lifecycle.FAILED)],
        health=health,
        next_runnable=runnable[0].id if runnable else None,
        runnable=len(runnable),
        paused=paused,
        queue_readable=queues is not None,
    )


@dataclass(frozen=True)
class Looked:
    """What `ralph status` and the status page read, once."""

    state: State
    queues: Queues | None
    summary: Summary
    base: str
    runs: list[TaskRun]  # since the `since` asked for (the last WINDOW by default)


def look(checkout: Checkout, now: datetime, *, since: datetime | None) -> tuple[Looked, str | None]:
    """Read state.json, the queue as last fetched, events.jsonl and the tick ring once; and the
    queue's problem (None when it could be read). Task runs go back to `since` (None: everything
    recorded); the summary counts the last WINDOW whatever `since` is."""
    base = checkout.base_branch()
    state = load_state(checkout.paths.state, now=now, target_branch=base, remote=checkout.remote)
    queues: Queues | None = None
    queue_error = None
    try:
        queues = current_queues(checkout)
    except (QueueError, PreflightError, GitError) as e:
        # Status is what a person runs when something looks odd; a bad queue must not hide the workers.
        queue_error = str(e)
    day = now - WINDOW
    runs = task_runs(
        read_events(checkout.paths.events).events,
        tasks=[*queues.queue.tasks, *queues.done.tasks] if queues else [],
        workers=state.by_task(),
        since=None if since is None else min(since, day),
        now=now,
    )
    summary = summarize(
        base=base,
        state=state,
        queues=queues,
        runs=runs,
        health=ticks.load(checkout.root),
        paused=read_pause(checkout.paths.pause) is not None,
        max_attempts=checkout.config.agent.max_attempts,
        now=now,
    )
    if since is not None and since > day:
        runs = [r for r in runs if r.at >= since or r.outcome == "in_flight"]
    return Looked(state=state, queues=queues, summary=summary, base=base, runs=runs), queue_error


def base_problem(checkout: Checkout, base: str) -> str | None:
    """Why ticks cannot read the base branch, from what this clone knows (status does not fetch)."""
    git = checkout.git()
    remote = checkout.remote
    if git.run("remote", "get-url", remote, ok=(0, 2)).returncode != 0:
        return (
            f"no remote {remote!r} in {checkout.root}: ticks cannot fetch or land anything; "
            f"`git remote add {remote} <url>`, or set git.remote in .ralph/config.toml"
        )
    ref = checkout.tracking_ref(base)
    if git.run("rev-parse", "--verify", "--quiet", ref + "^{commit}", ok=(0, 1)).returncode != 0:
        return (
            f"{remote}/{base} is not in this clone: {remote} has no branch {base!r}, or it was never "
            f"fetched, and every tick fails; push it (`git push {remote} HEAD:{base}`) or set "
            f"git.base_branch in .ralph/config.toml, then `git fetch {remote}`"
        )
    return None
