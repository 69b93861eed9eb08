"""Benchmark 8: end to end. 20 queued tasks, an agent of 2 s, a CI gate of 3 s, `--workers 4`,
`ci.max_parallel 4`, and a timer that starts a tick every 60 s, until all 20 landed.

The agent is the scripted agent told to sleep 2 s before its change (each task adds its own file);
the gate is `sleep 3`. The timer is simulated: the benchmark starts `python -m ralph -C <control> run
--workers 4 --allow-root` at t = 0, 60, 120, ... s, as a systemd timer or cron would. Any other tick
is ralph's own doing: with `run.follow_jobs` (on by default), a job that ends asks for a tick at once,
and those ticks run for real, as separate `ralph run` processes the job wrapper starts. They are
counted from the tick-health ring (`ticks.json`, which every `ralph run` records its end in), read
every quarter second: every tick end there that is not one of the timer's is a job-followed tick.

Reported: the wall time from the first tick to the moment all 20 are completed (state.json read every
quarter second), the timer's ticks and the others, a task's median time from its start to its
landing (events.jsonl), and the ratio to the issue's target, 1.5 x 20/4 x (2 + 3) s = 37.5 s. While
ticks do not follow the jobs, this is the timer-only figure: a task needs three ticks (start; reap
the agent, join the train and start its gate; reap the gate and land), so about 20/4 + 1 timer
periods.

    python bench/end_to_end.py [--runs N] [--period SECONDS]
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from common import (
    PYTHON,
    Figure,
    Project,
    Row,
    config_toml,
    heading,
    make_project,
    print_table,
    runs_from_argv,
    sandbox,
    task,
)

RUNS = 1
TASKS = 20
WORKERS = 4
AGENT_S = 2
CI_S = 3
PERIOD_S = 60.0
LIMIT_S = 20 * 60.0
TARGET_S = 1.5 * TASKS / WORKERS * (AGENT_S + CI_S)


@dataclass
class Ended:
    seconds: float
    timer_ticks: int
    other_ticks: int
    other_exit_codes: dict[int, int]
    latency_s: float  # a task's median time from its start to its landing
    gate_runs: int


def build(root: Path) -> Project:
    tasks = [
        task(n, title=f"Feature {n}", description=f"scripted-agent: sleep {AGENT_S}")
        for n in range(1, TASKS + 1)
    ]
    config = config_toml(
        ci_command=["sleep", str(CI_S)], workers=WORKERS, max_parallel=WORKERS, follow_jobs=True
    )
    return make_project(root, tasks=tasks, config=config)


def _key(end: dict[str, Any]) -> tuple[Any, ...]:
    return (end.get("at"), end.get("exit_code"), end.get("seconds"), end.get("error"))


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def settle(project: Project, timeout: float = 120) -> None:
    """Until no job runs and no tick holds the lock (a job-followed tick is no child of ours), so the
    sandbox is not removed under one."""
    project.wait_for_jobs(timeout)
    fd = os.open(project.cache / "state.json.lock", os.O_RDWR)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"a tick still holds the lock after {timeout:.0f} s") from None
                time.sleep(0.1)
    finally:
        os.close(fd)


def once(root: Path, period: float) -> Ended:
    project = build(root)
    seen: set[tuple[Any, ...]] = {_key(e) for e in project.ring()}
    ends: list[dict[str, Any]] = []
    timer_ticks = 0
    timer_procs: list[subprocess.Popen[bytes]] = []
    start = time.monotonic()
    next_timer = start
    finished = None
    while finished is None:
        now = time.monotonic()
        if now >= next_timer:
            # Started, not waited for: the timer does not wait for a tick either.
            timer_procs.append(
                subprocess.Popen(
                    [
                        PYTHON,
                        "-m",
                        "ralph",
                        "-C",
                        str(project.control),
                        "run",
                        "--workers",
                        str(WORKERS),
                        "--allow-root",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            timer_ticks += 1
            next_timer += period
        for end in project.ring():
            if _key(end) not in seen:
                seen.add(_key(end))
                ends.append(end)
        if project.lifecycles().get("completed", 0) == TASKS:
            finished = time.monotonic() - start
        elif now - start > LIMIT_S:
            raise RuntimeError(f"not done after {LIMIT_S:.0f} s: {project.lifecycles()}")
        else:
            time.sleep(0.25)
    for p in timer_procs:
        p.wait()
    settle(project)
    for end in project.ring():  # the last ticks' ends
        if _key(end) not in seen:
            seen.add(_key(end))
            ends.append(end)
    others = len(ends) - timer_ticks
    codes: dict[int, int] = {}
    for end in ends:
        codes[end["exit_code"]] = codes.get(end["exit_code"], 0) + 1
    events = project.events()
    began = {e["task_id"]: _at(e["at"]) for e in reversed(events) if e["event"] == "running"}
    landed = {e["task_id"]: _at(e["at"]) for e in events if e["event"] == "completed"}
    latency = Figure([landed[t] - began[t] for t in landed if t in began]).median
    return Ended(
        seconds=finished,
        timer_ticks=timer_ticks,
        other_ticks=max(0, others),
        other_exit_codes=codes,
        latency_s=latency,
        gate_runs=sum(1 for e in events if e["event"] == "checking"),
    )


def run(runs: int = RUNS, period: float = PERIOD_S) -> list[Row]:
    heading(
        f"8. end to end: {TASKS} tasks, agent {AGENT_S} s, CI {CI_S} s, --workers {WORKERS}, "
        f"ci.max_parallel {WORKERS}, a timer tick every {period:g} s"
    )
    results = []
    for k in range(runs):
        with sandbox(f"e2e{k}") as root:
            results.append(once(root, period))
    for n, r in enumerate(results, 1):
        print(
            f"  run {n}: {r.seconds:.1f} s; timer ticks {r.timer_ticks}, job-followed ticks {r.other_ticks}; "
            f"exit codes of all ticks {r.other_exit_codes}; "
            f"a task's median start-to-landed {r.latency_s:.1f} s; "
            f"gate runs {r.gate_runs}"
        )
    figure = Figure([r.seconds for r in results])
    target = Figure([TARGET_S])
    followed = sum(r.other_ticks for r in results)
    rows = [
        Row(
            f"end to end, {TASKS} tasks, timer {period:g} s",
            figure,
            target,
            f"1.5 x {TASKS}/{WORKERS} x ({AGENT_S}+{CI_S}) s",
            notes=("job-followed ticks seen: " + str(followed))
            + ("" if followed else " (none: this is the timer-only figure)"),
            extra={"runs": [r.__dict__ for r in results], "period_s": period},
        )
    ]
    print_table(rows)
    return rows


if __name__ == "__main__":
    from common import hermetic

    hermetic()
    given = float(sys.argv[sys.argv.index("--period") + 1]) if "--period" in sys.argv else PERIOD_S
    sys.exit(0 if run(runs_from_argv(RUNS, minimum=1), given) else 1)
