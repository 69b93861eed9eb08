"""`ralph task add | edit | rm | done | reject | move`: change one task of the queue.

With the queue tracked (the default), each change is one commit on top of the remote base, made with
git plumbing and pushed with a lease: the working tree is not touched, and a tick on any host sees it
after its next fetch. With the queue untracked, or with --no-push, the working-tree files are edited
under the tick lock. Either way only the lines of the task changed move (ralph.queuedoc), and a change
that would make the queue invalid is refused with nothing written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from ralph.bookkeeping import change_queue, fetch_base, read_current_queues
from ralph.checkout import Checkout, open_initialised
from ralph.clock import format_z
from ralph.clock import now as read_clock
from ralph.errors import ExitCode, QueueError, RalphError, TaskIdError
from ralph.paths import check_task_id
from ralph.queue import Priority, Task, TaskStatus, check_text, parse_rfc3339
from ralph.queuedoc import Position, QueueEdit

logger = logging.getLogger(__name__)

# --no-push: a short look at the remote for ids handed out there; the edit does not wait on a slow one.
ID_FETCH_TIMEOUT_S = 20.0


def _ids(option: str, values: Iterable[str]) -> list[str]:
    out = []
    for value in values:
        try:
            out.append(check_task_id(value.strip()))
        except TaskIdError as e:
            raise TaskIdError(f"{option}: {e}") from None
    # The same id given twice is one dependency; recording it twice would only confuse a reader.
    return list(dict.fromkeys(out))


def _known(edit: QueueEdit, ids: Iterable[str], option: str) -> None:
    for dep in ids:
        if edit.queues.find(dep) is None:
            raise QueueError(f"{option} {dep}: no such task in {edit.queue.name} or {edit.done.name}")


# --- add ------------------------------------------------------------------------------------------------


def add(
    *,
    start: Path,
    title: str,
    description: str | None,
    depends_on: list[str],
    priority: str,
    push: bool = True,
    position: Position | None = None,
) -> ExitCode:
    """Add a task with the next id and print the id; `position` None puts it where the Rust ralph does
    (the top, after a leading `doing` task)."""
    checkout = open_initialised(start)
    now = read_clock()
    title = title.strip()
    if not title:
        raise QueueError(
            'the task title is empty; give it a short imperative title, e.g. "Fix the login bug"'
        )
    check_text(title, description)
    deps = _ids("--depends-on", depends_on)
    # --no-push edits a working tree that may be behind the remote: ids handed out there are skipped too.
    elsewhere = () if push else _remote_ids(checkout)

    def insert(edit: QueueEdit) -> Task:
        # A new id is only as good as the ids around it: nothing is added to a queue that is invalid.
        edit.validate(checkout.config.queue)
        _known(edit, deps, "--depends-on")
        new = edit.new_task(
            checkout.config.queue,
            title=title,
            description=description,
            depends_on=deps,
            priority=Priority(priority),
            also=elsewhere,
        )
        edit.add(new, at=edit.place(position))
        return new

    new, where = change_queue(
        checkout, now=now, push=push, change=insert, message=lambda t: f"ralph: add {t.id}: {t.title}"
    )
    click.echo(new.id)
    logger.info("%s %s", new.id, where)
    return ExitCode.OK


def _remote_ids(checkout: Checkout) -> set[str]:
    """Ids in the remote's queue and done archive (fetched now if it answers, else as last fetched)."""
    git = checkout.git()
    if git.run("remote", "get-url", checkout.remote, ok=(0, 2)).returncode != 0:
        return set()
    base = checkout.base_branch()
    try:
        fetch_base(git, remote=checkout.remote, base=base, timeout=ID_FETCH_TIMEOUT_S)
    except RalphError as e:
        logger.info(
            "could not fetch %s/%s (%s); ids are checked against its last fetch", checkout.remote, base, e
        )
    try:
        queues = read_current_queues(checkout, git, base)
    except RalphError:
        return set()
    return {t.id for t in (*queues.queue.tasks, *queues.done.tasks)}


# --- edit -----------------------------------------------------------------------------------------------


