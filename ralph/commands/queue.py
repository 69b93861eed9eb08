"""`ralph queue list | show | validate | explain | import | sort`: look at the queue, check it, fill it."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from ralph import jsonc
from ralph.bookkeeping import Mode, NotPublished, change_queue, current_queues, detect_source
from ralph.checkout import Checkout, open_checkout, open_initialised
from ralph.clock import format_z
from ralph.clock import now as read_clock
from ralph.commands._output import emit_json, one_line, table
from ralph.errors import ExitCode, PreflightError, QueueError
from ralph.files import FileTooLarge, read_bounded
from ralph.paths import check_task_id
from ralph.pause import read_pause
from ralph.queue import (
    MAX_QUEUE_BYTES,
    Task,
    check_text,
    duplicate_keys,
    find_problems,
    find_warnings,
    read_queue_bytes,
    read_queue_file,
    why_not_runnable,
)
from ralph.queuedoc import Position, QueueEdit
from ralph.queues import Queues
from ralph.state import load_state
from ralph.text import indented, printable

logger = logging.getLogger(__name__)


def _task_json(task: Task) -> dict[str, object]:
    doc: dict[str, object] = json.loads(task.model_dump_json())
    return doc


def list_tasks(
    *,
    start: Path,
    include_done: bool,
    as_json: bool,
    statuses: tuple[str, ...] = (),
    tags: tuple[str, ...] = (),
    runnable: bool = False,
) -> ExitCode:
    checkout = open_checkout(start)
    queues = current_queues(checkout)
    tasks = [*queues.queue.tasks, *(queues.done.tasks if include_done else [])]
    if statuses:
        tasks = [t for t in tasks if t.status in statuses]
    if tags:
        tasks = [t for t in tasks if set(tags) & set(t.tags)]
    if runnable:
        startable = {str(v["id"]) for v in explain_queue(checkout, queues, read_clock()) if v["runnable"]}
        tasks = [t for t in tasks if t.id in startable]
    if as_json:
        emit_json({"tasks": [_task_json(t) for t in tasks]})
        return ExitCode.OK
    if not tasks:
        filtered = statuses or tags or runnable
        click.echo(
            f"no task in {queues.queue_name} matches"
            if filtered
            else f'no tasks in {queues.queue_name}; add one with `ralph task add "<title>"`'
        )
        return ExitCode.OK
    rows = [
        [t.id, str(t.status), str(t.priority), ", ".join(t.depends_on) or "-", one_line(t.title, 60)]
        for t in tasks
    ]
    click.echo(table(["ID", "STATUS", "PRIORITY", "DEPENDS ON", "TITLE"], rows))
    return ExitCode.OK


def show(*, start: Path, task_id: str, as_json: bool) -> ExitCode:
    checkout = open_checkout(start)
    check_task_id(task_id)
    queues = current_queues(checkout)
    task = queues.find(task_id)
    if task is None:
        raise QueueError(
            f"no task {task_id} in {queues.queue_name} or {queues.done_name}; "
            "`ralph queue list --all` lists them"
        )
    if as_json:
        emit_json({"task": _task_json(task)})
        return ExitCode.OK
    for key, value in _task_json(task).items():
        if value in (None, [], {}):
            continue
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):
            value = json.dumps(value, ensure_ascii=False)
        # A description has lines of its own: shown under its key, escaped, never as lines of ours.
        click.echo(f"{key + ':':<17} {indented(str(value), ' ' * 18)}")
    return ExitCode.OK


# --- validate -------------------------------------------------------------------------------------------


def validate(*, start: Path, as_json: bool, local: bool = False) -> ExitCode:
    """The working-tree files, and the remote's (as last fetched) when they differ: every problem of each."""
    checkout = open_checkout(start)
    paths = checkout.paths
    queue_path, done_path = paths.queue_file(), paths.done_file()
    sources: list[dict[str, Any]] = []
    if not paths.is_initialised():
        sources.append(
            _result("working tree", [f"{paths.root}: not set up for ralph; run `ralph init` there"])
        )
    else:
        pair: tuple[bytes | None, bytes | None] | None = None
        try:
            pair = (read_queue_bytes(queue_path), read_queue_bytes(done_path))
        except QueueError as e:  # too large, or unreadable: nothing more to say about this pair
            sources.append(_result("working tree", [str(e)]))
        if pair is not None:
            queue_name, done_name = paths.relative(queue_path), paths.relative(done_path)
            sources.append(_check("working tree", pair, queue_name, done_name, checkout))
        remote = None if local else _remote_pair(checkout)
        if remote is not None and remote[0] != pair:
            label, queue_name, done_name = remote[1]
            sources.append(_check(label, remote[0], queue_name, done_name, checkout))
    problems = [p for s in sources for p in s["problems"]]
    warnings = [w for s in sources for w in s["warnings"]]
    if as_json:
        here = sources[0]
        emit_json(
            {
                "valid": not problems,
                "problems": problems,
                "warnings": warnings,
                "queue_tasks": here["queue_tasks"],
                "done_tasks": here["done_tasks"],
                "sources": sources,
            }
        )
        return ExitCode.ERROR if problems else ExitCode.OK
    for source in sources:
        for line in source["problems"]:
            click.echo(printable(line))  # a problem quotes the file: shown, never obeyed
        if not source["problems"] and source["queue_tasks"] is not None:
            where = "" if len(sources) == 1 else f"{source['name']}: "
            click.echo(
                f"{where}ok: {_tasks(source['queue_tasks'])} in {source['queue_name']}, "
                f"{_tasks(source['done_tasks'])} in {source['done_name']}"
            )
    for line in warnings:
        click.echo(f"warning: {printable(line)}", err=True)
    return ExitCode.ERROR if problems else ExitCode.OK


