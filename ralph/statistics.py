"""Numbers over task runs (ralph.history): throughput, time to land, gate pass rate, retries, cost."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ralph.clock import format_z
from ralph.history import Spend, TaskRun


@dataclass(frozen=True)
class Stats:
    start: datetime  # the window: from the later of --since and the first thing recorded
    end: datetime
    landed: int
    failed: int
    blocked: int
    rejected: int
    in_flight: int
    time_to_land: Sequence[timedelta]  # queued -> landed, for each landed task whose queue time is known
    work_to_land: Sequence[timedelta]  # first agent start -> landed, on this host
    gate_runs: int
    gate_passes: int
    remediations: int
    retries: int  # attempts beyond the first
    push_races: int | None  # pushes that did not land first time, over landed tasks where it is known
    spend: Spend | None
    spend_known: int  # tasks whose tokens or cost are known

    @property
    def hours(self) -> float:
        return max((self.end - self.start).total_seconds() / 3600, 0.0)

    @property
    def per_hour(self) -> float | None:
        return self.landed / self.hours if self.hours >= 1 / 60 else None

    @property
    def gate_pass_rate(self) -> float | None:
        return self.gate_passes / self.gate_runs if self.gate_runs else None

    def as_dict(self) -> dict[str, Any]:
        def seconds(value: timedelta | None) -> int | None:
            return None if value is None else int(value.total_seconds())

        return {
            "since": format_z(self.start),
            "until": format_z(self.end),
            "hours": round(self.hours, 3),
            "landed": self.landed,
            "failed": self.failed,
            "blocked": self.blocked,
            "rejected": self.rejected,
            "in_flight": self.in_flight,
            "landed_per_hour": None if self.per_hour is None else round(self.per_hour, 3),
            "time_to_land_seconds": {
                "median": seconds(percentile(self.time_to_land, 0.5)),
                "p90": seconds(percentile(self.time_to_land, 0.9)),
                "count": len(self.time_to_land),
            },
            "work_to_land_seconds": {
                "median": seconds(percentile(self.work_to_land, 0.5)),
                "p90": seconds(percentile(self.work_to_land, 0.9)),
                "count": len(self.work_to_land),
            },
            "gate_runs": self.gate_runs,
            "gate_passes": self.gate_passes,
            "gate_pass_rate": None if self.gate_pass_rate is None else round(self.gate_pass_rate, 4),
            "remediations": self.remediations,
            "retries": self.retries,
            "push_races": self.push_races,
            "usage": self.spend.as_dict() if self.spend else None,
            "usage_known_tasks": self.spend_known,
        }


def percentile(values: Sequence[timedelta], fraction: float) -> timedelta | None:
    """The nearest-rank percentile (0.5: the median; 0.9: p90); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def compute(runs: Sequence[TaskRun], *, since: datetime | None, now: datetime) -> Stats:
    firsts = [p.start for r in runs for p in r.phases[:1]] + [r.at for r in runs]
    start = min(firsts, default=now)
    if since is not None:
        start = max(since, start) if firsts else since
    landed = [r for r in runs if r.landed]
    pushes = [r.push_attempts for r in landed if r.push_attempts is not None]
    spends = [r.spend for r in runs if r.spend is not None]
    total: Spend | None = None
    for spend in spends:
        total = spend if total is None else total + spend
    return Stats(
        start=start,
        end=now,
        landed=len(landed),
        failed=sum(r.outcome == "failed" for r in runs),
        blocked=sum(r.outcome == "blocked" for r in runs),
        rejected=sum(r.outcome == "rejected" for r in runs),
        in_flight=sum(r.outcome == "in_flight" for r in runs),
        time_to_land=[t for r in landed if (t := r.time_to_land) is not None],
        work_to_land=[t for r in landed if (t := r.took) is not None],
        gate_runs=sum(r.gate_runs for r in runs),
        gate_passes=sum(r.gate_passes for r in runs),
        remediations=sum(r.remediations for r in runs),
        retries=sum(max(r.attempts - 1, 0) for r in runs),
        push_races=sum(pushes) if pushes else None,
        spend=total,
        spend_known=len(spends),
    )
