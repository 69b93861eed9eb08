"""`ralph cancel TASK`: stop a worker's job, make sure it is gone, mark the task failed, and record the
cancellation on the remote, so that no host (nor a fresh checkout) starts it again until `ralph retry`.

From a host with no worker for the task only the remote record is made: the claim of the host working
on it goes in the same push, so that host cannot land it and stops its worker at its next tick.
"""

from __future__ import annotations

from pathlib import Path

import click

from ralph.bookkeeping import current_queues
from ralph.checkout import open_checkout
from ralph.claims import Claims
from ralph.clock import now as read_clock
from ralph.commands._output import warn
from ralph.errors import ExitCode, RalphError
from ralph.ledger import edit_state, stop_job
from ralph.paths import check_task_id
from ralph.state import Lifecycle
from ralph.text import printable


def cancel(*, start: Path, task_id: str) -> ExitCode:
    check_task_id(task_id)
    checkout = open_checkout(start)
    now = read_clock()
    claims = Claims.for_checkout(checkout)
    with edit_state(checkout, now=now) as ledger:
        worker = ledger.state.worker(task_id)
        if worker is None:
            if current_queues(checkout).find(task_id) is None:
                raise RalphError(
                    f"no worker for {task_id} here and no such task in the queue (as last fetched); "
                    "nothing to cancel (`ralph status` lists the workers)"
                )
        else:
            if worker.lifecycle in Lifecycle.terminal():
                raise RalphError(f"{task_id} is already {worker.lifecycle}; nothing to cancel")
            stop_job(worker, grace_s=checkout.config.parallel.kill_grace_seconds)
            ledger.fail(worker, "cancelled by `ralph cancel`", retry_after=None)
            ledger.save()
    recorded = claims.record_cancel(task_id, now, "`ralph cancel`")
    if not recorded.ok:
        if worker is None:
            raise RalphError(f"{task_id} is not cancelled: no worker for it here, and {recorded.message}")
        warn(f"{task_id} is cancelled on this host only: {recorded.message}")
        click.echo(f"{task_id} cancelled here; `ralph retry {task_id}` runs it again")
        return ExitCode.OK
    parts = [f"{task_id} cancelled; no host starts it again until `ralph retry {task_id}`"]
    parts += recorded.undone(claims.host, checkout.remote)
    click.echo(printable("; ".join(parts)))
    return ExitCode.OK
