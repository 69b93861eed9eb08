"""`ralph history [--since] [--json]`: what landed, failed, was blocked or is in flight, when, how long
it took and in how many attempts; from events.jsonl, the done archive and state.json."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from ralph.checkout import open_checkout
from ralph.clock import format_z
from ralph.clock import now as read_clock
from ralph.commands._output import duration, emit_json, one_line, table
from ralph.errors import ExitCode
from ralph.history import Since, TaskRun, describe_spend, since_time
from ralph.summary import look


def history(*, start: Path, since: Since, as_json: bool) -> ExitCode:
    checkout = open_checkout(start)
    now = read_clock()
    since_at = since_time(since, now)
    looked, _ = look(checkout, now, since=since_at)
    runs = looked.runs
    if as_json:
        emit_json(
            {
                "since": format_z(since_at) if since_at else None,
                "until": format_z(now),
                "tasks": [r.as_dict() for r in runs],
            }
        )
    else:
        click.echo(render_history(runs, since_at))
    return ExitCode.OK


def render_history(runs: list[TaskRun], since: datetime | None) -> str:
    window = f"since {format_z(since)}" if since else "in everything recorded"
    if not runs:
        return f"nothing landed, failed or ran {window}"
    rows = []
    for run in runs:
        took = run.took
        what = f"{one_line(run.title, 60)}" + (f" ({run.sha[:10]})" if run.sha else "")
        if run.error:
            what += f": {one_line(run.error, 80)}"
        rows.append(
            [
                format_z(run.at),
                run.task_id,
                run.outcome.replace("_", " "),
                duration(took) if took is not None else "-",
                str(run.attempts or "-"),
                describe_spend(run.spend),
                what,
            ]
        )
    landed = sum(r.landed for r in runs)
    failed, blocked = _count(runs, "failed"), _count(runs, "blocked")
    total = (
        f"{landed} landed, {failed} failed, {blocked} blocked, {_count(runs, 'in_flight')} in flight {window}"
    )
    return table(["WHEN", "TASK", "OUTCOME", "TOOK", "ATTEMPTS", "COST", "TITLE"], rows) + "\n" + total


def _count(runs: list[TaskRun], outcome: str) -> int:
    return sum(r.outcome == outcome for r in runs)
