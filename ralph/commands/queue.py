"""`ralph queue list | show | validate | explain`: read-only views of the task queue."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import click

from ralph.bookkeeping import current_queues
from ralph.checkout import Checkout, open_checkout
from ralph.clock import format_z
from ralph.clock import now as read_clock
from ralph.commands._output import emit_json, one_line, table
from ralph.errors import ExitCode, QueueError
from ralph.paths import check_task_id
from ralph.queue import Queues, Task, why_not_runnable
from ralph.state import load_state


def _task_json(task: Task) -> dict[str, object]:
    doc: dict[str, object] = json.loads(task.model_dump_json())
    return doc


def list_tasks(*, start: Path, include_done: bool, as_json: bool) -> ExitCode:
    checkout = open_checkout(start)
    queues = current_queues(checkout)
    tasks = [*queues.queue.tasks, *(queues.done.tasks if include_done else [])]
    if as_json:
        emit_json({"tasks": [_task_json(t) for t in tasks]})
        return ExitCode.OK
    if not tasks:
        click.echo(f'no tasks in {queues.queue_name}; add one with `ralph task add "<title>"`')
        return ExitCode.OK
    rows = [
        [t.id, str(t.status), str(t.priority), ", ".join(t.depends_on) or "-", one_line(t.title, 60)]
        for t in tasks
    ]
    click.echo(table(["ID", "STATUS", "PRIORITY", "DEPENDS ON", "TITLE"], rows))
    return ExitCode.OK


def show(*, start: Path, task_id: str, as_json: bool) -> ExitCode:
    checkout = open_checkout(start)
    check_task_id(task_id)
    queues = current_queues(checkout)
    task = queues.find(task_id)
    if task is None:
        raise QueueError(
            f"no task {task_id} in {queues.queue_name} or {queues.done_name}; "
            "`ralph queue list --all` lists them"
        )
    if as_json:
        emit_json({"task": _task_json(task)})
        return ExitCode.OK
    for key, value in _task_json(task).items():
        if value in (None, [], {}):
            continue
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):
            value = json.dumps(value, ensure_ascii=False)
        click.echo(f"{key + ':':<17} {value}")
    return ExitCode.OK


def validate(*, start: Path, as_json: bool) -> ExitCode:
    checkout = open_checkout(start)
    queues: Queues | None
    try:
        queues = current_queues(checkout)
    except QueueError as e:
        # Reporting problems is this command's job: a file that does not parse is one more problem,
        # listed like the others (and in --json), not an error that leaves stdout empty.
        queues, problems = None, [str(e)]
    else:
        problems = queues.problems(checkout.config.queue)
    if as_json:
        emit_json(
            {
                "valid": not problems,
                "problems": problems,
                "queue_tasks": len(queues.queue.tasks) if queues else None,
                "done_tasks": len(queues.done.tasks) if queues else None,
            }
        )
    elif problems:
        for problem in problems:
            click.echo(problem)
    elif queues is not None:
        click.echo(
            f"ok: {_tasks(len(queues.queue.tasks))} in {queues.queue_name}, "
            f"{_tasks(len(queues.done.tasks))} in {queues.done_name}"
        )
    return ExitCode.ERROR if problems else ExitCode.OK


def _tasks(n: int) -> str:
    return f"{n} task" if n == 1 else f"{n} tasks"


def explain(*, start: Path, as_json: bool) -> ExitCode:
    checkout = open_checkout(start)
    now = read_clock()
    queues = current_queues(checkout)
    queues.validate(checkout.config.queue)
    verdicts = explain_queue(checkout, queues, now)
    if as_json:
        emit_json({"generated_at": format_z(now), "tasks": verdicts})
        return ExitCode.OK
    if not verdicts:
        click.echo(f"no tasks in {queues.queue_name}")
        return ExitCode.OK
    rows = [
        [str(v["id"]), "runnable" if v["runnable"] else str(v["reason"]), one_line(str(v["title"]), 50)]
        for v in verdicts
    ]
    click.echo(table(["ID", "VERDICT", "TITLE"], rows))
    return ExitCode.OK


def explain_queue(checkout: Checkout, queues: Queues, now: datetime) -> list[dict[str, object]]:
    """One verdict per queued task, in queue order: runnable, or the reason it is not."""
    state = load_state(
        checkout.paths.state, now=now, target_branch=checkout.base_branch(), remote=checkout.remote
    )
    statuses = queues.statuses()
    workers = state.by_task()
    out: list[dict[str, object]] = []
    for task in queues.queue.tasks:
        reason = why_not_runnable(
            task, statuses=statuses, workers=workers, now=now, max_attempts=checkout.config.agent.max_attempts
        )
        out.append({"id": task.id, "title": task.title, "runnable": reason is None, "reason": reason})
    return out
