"""`ralph discard TASK [--reject]`: let go of a task's worker, keeping its work in the attic.

The worker's job is stopped, its workspace's commits are saved to `refs/ralph/attic/<TASK>-<n>`, the
workspace is removed and the record dropped. So that the next tick does not simply start the task
again, the queue says so first: without --reject the task is parked as a `draft` (it stays queued but
nothing starts it; `ralph task edit TASK --status todo` queues it again), with --reject it is moved to
the done archive as rejected, for good.

A workspace outside the workspace root (one the Rust ralph made, say) is never deleted: a tick would
not delete it either. Its commits are saved all the same, and the message names it.

On the remote (ralph.claims), the task's shared record is cleared and its claim released in one push:
a host working on it elsewhere loses the claim, so it cannot land the work and stops its worker at
its next tick. So `discard` works from any host: with no worker here, it parks (or rejects) the task
and lets go of the claim another host holds.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from ralph import workspace
from ralph.bookkeeping import change_queue
from ralph.checkout import Checkout, open_checkout
from ralph.claims import Claims
from ralph.clock import now as read_clock
from ralph.commands._output import warn
from ralph.errors import ExitCode, RalphError
from ralph.ledger import edit_state, stop_job
from ralph.paths import check_task_id, is_within
from ralph.queue import TERMINAL_STATUSES, TaskStatus
from ralph.queuedoc import QueueEdit
from ralph.text import printable


def discard(*, start: Path, task_id: str, reject: bool) -> ExitCode:
    check_task_id(task_id)
    checkout = open_checkout(start)
    now = read_clock()
    base = checkout.base_branch()
    saved = None
    kept_in_place = None
    claims = Claims.for_checkout(checkout)
    with edit_state(checkout, now=now) as ledger:
        worker = ledger.state.worker(task_id)
        # A workspace no record owns (an orphan `ralph doctor` found) is discarded the same way.
        path = Path(worker.workspace_path) if worker is not None else checkout.paths.workspace(task_id)
        if worker is None and not path.exists() and not reject and not _held_elsewhere(claims, task_id):
            raise RalphError(
                f"no worker for {task_id} and no workspace at {path}; nothing to discard "
                f"(`ralph task reject {task_id}` closes the task in the queue)"
            )
        # First, and under the lock: if the queue cannot say so, nothing is let go, and no tick can
        # start the task again between the two.
        in_queue = _close_in_queue(checkout, task_id, now, reject=reject)
        if worker is not None:
            stop_job(worker, grace_s=checkout.config.parallel.kill_grace_seconds)
        base_ref = checkout.tracking_ref(base)
        if path.is_symlink() or not path.exists() or is_within(path, checkout.paths.workspace_root):
            saved = workspace.remove(path, task_id=task_id, control=checkout.root, base_ref=base_ref)
        else:
            saved = workspace.save_to_attic(path, task_id=task_id, control=checkout.root, base_ref=base_ref)
            kept_in_place = path
        if worker is not None:
            ledger.state.workers = [w for w in ledger.state.workers if w.task_id != task_id]
            ledger.save()
    parts = [f"{task_id} discarded"]
    if saved:
        parts.append(f"its work is kept as {saved}")
    if kept_in_place is not None:
        parts.append(f"its workspace {kept_in_place} is outside the workspace root and was left in place")
    parts.append(in_queue)
    recorded = claims.clear(task_id, now, "`ralph discard`", release=True)
    if recorded.ok:
        parts += recorded.undone(claims.host, checkout.remote)
    else:
        warn(f"{task_id}'s claim and record on {checkout.remote} are left as they were: {recorded.message}")
    click.echo(printable("; ".join(parts)))
    return ExitCode.OK


def _held_elsewhere(claims: Claims, task_id: str) -> bool:
    """Whether the remote has a claim or a record for the task (a worker on another host, say)."""
    try:
        board = claims.read(task_id)
    except RalphError:
        return False  # the remote cannot say: only what this host has can be discarded
    return bool(board.claims or board.facts)


def _close_in_queue(checkout: Checkout, task_id: str, now: datetime, *, reject: bool) -> str:
    """Reject the task (moved to the done archive) or park it as a draft; say what the queue says now."""

    def close(edit: QueueEdit) -> str:
        task = edit.queue.find(task_id)
        if task is None:
            archived = edit.done.find(task_id)
            if archived is not None:
                return f"it is {archived.status} in the done archive"
            if reject:
                edit.queued(task_id)  # raises: not in either file
            return "it is not in the queue"
        if reject:
            edit.finish(task_id, TaskStatus.REJECTED)
            return "rejected: moved to the done archive"
        if task.status in TERMINAL_STATUSES:
            return f"it is {task.status} in the queue"
        if task.status is not TaskStatus.DRAFT:
            edit.update(task_id, status=TaskStatus.DRAFT)
        return (
            "parked as a draft in the queue, so no tick starts it again: "
            f"`ralph task edit {task_id} --status todo` queues it again"
        )

    said, _ = change_queue(
        checkout,
        change=close,
        message=lambda _: f"ralph: {'reject' if reject else 'park'} {task_id} (discarded)",
        now=now,
        push=True,
    )
    return said
