"""`ralph cancel TASK`: stop a worker's job, make sure it is gone, and mark the task failed."""

from __future__ import annotations

from pathlib import Path

import click

from ralph.checkout import open_checkout
from ralph.clock import now as read_clock
from ralph.errors import ExitCode, RalphError
from ralph.ledger import edit_state, stop_job
from ralph.paths import check_task_id
from ralph.state import Lifecycle


def cancel(*, start: Path, task_id: str) -> ExitCode:
    check_task_id(task_id)
    checkout = open_checkout(start)
    with edit_state(checkout, now=read_clock()) as ledger:
        worker = ledger.worker_named(task_id)
        if worker.lifecycle in Lifecycle.terminal():
            raise RalphError(f"{task_id} is already {worker.lifecycle}; nothing to cancel")
        stop_job(worker, grace_s=checkout.config.parallel.kill_grace_seconds)
        ledger.fail(worker, "cancelled by `ralph cancel`", retry_after=None)
        ledger.save()
    click.echo(f"{task_id} cancelled; `ralph retry {task_id}` runs it again")
    return ExitCode.OK