def _remote_pair(checkout: Checkout) -> tuple[tuple[bytes | None, bytes | None], tuple[str, str, str]] | None:
    """The queue files on the remote base as last fetched, when they are tracked there."""
    git = checkout.git()
    base = checkout.base_branch()
    if git.run("rev-parse", "--verify", "--quiet", checkout.tracking_ref(base), ok=(0, 1)).returncode:
        return None
    try:
        source = detect_source(checkout, git, base)
    except (NotPublished, PreflightError, QueueError):
        return None
    if source.mode is not Mode.TRACKED:
        return None
    pair: tuple[bytes | None, bytes | None] = source.contents()
    names = (
        f"{source.label} (as last fetched)",
        f"{source.label}:{source.queue_path}",
        f"{source.label}:{source.done_path}",
    )
    return pair, names


def _check(
    name: str, pair: tuple[bytes | None, bytes | None], queue_name: str, done_name: str, checkout: Checkout
) -> dict[str, Any]:
    """Every problem of one queue and done pair: each file's own, then (when both parse) the pair's."""
    parsed = []
    problems: list[str] = []
    warnings: list[str] = []
    for data, file_name in zip(pair, (queue_name, done_name), strict=True):
        file, file_problems = read_queue_file(data if data is not None else b'{"version": 1}', file_name)
        parsed.append(file)
        problems += file_problems
        if data is not None:
            warnings += duplicate_keys(data, file_name)
    queue, done = parsed
    if queue is not None and done is not None:
        config = checkout.config.queue
        problems += find_problems(
            queue,
            done,
            prefix=config.id_prefix,
            width=config.id_width,
            queue_name=queue_name,
            done_name=done_name,
        )
        warnings += find_warnings(queue, queue_name=queue_name)
    result = _result(name, problems, warnings)
    result.update(
        queue_name=queue_name,
        done_name=done_name,
        queue_tasks=len(queue.tasks) if queue is not None else None,
        done_tasks=len(done.tasks) if done is not None else None,
    )
    return result


