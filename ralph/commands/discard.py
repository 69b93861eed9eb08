"""`ralph discard TASK [--reject]`: let go of a task's worker, keeping its work in the attic.

The worker's job is stopped, its workspace's commits are saved to `refs/ralph/attic/<TASK>-<n>`, the
workspace is removed and the record dropped. Without --reject the task stays in the queue and may be
started afresh; with --reject it is marked rejected in the queue, so it never runs again.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from ralph import proc, workspace
from ralph.bookkeeping import Mode, detect_source, fetch_base, publish
from ralph.checkout import Checkout, open_checkout
from ralph.clock import now as read_clock
from ralph.errors import ExitCode, QueueError, RalphError
from ralph.ledger import edit_state
from ralph.paths import check_task_id
from ralph.queue import Queues, TaskStatus, load_local_queues, save_queue_file
from ralph.state import Lifecycle


def discard(*, start: Path, task_id: str, reject: bool) -> ExitCode:
    check_task_id(task_id)
    checkout = open_checkout(start)
    now = read_clock()
    tracked = reject and _tracked(checkout)
    saved = None
    with edit_state(checkout, now=now) as ledger:
        worker = ledger.state.worker(task_id)
        # A workspace no record owns (an orphan `ralph doctor` found) is discarded the same way.
        path = Path(worker.workspace_path) if worker is not None else checkout.paths.workspace(task_id)
        if worker is None and not path.exists() and not reject:
            raise RalphError(
                f"no worker or workspace for {task_id}; nothing to discard "
                "(`--reject` marks it rejected in the queue)"
            )
        job = worker.job if worker is not None and worker.lifecycle in Lifecycle.active() else None
        if job is not None and not proc.kill_group(
            job.identity, grace_s=checkout.config.parallel.kill_grace_seconds
        ):
            raise RalphError(f"{task_id}: its {job.kind} job (pid {job.pid}) would not stop; nothing changed")
        if path.exists():
            saved = workspace.remove(
                path, task_id=task_id, control=checkout.root, base_branch=checkout.base_branch()
            )
        if worker is not None:
            ledger.state.workers = [w for w in ledger.state.workers if w.task_id != task_id]
            ledger.save()
        if reject and not tracked:
            queues = load_local_queues(checkout.paths)
            _reject(queues, task_id, now)
            save_queue_file(checkout.paths.queue_file(), queues.queue)
    if tracked:
        publish(
            checkout,
            checkout.git(),
            checkout.base_branch(),
            change=lambda q: _reject(q, task_id, now),
            message=lambda _: f"ralph: reject {task_id}",
        )
    kept = f"; its work is kept as {saved}" if saved else ""
    rejected = "; marked rejected in the queue" if reject else ""
    click.echo(f"{task_id} discarded{kept}{rejected}")
    return ExitCode.OK


def _tracked(checkout: Checkout) -> bool:
    git = checkout.git()
    base = checkout.base_branch()
    fetch_base(git, remote=checkout.remote, base=base)
    return detect_source(checkout, git, base).mode is Mode.TRACKED


def _reject(queues: Queues, task_id: str, now: datetime) -> None:
    task = next((t for t in queues.queue.tasks if t.id == task_id), None)
    if task is None:
        raise QueueError(f"{task_id} is not in {queues.queue_name}; only a queued task can be rejected")
    stamp = now.replace(microsecond=0)
    task.status = TaskStatus.REJECTED
    task.completed_at = stamp
    task.updated_at = stamp
