"""`ralph task add`: append a task with the next id, on the base branch or in the working tree.

With the queue tracked (the default), the task is committed on top of the remote base with git
plumbing and pushed with a lease: the working tree is not touched, and a tick on any host sees it
after its next fetch. With the queue untracked, or with --no-push, the working-tree file is edited
under the tick lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from ralph.bookkeeping import NotPublished, Untracked, publish
from ralph.checkout import Checkout, open_checkout
from ralph.clock import now as read_clock
from ralph.clock import to_seconds
from ralph.config import QueueConfig
from ralph.errors import ExitCode, LockBusy, PreflightError, QueueError, TaskIdError
from ralph.lock import TickLock
from ralph.models import describe_validation_error
from ralph.paths import check_task_id
from ralph.queue import Priority, Queues, Task, TaskStatus, load_local_queues, next_id, save_queue_file

logger = logging.getLogger(__name__)

# A tick holds the lock for well under a second; waiting a little beats telling a person to retry.
LOCK_WAIT_S = 10


def add(
    *,
    start: Path,
    title: str,
    description: str | None,
    depends_on: list[str],
    priority: str,
    push: bool = True,
) -> ExitCode:
    checkout = open_checkout(start)
    if not checkout.paths.ralph_dir.is_dir():
        # Without init there is no .gitignore entry for .ralph/cache/, and the lock and queue files
        # this command would create would show up as untracked clutter.
        raise PreflightError(f"{checkout.root} has no .ralph/ directory; run `ralph init` there first")
    now = to_seconds(read_clock())
    title = title.strip()
    if not title:
        raise QueueError(
            'the task title is empty; give it a short imperative title, e.g. "Fix the login bug"'
        )
    for dep in depends_on:
        try:
            check_task_id(dep)
        except TaskIdError as e:
            raise TaskIdError(f"--depends-on: {e}") from None
    # The same id given twice is one dependency; recording it twice would only confuse a reader.
    depends_on = list(dict.fromkeys(depends_on))

    def append(queues: Queues) -> Task:
        return _append(
            queues,
            checkout.config.queue,
            now=now,
            title=title,
            description=description,
            depends_on=depends_on,
            priority=priority,
        )

    git = checkout.git()
    base = checkout.base_branch()
    new = None
    if push and git.run("remote", "get-url", checkout.remote, ok=(0, 2)).returncode == 0:
        try:
            new = publish(
                checkout, git, base, change=append, message=lambda t: f"ralph: add {t.id}: {t.title}"
            )
            where = f"pushed to {checkout.remote}/{base}"
        except (Untracked, NotPublished):
            pass  # the queue is this host's, or not pushed yet: the working-tree file it is
        except PreflightError as e:
            raise PreflightError(
                f"{e}; to add the task to the working-tree file instead, pass --no-push"
            ) from None
    if new is None:
        new = _append_locally(checkout, now, append)
        where = f"written to {checkout.paths.relative(checkout.paths.queue_file())}"
    click.echo(new.id)
    logger.info("%s %s", new.id, where)
    return ExitCode.OK


def _append(
    queues: Queues,
    qcfg: QueueConfig,
    *,
    now: datetime,
    title: str,
    description: str | None,
    depends_on: list[str],
    priority: str,
) -> Task:
    queues.validate(qcfg)
    for dep in depends_on:
        if queues.find(dep) is None:
            raise QueueError(f"--depends-on {dep}: no such task in {queues.queue_name} or {queues.done_name}")
    # Only what was given is set, so the file holds no empty keys the person did not write.
    fields: dict[str, Any] = {
        "id": next_id(queues.queue, queues.done, prefix=qcfg.id_prefix, width=qcfg.id_width),
        "status": TaskStatus.TODO,
        "title": title,
        "priority": Priority(priority),
        "created_at": now,
        "updated_at": now,
        "description": description,
        "depends_on": depends_on,
    }
    try:
        new = Task.model_validate({k: v for k, v in fields.items() if v})
    except ValidationError as e:
        raise QueueError(f"the new task is not valid: {describe_validation_error(e)}") from None
    queues.queue.tasks.append(new)
    queues.validate(qcfg)
    return new


def _append_locally(checkout: Checkout, now: datetime, append: Callable[[Queues], Task]) -> Task:
    lock = TickLock(checkout.paths.lock, now=now, wait_s=LOCK_WAIT_S)
    try:
        lock.acquire()
    except LockBusy:
        # The lock's own message is written for a tick ("the next tick will run"); a person adding a
        # task needs to hear that the task was not added and what to do.
        holder = lock.owner()
        raise LockBusy(
            f"another ralph process holds {lock.path}"
            + (f" ({holder})" if holder else "")
            + f" and did not let go within {LOCK_WAIT_S}s; the task was not added, try again in a minute"
        ) from None
    try:
        queues = load_local_queues(checkout.paths)
        new = append(queues)
        save_queue_file(checkout.paths.queue_file(), queues.queue)
    finally:
        lock.release()
    return new
