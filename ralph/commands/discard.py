"""`ralph discard TASK [--reject]`: let go of a task's worker, keeping its work in the attic.

The worker's job is stopped, its workspace's commits are saved to `refs/ralph/attic/<TASK>-<n>`, the
workspace is removed and the record dropped. Without --reject the task stays in the queue and may be
started afresh; with --reject it is marked rejected in the queue first, so it never runs again.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from ralph import workspace
from ralph.bookkeeping import NotPublished, Untracked, publish
from ralph.checkout import Checkout, open_checkout
from ralph.clock import now as read_clock
from ralph.errors import ExitCode, QueueError, RalphError
from ralph.ledger import edit_state, stop_job
from ralph.paths import check_task_id
from ralph.queue import Queues, TaskStatus, load_local_queues, save_queue_file


def discard(*, start: Path, task_id: str, reject: bool) -> ExitCode:
    check_task_id(task_id)
    checkout = open_checkout(start)
    now = read_clock()
    base = checkout.base_branch()
    saved = None
    with edit_state(checkout, now=now) as ledger:
        worker = ledger.state.worker(task_id)
        # A workspace no record owns (an orphan `ralph doctor` found) is discarded the same way.
        path = Path(worker.workspace_path) if worker is not None else checkout.paths.workspace(task_id)
        if worker is None and not path.exists() and not reject:
            raise RalphError(
                f"no worker for {task_id} and no workspace at {path}; nothing to discard "
                "(`--reject` marks it rejected in the queue)"
            )
        if reject:
            # First, and under the lock: if the queue cannot say "rejected", nothing is let go, and
            # no tick can start the task again between the two.
            _reject_in_queue(checkout, base, task_id, now)
        if worker is not None:
            stop_job(worker, grace_s=checkout.config.parallel.kill_grace_seconds)
        if path.exists():
            saved = workspace.remove(
                path,
                task_id=task_id,
                control=checkout.root,
                base_ref=checkout.tracking_ref(base),
            )
        if worker is not None:
            ledger.state.workers = [w for w in ledger.state.workers if w.task_id != task_id]
            ledger.save()
    kept = f"; its work is kept as {saved}" if saved else ""
    rejected = "; marked rejected in the queue" if reject else ""
    click.echo(f"{task_id} discarded{kept}{rejected}")
    return ExitCode.OK


def _reject_in_queue(checkout: Checkout, base: str, task_id: str, now: datetime) -> None:
    """On the remote base when the queue is tracked there, else in this host's queue file."""
    try:
        publish(
            checkout,
            checkout.git(),
            base,
            change=lambda q: _reject(q, task_id, now),
            message=lambda _: f"ralph: reject {task_id}",
        )
        return
    except (Untracked, NotPublished):
        pass
    queues = load_local_queues(checkout.paths)
    _reject(queues, task_id, now)
    save_queue_file(checkout.paths.queue_file(), queues.queue)


def _reject(queues: Queues, task_id: str, now: datetime) -> None:
    task = next((t for t in queues.queue.tasks if t.id == task_id), None)
    if task is None:
        raise QueueError(f"{task_id} is not in {queues.queue_name}; only a queued task can be rejected")
    stamp = now.replace(microsecond=0)
    task.status = TaskStatus.REJECTED
    task.completed_at = stamp
    task.updated_at = stamp
