"""The state file in use: every lifecycle change goes through here, so it is saved and logged alike."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ralph import proc
from ralph.checkout import Checkout
from ralph.config import HooksConfig
from ralph.errors import RalphError
from ralph.events import Notice, append_event, start_event_hook
from ralph.lock import TickLock
from ralph.paths import Paths
from ralph.state import (
    TRANSITIONS,
    Fingerprint,
    Lifecycle,
    State,
    Worker,
    fingerprint,
    load_state,
    save_state,
)

logger = logging.getLogger(__name__)

# What hooks.on_event hears as RALPH_EVENT.
_EVENT_NAMES = {
    Lifecycle.COMPLETED: "landed",
    Lifecycle.FAILED: "failed",
    Lifecycle.BLOCKED_PUSH: "blocked_push",
}


@dataclass
class Ledger:
    """state.json loaded under the tick lock, with the one `now` of this command."""

    state: State
    paths: Paths
    now: datetime
    on_disk: Fingerprint = None  # the file as loaded; a save refuses to overwrite a different one
    hooks: HooksConfig | None = None  # hooks.on_event runs when a worker lands, fails or is blocked
    notices: list[Notice] = field(default_factory=list)  # hook runs waiting for the next save

    @classmethod
    def load(
        cls, paths: Paths, *, now: datetime, target_branch: str, remote: str, hooks: HooksConfig | None = None
    ) -> Ledger:
        """Load under the lock (sweeping temp files, quarantining a damaged file)."""
        # Before the read: a change between the two then shows up as a mismatch, never as a miss.
        on_disk = fingerprint(paths.state)
        state = load_state(paths.state, now=now, target_branch=target_branch, remote=remote, under_lock=True)
        return cls(state, paths, now, on_disk, hooks)

    def save(self) -> None:
        self.on_disk = save_state(self.paths.state, self.state, now=self.now, expect=self.on_disk)
        # Only a saved change is announced: a process killed before its save never tells the hook of
        # an ending the state file does not hold (a crash after the save loses the notice instead).
        notices, self.notices = self.notices, []
        for n, notice in enumerate(notices):
            assert self.hooks is not None
            start_event_hook(
                list(self.hooks.on_event),
                notice,
                paths=self.paths,
                base_branch=self.state.target_branch,
                timeout_s=self.hooks.timeout_seconds,
                now=self.now,
                n=n,
            )

    def worker_named(self, task_id: str) -> Worker:
        worker = self.state.worker(task_id)
        if worker is None:
            raise RalphError(f"no worker for {task_id} in {self.paths.state}; `ralph status` lists them")
        return worker

    def transition(
        self,
        worker: Worker,
        to: Lifecycle,
        detail: str,
        *,
        new: bool = False,
        announce: bool = True,
        **fields: object,
    ) -> None:
        """Move `worker` to `to` and append the change to events.jsonl; an ending is announced to
        hooks.on_event after the next save, unless `announce` is False (a person's bookkeeping)."""
        previous = None if new else worker.lifecycle
        if to not in TRANSITIONS[previous]:
            raise AssertionError(f"{worker.task_id}: no transition from {previous} to {to} (a bug in ralph)")
        worker.lifecycle = to
        if to not in Lifecycle.in_train():
            self.state.leave_train(worker.task_id)
        worker.updated_at = self.now
        if to in Lifecycle.terminal():
            worker.completed_at = self.now
        append_event(
            self.paths.events,
            at=self.now,
            task_id=worker.task_id,
            event=str(to),
            previous=None if previous is None else str(previous),
            attempt=worker.attempt,
            detail=detail,
            **fields,
        )
        if announce and to in Lifecycle.terminal() and self.hooks is not None and self.hooks.on_event:
            self.notices.append(
                Notice(
                    event=_EVENT_NAMES[to],
                    task_id=worker.task_id,
                    workspace=worker.workspace_path,
                    sha=worker.landed_sha or worker.verified_sha or worker.head_sha or "",
                    reason=detail,
                )
            )

    def report(self, worker: Worker, event: str, detail: str, *, sha: str) -> None:
        """Something happened to `worker` that is no transition (its landing vanished): an entry in
        events.jsonl, and hooks.on_event hears `event` after the next save."""
        append_event(
            self.paths.events,
            at=self.now,
            task_id=worker.task_id,
            event=event,
            previous=str(worker.lifecycle),
            attempt=worker.attempt,
            detail=detail,
            sha=sha,
        )
        if self.hooks is not None and self.hooks.on_event:
            self.notices.append(Notice(event, worker.task_id, worker.workspace_path, sha, detail))

    def fail(self, worker: Worker, reason: str, *, retry_after: timedelta | None) -> None:
        """End this attempt. With `retry_after` None the task is retried only when a person asks."""
        worker.last_error = reason
        worker.next_attempt_at = None if retry_after is None else self.now + retry_after
        self.transition(worker, Lifecycle.FAILED, reason)


def stop_job(worker: Worker, *, grace_s: float) -> None:
    """Stop the worker's job, if one runs, with its whole process group; RalphError if it would not stop."""
    job = worker.job
    if job is None or worker.lifecycle not in Lifecycle.active():
        return
    if not proc.kill_group(job.identity, grace_s=grace_s):
        raise RalphError(f"{worker.task_id}: its {job.kind} job (pid {job.pid}) would not stop; try again")


# A tick holds the lock for seconds; a person's command (cancel, retry, discard) can wait that long.
COMMAND_LOCK_WAIT_S = 30


@contextmanager
def edit_state(checkout: Checkout, *, now: datetime, wait_s: float = COMMAND_LOCK_WAIT_S) -> Iterator[Ledger]:
    """For a command a person runs: wait a little for the tick lock, then load state.json under it."""
    with TickLock(checkout.paths.lock, now=now, wait_s=wait_s):
        yield Ledger.load(
            checkout.paths,
            now=now,
            target_branch=checkout.base_branch(),
            remote=checkout.remote,
            hooks=checkout.config.hooks,
        )
