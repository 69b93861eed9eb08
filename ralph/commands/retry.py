"""`ralph retry TASK`: give a failed or blocked task another go, keeping the work it has.

Work that passed the gate (a task blocked on its push) goes back to the merge train with a fresh set
of push attempts, and is gated again on the base as it is then.
Anything else starts over with a fresh set of attempts; its workspace's commits are saved to the
attic here, before the next tick resets the workspace, so nothing it did is lost (and the message
names the ref). A workspace outside the workspace root (the Rust ralph's) is left where it is.

Either way the task's shared record on the remote (attempts, a cancellation, a block: ralph.claims)
is cleared, so every host and every fresh checkout gives it a fresh round too. From a host with no
worker for the task, that is all it does.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from ralph import markers, workspace
from ralph.bookkeeping import current_queues
from ralph.checkout import Checkout, open_checkout
from ralph.claims import Claims, describe
from ralph.clock import now as read_clock
from ralph.commands._output import warn
from ralph.errors import ExitCode, GitError, RalphError
from ralph.git import object_names
from ralph.ledger import edit_state
from ralph.paths import check_task_id, is_within
from ralph.queue import still_wanted
from ralph.state import Lifecycle
from ralph.text import printable


def retry(*, start: Path, task_id: str) -> ExitCode:
    check_task_id(task_id)
    checkout = open_checkout(start)
    now = read_clock()
    base = checkout.base_branch()
    claims = Claims.for_checkout(checkout)
    with edit_state(checkout, now=now) as ledger:
        worker = ledger.state.worker(task_id)
        if worker is None:
            return _retry_elsewhere(checkout, claims, task_id, now)
        if worker.lifecycle not in (Lifecycle.FAILED, Lifecycle.BLOCKED_PUSH):
            raise RalphError(
                f"{task_id} is {worker.lifecycle}; only failed or blocked_push tasks can be retried"
            )
        path = Path(worker.workspace_path)
        # Only work that passed the gate lands again; work blocked before it (a protected path, a
        # conflict no remediation resolved, an invalid proposal) starts over.
        land = (
            worker.lifecycle is Lifecycle.BLOCKED_PUSH
            and bool(worker.verified_sha)
            and bool(worker.head_sha)
            and bool(object_names(claims.git, [f"{worker.head_sha}^{{commit}}"]))
        )
        if not land:
            task = current_queues(checkout).find(task_id)
            if not still_wanted(None if task is None else task.status):
                state = "gone from the queue" if task is None else f"{task.status} in the queue"
                raise RalphError(f"{task_id} is {state}; set it back to todo there first, then retry")
        markers.clear_blocked_push(path)
        worker.push_attempts = 0
        worker.remediations = 0
        worker.last_error = None
        if land:
            assert worker.verified_sha is not None
            worker.next_attempt_at = None
            ledger.transition(worker, Lifecycle.INTEGRATING, "retried by `ralph retry`: landing again")
            message = f"{task_id} goes back to landing {worker.verified_sha[:10]} on the next tick"
        else:
            saved = None
            if path.exists() and not path.is_symlink():
                saved = workspace.save_to_attic(
                    path, task_id=task_id, control=checkout.root, base_ref=checkout.tracking_ref(base)
                )
            worker.attempt = 0  # the next start is attempt 1 of a fresh round
            worker.next_attempt_at = now
            # Still failed, only due again: not an ending to announce.
            ledger.transition(
                worker, Lifecycle.FAILED, "retried by `ralph retry`: starting over", announce=False
            )
            kept = f"its earlier work is kept as {saved}" if saved else "it had no unlanded commits to keep"
            if path.exists() and not is_within(path, checkout.paths.workspace_root):
                kept += f"; {path} is outside the workspace root and is left in place"
            message = f"{task_id} starts over on the next tick; {kept}"
        ledger.save()
    recorded = claims.clear(task_id, now, "`ralph retry`")
    if not recorded.ok:
        warn(f"{task_id} gets a fresh round on this host only: {recorded.message}")
    click.echo(printable("; ".join([message, *recorded.undone(claims.host, checkout.remote)])))
    return ExitCode.OK


def _retry_elsewhere(checkout: Checkout, claims: Claims, task_id: str, now: datetime) -> ExitCode:
    """No worker here: the task failed or was stopped on another host, or in a checkout since lost.
    Clearing its shared record is what lets every host start it again."""
    try:
        before = describe(claims.read(task_id).facts_of(task_id))
    except GitError as e:
        raise RalphError(f"{task_id} is not retried: no worker for it here, and {e}") from None
    if not before:
        raise RalphError(
            f"no worker for {task_id} here and nothing recorded for it on {checkout.remote}; nothing to "
            "retry (`ralph status --all-hosts` lists what every host holds)"
        )
    recorded = claims.clear(task_id, now, "`ralph retry`")
    if not recorded.ok:
        raise RalphError(f"{task_id} is not retried: no worker for it here, and {recorded.message}")
    undone = recorded.undone(claims.host, checkout.remote)
    click.echo(printable("; ".join([f"{task_id} may start again on any host", *undone])))
    return ExitCode.OK