def _result(name: str, problems: list[str], warnings: list[str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "valid": not problems,
        "problems": problems,
        "warnings": warnings or [],
        "queue_tasks": None,
        "done_tasks": None,
    }


def _tasks(n: int) -> str:
    return f"{n} task" if n == 1 else f"{n} tasks"


# --- explain --------------------------------------------------------------------------------------------


def explain(*, start: Path, as_json: bool) -> ExitCode:
    checkout = open_checkout(start)
    now = read_clock()
    queues = current_queues(checkout)
    queues.validate(checkout.config.queue)
    verdicts = explain_queue(checkout, queues, now)
    paused = read_pause(checkout.paths.pause)
    if as_json:
        emit_json(
            {
                "generated_at": format_z(now),
                "paused": paused.describe() if paused else None,
                "tasks": verdicts,
            }
        )
        return ExitCode.OK
    if paused is not None:
        click.echo(f"{paused.describe()}; no task starts until `ralph resume`")
    if not verdicts:
        click.echo(f"no tasks in {queues.queue_name}")
        return ExitCode.OK
    rows = [
        [str(v["id"]), "runnable" if v["runnable"] else str(v["reason"]), one_line(str(v["title"]), 50)]
        for v in verdicts
    ]
    click.echo(table(["ID", "VERDICT", "TITLE"], rows))
    return ExitCode.OK


def explain_queue(checkout: Checkout, queues: Queues, now: datetime) -> list[dict[str, object]]:
    """One verdict per queued task, in queue order: runnable, or the reason it is not (a pause too)."""
    state = load_state(
        checkout.paths.state, now=now, target_branch=checkout.base_branch(), remote=checkout.remote
    )
    paused = read_pause(checkout.paths.pause)
    statuses = queues.statuses()
    workers = state.by_task()
    out: list[dict[str, object]] = []
    for task in queues.queue.tasks:
        reason = why_not_runnable(
            task, statuses=statuses, workers=workers, now=now, max_attempts=checkout.config.agent.max_attempts
        )
        if reason is None and paused is not None:
            reason = f"runnable, but ralph is {paused.describe()} (`ralph resume`)"
        out.append({"id": task.id, "title": task.title, "runnable": reason is None, "reason": reason})
    return out


# --- import and sort ------------------------------------------------------------------------------------


def import_tasks(
    *, start: Path, source: str, push: bool = True, position: Position | None = None
) -> ExitCode:
    """Queue every task of a JSON or Markdown file at once: all of them, or (on any problem) none."""
    checkout = open_initialised(start)
    now = read_clock()
    data = _read_import(source)
    items = parse_import(data, source)
    if not items:
        raise QueueError(f"{source}: no tasks in it (a JSON list of tasks, or a Markdown list of titles)")

    def insert(edit: QueueEdit) -> list[Task]:
        edit.validate(checkout.config.queue)  # new ids are only as good as the ids already there
        made: list[Task] = []
        for n, item in enumerate(items, 1):
            made.append(_imported(checkout, edit, item, now=now, where=f"{source}: task {n}: ", taken=made))
        # Where one new task would go (by default the top, after a leading `doing` task), all of them
        # go, in the file's order.
        at = edit.place(position)
        for offset, task in enumerate(made):
            edit.add(task, at=at + offset)
        return made

    made, where = change_queue(
        checkout,
        now=now,
        push=push,
        change=insert,
        message=lambda tasks: (
            f"ralph: import {len(tasks)} task{'s' if len(tasks) != 1 else ''} from "
            f"{Path(source).name if source != '-' else 'stdin'}"
        ),
    )
    for task in made:
        click.echo(task.id)
    logger.info("%d task%s imported, %s", len(made), "s" if len(made) != 1 else "", where)
    return ExitCode.OK


def _read_import(source: str) -> bytes:
    try:
        if source == "-":
            data = sys.stdin.buffer.read(MAX_QUEUE_BYTES + 1)
            if len(data) > MAX_QUEUE_BYTES:
                raise FileTooLarge(len(data), MAX_QUEUE_BYTES)
            return data
        return read_bounded(Path(source), MAX_QUEUE_BYTES)
    except FileTooLarge as e:
        raise QueueError(f"{source}: {e}; import it in parts") from None
    except OSError as e:
        raise QueueError(f"{source}: cannot read: {e.strerror}") from None


_ITEM = re.compile(
    r"^(?P<indent>[ \t]*)(?:[-*+]|\d+[.)])[ \t]+(?:\[(?P<box>[ xX])\][ \t]+)?(?P<title>\S.*?)\s*$"
)


def parse_import(data: bytes, source: str) -> list[dict[str, Any]]:
    """Tasks to import, as dicts: a JSON list of task objects (or {"version": 1, "tasks": [...]}, the
    queue file's own shape), or a Markdown list: each top-level item a title, the lines indented under
    it its description. Checked items (`- [x]`) are done already and are skipped."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise QueueError(f"{source}: not UTF-8 (byte {e.start})") from None
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        return []
    if source.endswith((".json", ".jsonc")) or stripped.startswith(("[", "{")):
        return _json_items(text, source)
    return _markdown_items(text)


def _json_items(text: str, source: str) -> list[dict[str, Any]]:
    try:
        raw = jsonc.loads(text)
    except jsonc.JsoncError as e:
        raise QueueError(f"{source}: not valid JSON: {e}") from None
    if isinstance(raw, dict) and "tasks" in raw:
        if raw.get("version", 1) != 1 or set(raw) - {"version", "tasks"}:
            raise QueueError(f'{source}: expected a list of tasks, or {{"version": 1, "tasks": [...]}}')
        raw = raw["tasks"]
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise QueueError(f'{source}: expected a list of task objects, or {{"version": 1, "tasks": [...]}}')
    return raw


def _markdown_items(text: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    top: int | None = None
    current: dict[str, Any] | None = None
    body: list[str] = []

    def close() -> None:
        if current is not None and not current.pop("_skip"):
            description = _dedent(body)
            if description:
                current["description"] = description
            items.append(current)

    for line in text.splitlines():
        match = _ITEM.match(line)
        indent = len(match.group("indent").expandtabs(4)) if match else None
        if match and (top is None or indent is not None and indent <= top):
            close()
            top = indent
            current = {"title": match.group("title"), "_skip": match.group("box") in ("x", "X")}
            body = []
        elif current is not None and (not line.strip() or len(line) - len(line.lstrip()) > (top or 0)):
            body.append(line)
        elif line.strip():
            close()  # a paragraph or heading at the list's level ends the item
            current = None
            body = []
    close()
    return items


def _dedent(lines: list[str]) -> str:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    while lines and not lines[0].strip():
        lines = lines[1:]
    if not lines:
        return ""
    margin = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[margin:] for line in lines)


def _imported(
    checkout: Checkout, edit: QueueEdit, item: dict[str, Any], *, now: datetime, where: str, taken: list[Task]
) -> Task:
    title = item.get("title")
    if not isinstance(title, str) or not title.strip():
        raise QueueError(f"{where}a task needs a non-empty title")
    description = item.get("description")
    check_text(title.strip(), description if isinstance(description, str) else None, where=where)
    given = {
        k: v for k, v in item.items() if k not in ("title", "description", "id", "priority", "depends_on")
    }
    if item.get("id") is not None:
        given["id"] = item["id"]
    if item.get("status") in ("done", "rejected") and not item.get("completed_at"):
        given["completed_at"] = now  # as the Rust ralph's import does
    try:
        task = edit.new_task(
            checkout.config.queue,
            title=title.strip(),
            description=description,
            depends_on=item.get("depends_on"),
            priority=item.get("priority", "medium"),
            also=[t.id for t in taken],
            **given,
        )
    except (QueueError, ValueError) as e:
        raise QueueError(f"{where}{e}") from None
    if edit.queues.find(task.id) is not None or task.id in {t.id for t in taken}:
        raise QueueError(f"{where}id {task.id} is taken; leave the id out and one is given")
    return task


def sort(*, start: Path, push: bool = True) -> ExitCode:
    """Reorder the queue by priority (critical first), keeping queue order among tasks of equal priority."""
    checkout = open_initialised(start)
    moved, where = change_queue(
        checkout,
        now=read_clock(),
        push=push,
        change=lambda edit: edit.sort(),
        message=lambda _: "ralph: sort the queue by priority",
    )
    click.echo(f"sorted by priority ({where})" if moved else "already in priority order; nothing changed")
    return ExitCode.OK
