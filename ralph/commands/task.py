"""`ralph task add`: append a task with the next id."""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import ValidationError

from ralph.checkout import open_checkout
from ralph.clock import now as read_clock
from ralph.clock import to_seconds
from ralph.errors import ExitCode, LockBusy, PreflightError, QueueError, TaskIdError
from ralph.lock import TickLock
from ralph.models import describe_validation_error
from ralph.paths import check_task_id
from ralph.queue import Priority, Task, TaskStatus, load_local_queues, next_id, save_queue_file

# A tick holds the lock for well under a second; waiting a little beats telling a person to retry.
LOCK_WAIT_S = 10


def add(
    *, start: Path, title: str, description: str | None, depends_on: list[str], priority: str
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
    qcfg = checkout.config.queue
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
        queues.validate(qcfg)
        for dep in depends_on:
            if queues.find(dep) is None:
                raise QueueError(
                    f"--depends-on {dep}: no such task in {queues.queue_name} or {queues.done_name}"
                )
        # Only what was given is set, so the file holds no empty keys the person did not write.
        optional = {"description": description, "depends_on": depends_on}
        try:
            new = Task(
                id=next_id(queues.queue, queues.done, prefix=qcfg.id_prefix, width=qcfg.id_width),
                status=TaskStatus.TODO,
                title=title,
                priority=Priority(priority),
                created_at=now,
                updated_at=now,
                **{k: v for k, v in optional.items() if v},
            )
        except ValidationError as e:
            raise QueueError(f"the new task is not valid: {describe_validation_error(e)}") from None
        queues.queue.tasks.append(new)
        queues.validate(qcfg)
        save_queue_file(checkout.paths.queue_file(), queues.queue)
    finally:
        lock.release()
    click.echo(new.id)
    return ExitCode.OK
