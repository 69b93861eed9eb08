"""The meter on agent runs: what each reported spending, the pause of a runner whose agent stopped at a
usage or rate limit, and agent.max_cost_usd_per_task. Steps of the tick, over its crew (ralph.crew);
what a run's output says is read by ralph.usage. Whether an agent may start at all is the crew's
(Crew.held_back).

A run that stops at a limit is not the task's fault: its attempt is not counted, the task starts again
from scratch once the runner's pause ends, and no agent of that runner starts before then (README
"Agent runners": usage limits).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ralph import job as jobs
from ralph.clock import format_z
from ralph.crew import Crew
from ralph.errors import RalphError
from ralph.events import append_event
from ralph.history import Spend, describe_spend
from ralph.ledger import stop_job
from ralph.queue import parse_rfc3339
from ralph.state import JobKind, Lifecycle, Worker
from ralph.usage import Report, detect_limit, over_budget, read_usage, this_run

logger = logging.getLogger(__name__)

# How much of an agent's log is read for its usage report and limits (the reports come at the end).
USAGE_LOG_BYTES = 8 * 1024 * 1024


def take_stock(tick: Crew, worker: Worker, result: jobs.JobResult, what: str) -> bool:
    """After an agent run: record what it reported spending; True when it stopped at a usage or rate
    limit (the runner is paused, the worker failed without counting the attempt)."""
    output = run_output(worker)
    runner = tick.config.agent.runner
    record_usage(tick, worker, read_usage(runner, output, price=tick.config.agent.price_per_mtok))
    said_at = parse_rfc3339(result.finished_at) or tick.now  # when the CLI said it
    limit = detect_limit(runner, output, exit_code=result.exit_code, now=said_at)
    if limit is None:
        tick.state.forget_runner_pause(runner, tick.now)
        return False
    pause = tick.state.pause_runner(runner, now=tick.now, reason=limit.describe(), reset_at=limit.reset_at)
    worker.attempt = max(0, worker.attempt - 1)
    worker.conflicts = []
    worker.next_attempt_at = tick.now  # due at once: the runner's pause is what holds it back
    worker.last_error = f"{what} stopped at a {limit.describe()}: {limit.said}"
    detail = f"{what} stopped at a {limit.describe()} (not counted as an attempt); {pause.describe(tick.now)}"
    # Not an ending to announce: the task starts again by itself.
    tick.ledger.transition(
        worker, Lifecycle.FAILED, detail, announce=False, runner=runner, paused_until=format_z(pause.until)
    )
    tick.act(worker.task_id, "runner_paused", f"{detail}; the task starts again from scratch after it")
    return True


def record_usage(tick: Crew, worker: Worker, report: Report | None) -> None:
    """One entry per agent run that reported anything, on the worker and in events.jsonl."""
    if report is None:
        return
    remediation = worker.remediations if worker.lifecycle is Lifecycle.REMEDIATING else 0
    entry = report.usage(attempt=worker.attempt, remediation=remediation)
    worker.usage.append(entry)
    append_event(
        tick.paths.events,
        at=tick.now,
        task_id=worker.task_id,
        event="usage",
        attempt=worker.attempt,
        detail=f"{tick.config.agent.runner} reported {describe_spend(Spend.of([entry]))}",
        runner=tick.config.agent.runner,
        **entry.model_dump(exclude={"attempt"}),
    )


def run_output(worker: Worker) -> bytes:
    """What the worker's latest agent run wrote to its log (the log holds every run of the task)."""
    assert worker.job is not None
    try:
        with open(worker.job.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - USAGE_LOG_BYTES))
            return this_run(f.read())
    except OSError:
        return b""


def enforce_budget(tick: Crew) -> None:
    """agent.max_cost_usd_per_task, at every tick: an agent run that has reported more than its task
    may spend is stopped, and a failed task that spent it is not retried (a person raises the limit
    and runs `ralph retry`). A remediation is refused in Crew.start_agent."""
    limit = tick.config.agent.max_cost_usd_per_task
    if limit is None:
        return
    price = tick.config.agent.price_per_mtok
    for worker in tick.state.workers:
        job = worker.job
        running = (
            worker.lifecycle in (Lifecycle.RUNNING, Lifecycle.REMEDIATING)
            and job is not None
            and job.kind is JobKind.AGENT
            and jobs.read_result(Path(job.result_path)) is None  # a finished one is reaped as usual
        )
        so_far = read_usage(tick.config.agent.runner, run_output(worker), price=price) if running else None
        due = worker.lifecycle is Lifecycle.FAILED and worker.next_attempt_at is not None
        if not (running or due):
            continue
        over = over_budget(worker.usage, limit, running=so_far)
        if over is None:
            continue
        if running:
            try:
                stop_job(worker, grace_s=tick.config.parallel.kill_grace_seconds)
            except RalphError as e:
                logger.warning("%s: over its budget, but %s; trying again next tick", worker.task_id, e)
                continue
            record_usage(tick, worker, so_far)
            tick.ledger.fail(worker, f"stopped: {over}", retry_after=None)
        else:
            tick.ledger.fail(worker, f"not started again: {over}", retry_after=None)
        tick.act(
            worker.task_id,
            "over_budget",
            f"{'stopped' if running else 'not started again'}: {over}; raise the limit, then "
            f"`ralph retry {worker.task_id}`",
        )
        tick.save()


def within_budget(tick: Crew, worker: Worker | None) -> bool:
    """Whether a task may start again as far as agent.max_cost_usd_per_task goes."""
    return worker is None or over_budget(worker.usage, tick.config.agent.max_cost_usd_per_task) is None
