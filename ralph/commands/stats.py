"""`ralph stats [--since] [--json]`: throughput, time to land, gate pass rate, remediations, push races
and cost, over the task runs of ralph.history."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click

from ralph.checkout import open_checkout
from ralph.clock import format_z
from ralph.clock import now as read_clock
from ralph.commands._output import duration, emit_json, table
from ralph.errors import ExitCode
from ralph.history import UNKNOWN, Since, describe_spend, since_time
from ralph.statistics import Stats, compute, percentile
from ralph.summary import look


def stats(*, start: Path, since: Since, as_json: bool) -> ExitCode:
    checkout = open_checkout(start)
    now = read_clock()
    since_at = since_time(since, now)
    looked, _ = look(checkout, now, since=since_at)
    numbers = compute(looked.runs, since=since_at, now=now)
    if as_json:
        emit_json(numbers.as_dict())
    else:
        click.echo(render_stats(numbers))
    return ExitCode.OK


def _spread(values: list[timedelta]) -> str:
    median, p90 = percentile(values, 0.5), percentile(values, 0.9)
    if median is None or p90 is None:
        return UNKNOWN
    return f"{duration(median)} median, {duration(p90)} p90 (of {len(values)})"


def render_stats(s: Stats) -> str:
    rate, per_hour = s.gate_pass_rate, s.per_hour
    gate = UNKNOWN if rate is None else f"{rate:.0%} ({s.gate_passes} of {s.gate_runs} runs)"
    rows = [
        ["window", f"{format_z(s.start)} to {format_z(s.end)} ({duration(s.end - s.start)})"],
        ["landed", f"{s.landed} ({per_hour:.2f} an hour)" if per_hour is not None else str(s.landed)],
        ["queued to landed", _spread(list(s.time_to_land))],
        ["first start to landed", _spread(list(s.work_to_land))],
        ["CI gate pass rate", gate],
        ["remediations", str(s.remediations)],
        ["retries", str(s.retries)],
        ["push races", str(s.push_races) if s.push_races is not None else UNKNOWN],
        ["failed / blocked / rejected", f"{s.failed} / {s.blocked} / {s.rejected}"],
        ["in flight", str(s.in_flight)],
        ["cost", describe_spend(s.spend) + (f" ({s.spend_known} tasks reported)" if s.spend else "")],
    ]
    return "\n".join(line.rstrip() for line in table(["", ""], rows).splitlines()[1:])