def edit(
    *,
    start: Path,
    task_id: str,
    title: str | None = None,
    description: str | None = None,
    priority: str | None = None,
    depends_on: list[str] | None = None,
    scheduled_start: str | None = None,
    status: str | None = None,
    push: bool = True,
) -> ExitCode:
    """Change fields of a queued task; updated_at becomes now, and only that task's lines change."""
    check_task_id(task_id)
    checkout = open_initialised(start)
    now = read_clock()
    changes: dict[str, Any] = {}
    if title is not None:
        title = title.strip()
        if not title:
            raise QueueError("--title is empty; a task needs a title")
        changes["title"] = title
    if description is not None:
        changes["description"] = description or None  # "" clears it
    check_text(title or "", description)
    if priority is not None:
        changes["priority"] = Priority(priority)
    if depends_on is not None:
        changes["depends_on"] = _ids("--depends-on", depends_on)
    if scheduled_start is not None:
        changes["scheduled_start"] = _schedule(scheduled_start)
    if status is not None:
        changes["status"] = TaskStatus(status)
    if not changes:
        raise QueueError(
            "nothing to change: give --title, --description, --priority, --depends-on, --no-depends-on, "
            "--scheduled-start or --status"
        )

    def update(edit: QueueEdit) -> Task:
        _known(edit, changes.get("depends_on", []), "--depends-on")
        current = edit.queued(task_id)
        if "status" in changes and current.status in (TaskStatus.DONE, TaskStatus.REJECTED):
            raise QueueError(f"{task_id} is {current.status}; `ralph task done`/`reject` moved such tasks")
        return edit.update(task_id, **changes)

    _, where = change_queue(
        checkout, now=now, push=push, change=update, message=lambda t: f"ralph: edit {t.id}"
    )
    click.echo(f"{task_id} changed: {', '.join(changes)} ({where})")
    return ExitCode.OK


def _schedule(value: str) -> str | None:
    """--scheduled-start: "" clears it; a time must be RFC 3339 with an offset, and is kept as UTC."""
    if not value.strip():
        return None
    parsed = parse_rfc3339(value)
    if parsed is None:
        raise QueueError(
            f"--scheduled-start {value!r} is not an RFC 3339 time with an offset; write it like "
            "2026-11-21T09:00:00Z or 2026-11-21T10:00:00+01:00"
        )
    return format_z(parsed)


# --- rm, done, reject -----------------------------------------------------------------------------------


def remove(*, start: Path, task_id: str, push: bool = True) -> ExitCode:
    """Delete a queued task outright (the done archive is history and is not edited)."""
    check_task_id(task_id)
    checkout = open_initialised(start)

    def drop(edit: QueueEdit) -> Task:
        edit.queued(task_id)
        users = [
            f"{t.id} ({field})"
            for t in (*edit.queue.tasks, *edit.done.tasks)
            for field in ("depends_on", "blocks", "relates_to")
            if t.id != task_id and task_id in getattr(t, field)
        ]
        if users:
            raise QueueError(
                f"{task_id} is named by {', '.join(users)}; change those first (`ralph task edit`), "
                f"or `ralph task reject {task_id}` to keep it in the archive"
            )
        return edit.remove(task_id)

    _, where = change_queue(
        checkout, now=read_clock(), push=push, change=drop, message=lambda t: f"ralph: remove {t.id}"
    )
    click.echo(f"{task_id} removed ({where})")
    return ExitCode.OK


def finish(*, start: Path, task_id: str, status: str, note: str | None = None, push: bool = True) -> ExitCode:
    """`task done` / `task reject`: move the task to the done archive at once, completed now."""
    check_task_id(task_id)
    checkout = open_initialised(start)
    final = TaskStatus(status)
    verb = "done" if final is TaskStatus.DONE else "reject"

    def close(edit: QueueEdit) -> Task:
        return edit.finish(task_id, final, note=note)

    _, where = change_queue(
        checkout, now=read_clock(), push=push, change=close, message=lambda t: f"ralph: {verb} {t.id}"
    )
    click.echo(f"{task_id} is {final} and moved to the done archive ({where})")
    return ExitCode.OK


# --- move -----------------------------------------------------------------------------------------------


def move(
    *,
    start: Path,
    task_id: str,
    top: bool = False,
    bottom: bool = False,
    before: str | None = None,
    after: str | None = None,
    push: bool = True,
) -> ExitCode:
    """Move a queued task to another place in the queue (queue order is the order tasks start in)."""
    check_task_id(task_id)
    if sum((top, bottom, before is not None, after is not None)) != 1:
        raise QueueError("say where to: exactly one of --top, --bottom, --before ID, --after ID")
    anchor = before or after
    if anchor is not None:
        check_task_id(anchor)
        if anchor == task_id:
            raise QueueError(f"{task_id} cannot move next to itself; name another task")
    checkout = open_initialised(start)

    def place(edit: QueueEdit) -> int:
        edit.queued(task_id)
        others = [t.id for t in edit.queue.tasks if t.id != task_id]
        if anchor is not None:
            if anchor not in others:
                raise QueueError(
                    f"--{'before' if before else 'after'} {anchor}: it is not in {edit.queue.name}"
                )
            index = others.index(anchor) + (1 if after else 0)
        else:
            index = 0 if top else len(others)
        edit.move(task_id, index=index)
        return index

    index, where = change_queue(
        checkout, now=read_clock(), push=push, change=place, message=lambda _: f"ralph: move {task_id}"
    )
    click.echo(f"{task_id} is now number {index + 1} in the queue ({where})")
    return ExitCode.OK
