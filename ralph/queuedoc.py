"""Queue and done files edited byte for byte: a change rewrites only the lines of the tasks it touches.

The Rust ralph's files are shared by many hands (people, agents, merges), and a rewrite of the whole
file turned every landing into a 279-line diff and every concurrent edit into a conflict. So a file is
kept as its text: each task is a slice of it, with the whitespace and comments before it and the comma
after it. An untouched task is copied as it was; a touched one is written again in the file's own
layout (its indentation, its key order, its time format), where every value that did not change keeps
the very text it had. Only where no text exists yet (a new task, a new key) is ralph's own layout used:
the Rust ralph's, `serde_json` pretty printing.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from ralph import jsonc
from ralph.config import QueueConfig
from ralph.errors import QueueError
from ralph.models import describe_validation_error
from ralph.queue import Priority, QueueFile, Task, TaskStatus, insert_index, next_id, parse_queue_file
from ralph.queues import Queues

# The order the Rust ralph writes a task's keys in: new keys go where it would put them.
KEY_ORDER: tuple[str, ...] = tuple(Task.model_fields)
Position = Literal["top", "bottom"]
_TIME_FIELDS = frozenset({"created_at", "updated_at", "completed_at"})
_EMPTY_FILE = '{\n  "version": 1,\n  "tasks": []\n}\n'


# --- times --------------------------------------------------------------------------------------------

_TIME_FORM = re.compile(r"\d{2}:\d{2}:\d{2}(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True)
class TimeStyle:
    """How a file writes times: the Rust ralph uses 9 fractional digits (older entries none), ralph none."""

    digits: int = 0
    suffix: str = "Z"

    @classmethod
    def of(cls, written: str | None) -> TimeStyle | None:
        """The style of one time as written, or None when it is not a time ralph could imitate."""
        match = _TIME_FORM.search(written or "")
        if match is None:
            return None
        # Only a UTC form is imitated: a file's times are UTC (the Rust ralph refuses any other offset).
        return cls(len(match.group(1) or ""), "+00:00" if match.group(2) == "+00:00" else "Z")

    def format(self, value: datetime) -> str:
        utc = value.astimezone(UTC)
        text = utc.strftime("%Y-%m-%dT%H:%M:%S")
        if self.digits:
            text += "." + f"{utc.microsecond:06d}".ljust(self.digits, "0")[: self.digits]
        return text + self.suffix


# After a task's comma: spaces and a `//` comment on the same line stay with that task.
_SAME_LINE = re.compile(r"[ \t]*(?://[^\n]*)?")
_UPDATED_AT = re.compile(r"""["']?updated_at["']?\s*:\s*["']([^"']*)["']""")


# --- one file -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Origin:
    """A task as it was read: its model, its text, and the layout that text was written in."""

    task: Task
    text: str
    indent: str
    unit: str
    newline: str


@dataclass
class _Entry:
    task: Task
    lead: str  # whitespace and comments between the previous comma (or the `[`) and the task
    comma: str  # the comma after it and a comment on the same line (or "": none)
    text: str | None  # the task's text as written, or None once it was changed
    origin: _Origin | None  # where its text came from, for the values that did not change


@dataclass
class QueueDoc:
    """One queue or done file: its text around the `tasks` array, and an entry per task."""

    name: str
    head: str  # up to and including the `[` of "tasks"
    entries: list[_Entry]
    close: str  # between the last task (and its comma) and the `]`
    tail: str  # from the `]` to the end of the file
    unit: str  # one level of indentation
    indent: str  # a task's indentation
    newline: str
    trailing_comma: bool  # the file writes a comma after its last task
    style: TimeStyle
    original: bytes | None = None  # the file as read; None: it did not exist
    keep: str | None = None  # a file without a "tasks" key: its text, kept as long as no task is added
    file: QueueFile = field(init=False)

    def __post_init__(self) -> None:
        self.file = QueueFile(version=1, tasks=[e.task for e in self.entries])

    @classmethod
    def parse(cls, data: bytes | None, name: str) -> QueueDoc:
        """Read a file (None: it does not exist yet); QueueError if it is not a valid queue file."""
        if data is None:
            return cls._from_text(_EMPTY_FILE, name, parse_queue_file(_EMPTY_FILE.encode(), name), None)
        return cls._from_text(data.decode(), name, parse_queue_file(data, name), data)

    @classmethod
    def _from_text(cls, text: str, name: str, file: QueueFile, original: bytes | None) -> QueueDoc:
        scanner = jsonc.Scanner(text)
        members: list[jsonc.Member] = []
        spans: list[tuple[int, int]] = []

        def walk(key: str, key_start: int, value_start: int) -> int:
            # The tasks are read one by one (where each starts and ends); nothing else is read twice.
            if key == "tasks" and text.startswith("[", value_start):
                spans[:], value_end = scanner.elements(value_start)
            else:
                value_end = scanner.value_end(value_start)
            members.append(jsonc.Member(key, key_start, value_start, value_end))
            return value_end

        end = scanner.each_member(scanner.skip(0), walk)
        newline = "\r\n" if "\r\n" in text else "\n"
        tasks = [m for m in members if m.key == "tasks"]
        if not tasks:
            # No "tasks" key (the Rust ralph defaults it to []): it is added before the closing brace.
            last = members[-1] if members else None
            unit = _line_indent(text, last.key_start) if last else "  "
            cut = end - 1
            before = text[:cut].rstrip()
            head = before + ("," if last else "") + newline + unit + '"tasks": ['
            unit = unit or "  "
            tail = "]" + newline + text[cut:].lstrip()
            return cls(name, head, [], "", tail, unit, unit * 2, newline, False, TimeStyle(), original, text)
        member = tasks[-1]  # a key written twice: the last one counts, as in the Rust ralph
        if tasks[-1] is not tasks[0]:
            spans[:], _ = scanner.elements(member.value_start)
        unit = _line_indent(text, member.key_start) or "  "
        array_end = member.value_end
        entries: list[_Entry] = []
        boundary = member.value_start + 1
        trailing = False
        for (begin, finish), task in zip(spans, file.tasks, strict=True):
            after = scanner.skip(finish)
            comma_end = _after_same_line(text, after + 1) if text.startswith(",", after) else finish
            lead = text[boundary:begin]
            indent = _line_indent(text, begin)
            body = text[begin:finish]
            entries.append(
                _Entry(task, lead, text[finish:comma_end], body, _Origin(task, body, indent, unit, newline))
            )
            trailing = comma_end != finish
            boundary = comma_end
        indent = entries[0].origin.indent if entries and entries[0].origin else unit * 2
        style = _common_style(text)
        return cls(
            name,
            text[: member.value_start + 1],
            entries,
            text[boundary : array_end - 1],
            text[array_end - 1 :],
            unit,
            indent or unit * 2,
            newline,
            trailing,
            style,
            original,
        )

    # --- reading ---

    @property
    def tasks(self) -> list[Task]:
        return self.file.tasks

    def index(self, task_id: str) -> int | None:
        return next((i for i, e in enumerate(self.entries) if e.task.id == task_id), None)

    def find(self, task_id: str) -> Task | None:
        i = self.index(task_id)
        return None if i is None else self.entries[i].task

    # --- changing ---

    def insert(self, index: int, task: Task, *, origin: _Origin | None = None) -> None:
        """Put `task` at `index`: written in this file's layout; `origin` lends the text of its values."""
        self.entries.insert(index, _Entry(task, self.newline + self.indent, "", None, origin))
        self._changed()

    def replace(self, task: Task) -> None:
        """Write `task` over the task with its id; only the values that changed get new text."""
        i = self._require(task.id)
        entry = self.entries[i]
        if entry.task == task and entry.task.model_fields_set == task.model_fields_set:
            return
        entry.task = task
        entry.text = None
        self._changed()

    def pop(self, task_id: str) -> tuple[Task, _Origin | None]:
        """Take the task out of the file; its origin lets another file reuse its text."""
        entry = self.entries.pop(self._require(task_id))
        self._changed()
        return entry.task, entry.origin

    def move(self, task_id: str, index: int) -> None:
        """Move a task, its text and the comments above it unchanged, to `index` (counted without it)."""
        entry = self.entries.pop(self._require(task_id))
        self.entries.insert(index, entry)
        self._changed()

    def reorder(self, order: Iterable[str]) -> None:
        """Put the tasks in the order of the ids given (every id once), each task's text unchanged."""
        by_id = {e.task.id: e for e in self.entries}
        self.entries = [by_id[i] for i in order]
        self._changed()

    def _require(self, task_id: str) -> int:
        i = self.index(task_id)
        if i is None:
            raise QueueError(f"{task_id} is not in {self.name}")
        return i

    def _changed(self) -> None:
        self.file.tasks[:] = [e.task for e in self.entries]

    # --- writing ---

    def render(self) -> bytes:
        if not self.entries and self.keep is not None:
            return self.keep.encode()
        self._fix_commas()
        parts = [self.head]
        for entry in self.entries:
            if entry.text is None:
                entry.text = render_task(
                    entry.task,
                    entry.origin,
                    indent=self.indent,
                    unit=self.unit,
                    newline=self.newline,
                    style=_style_of(entry, self.style),
                )
                entry.origin = _Origin(entry.task, entry.text, self.indent, self.unit, self.newline)
            parts += [entry.lead, entry.text, entry.comma]
        close = self.close
        if not self.entries and not close.strip():
            close = ""  # an emptied array is written `[]`, as serde_json writes it
        elif self.entries and not close:
            close = self.newline + self.indent[: max(0, len(self.indent) - len(self.unit))]
        parts += [close, self.tail]
        return "".join(parts).encode()

    def _fix_commas(self) -> None:
        """A comma after every task but the last; after the last only where the file had one there."""
        last = len(self.entries) - 1
        for i, entry in enumerate(self.entries):
            # The comma is the first thing after the task but whitespace and comments.
            at = jsonc.Scanner(entry.comma).skip(0)
            has = entry.comma.startswith(",", at)
            if (i < last or self.trailing_comma) and not has:
                entry.comma = "," + entry.comma
            elif i == last and not self.trailing_comma and has:
                entry.comma = entry.comma[:at] + entry.comma[at + 1 :]


def _after_same_line(text: str, pos: int) -> int:
    match = _SAME_LINE.match(text, pos)
    return match.end() if match else pos


def _common_style(text: str) -> TimeStyle:
    """The time format most of a file's tasks were last written with: what a new task gets."""
    styles = Counter(TimeStyle.of(t) for t in _UPDATED_AT.findall(text))
    styles.pop(None, None)
    if not styles:
        return TimeStyle()
    return styles.most_common(1)[0][0] or TimeStyle()


def _line_indent(text: str, pos: int) -> str:
    """The whitespace from the start of `pos`'s line up to `pos` ("" when something else is there)."""
    start = text.rfind("\n", 0, pos) + 1
    prefix = text[start:pos]
    return prefix if not prefix.strip() else ""


def _style_of(entry: _Entry, fallback: TimeStyle) -> TimeStyle:
    """A changed task keeps the time format its own updated_at was written in."""
    if entry.origin is None:
        return fallback
    match = _UPDATED_AT.search(entry.origin.text)
    return (TimeStyle.of(match.group(1)) if match else None) or fallback


def render_task(
    task: Task, origin: _Origin | None, *, indent: str, unit: str, newline: str, style: TimeStyle
) -> str:
    """A task's text in the file's layout: its keys in the order they were written (new ones where the
    Rust ralph puts them), a value that did not change as the very text it had."""
    written: dict[str, str] = {}
    if origin is not None:
        scanner = jsonc.Scanner(origin.text)
        members, _ = scanner.members(0)
        for member in members:  # a key written twice: the last counts
            written[member.key] = origin.text[member.value_start : member.value_end]
    same_layout = origin is not None and (origin.indent, origin.unit, origin.newline) == (
        indent,
        unit,
        newline,
    )
    present = task.model_fields_set
    keys = list(written)  # every key a task file may hold is a field (the model refuses others)
    for key in KEY_ORDER:
        if key in present and key not in keys:
            before = [k for k in KEY_ORDER[: KEY_ORDER.index(key)] if k in keys]
            keys.insert(keys.index(before[-1]) + 1 if before else 0, key)
    dumped = task.model_dump(mode="json")
    lines = []
    inner = indent + unit
    for key in keys:
        value = getattr(task, key)
        old = getattr(origin.task, key) if origin is not None and key in written else _MISSING
        if value is None and Task.model_fields[key].default is None and old is not None:
            continue  # cleared: the Rust ralph writes no key for an empty optional value
        if (
            key in written
            and old == value
            and (same_layout or "\n" not in written[key])
            and _plain(written[key])
        ):
            text = written[key]
        elif key in _TIME_FIELDS and isinstance(value, datetime):
            text = json.dumps(style.format(value))
        else:
            text = _render_value(dumped[key], inner, unit, newline)
        lines.append(f"{inner}{json.dumps(key, ensure_ascii=False)}: {text}")
    return "{" + newline + ("," + newline).join(lines) + newline + indent + "}"


_MISSING: Any = object()


def _plain(text: str) -> bool:
    """Whether a value's text is plain JSON: JSONC in it (a comment, a trailing comma, single quotes)
    is normalised when its task is written again."""
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _render_value(value: Any, indent: str, unit: str, newline: str) -> str:
    """serde_json's pretty printing, at `indent`: what the Rust ralph writes."""
    inner = indent + unit
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [
            f"{inner}{json.dumps(k, ensure_ascii=False)}: {_render_value(v, inner, unit, newline)}"
            for k, v in value.items()
        ]
        return "{" + newline + ("," + newline).join(items) + newline + indent + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        items = [inner + _render_value(v, inner, unit, newline) for v in value]
        return "[" + newline + ("," + newline).join(items) + newline + indent + "]"
    return json.dumps(value, ensure_ascii=False)


# --- the pair -----------------------------------------------------------------------------------------


class QueueEdit:
    """The queue and done archive as read, changed together; `render` gives each file's new bytes.

    The models (`queues`) and the text stay in step: every change goes through here.
    """

    def __init__(self, queue: QueueDoc, done: QueueDoc, *, now: datetime) -> None:
        self.queue = queue
        self.done = done
        self.now = now
        # New times follow the files' own format; an empty file borrows its partner's.
        if not queue.entries and done.entries:
            queue.style = done.style
        elif not done.entries and queue.entries:
            done.style = queue.style
        self.queues = Queues(queue.file, done.file, queue.name, done.name)

    @classmethod
    def parse(
        cls, queue: bytes | None, done: bytes | None, *, queue_name: str, done_name: str, now: datetime
    ) -> QueueEdit:
        return cls(QueueDoc.parse(queue, queue_name), QueueDoc.parse(done, done_name), now=now)

    def render(self) -> tuple[bytes, bytes]:
        return self.queue.render(), self.done.render()

    def changed(self) -> tuple[bytes | None, bytes | None]:
        """The new bytes of the queue and of the done archive, each None when it did not change (or
        when a file that did not exist would be created without a task in it)."""
        out: list[bytes | None] = []
        for doc in (self.queue, self.done):
            data = doc.render()
            out.append(data if data != doc.original and (doc.original is not None or doc.entries) else None)
        return out[0], out[1]

    def stamp(self, task: Task, **changes: Any) -> Task:
        """`task` with `changes` and updated_at now, validated as a task from a file would be."""
        values = {**task.model_dump(exclude_unset=True), **changes, "updated_at": self.now}
        try:
            return Task.model_validate(values, strict=False)
        except ValidationError as e:
            raise QueueError(f"{task.id}: the change is not valid: {describe_validation_error(e)}") from None

    def queued(self, task_id: str) -> Task:
        """The task with this id in the queue, or QueueError saying where it is instead."""
        task = self.queue.find(task_id)
        if task is not None:
            return task
        if self.done.find(task_id) is not None:
            raise QueueError(
                f"{task_id} is in {self.done.name}, the archive of finished tasks; only queued tasks change"
            )
        raise QueueError(
            f"no task {task_id} in {self.queue.name} or {self.done.name}; `ralph queue list` lists them"
        )

    def new_task(
        self,
        config: QueueConfig,
        *,
        title: str,
        also: Iterable[str] = (),
        **fields: Any,
    ) -> Task:
        """A todo task with the next free id (none of `also` either), created now; only the fields given
        are set, so the file holds no empty keys nobody wrote."""
        values: dict[str, Any] = {
            "id": next_id(
                self.queues.queue, self.queues.done, prefix=config.id_prefix, width=config.id_width, also=also
            ),
            "status": TaskStatus.TODO,
            "title": title,
            "created_at": self.now,
            "updated_at": self.now,
            **fields,
        }
        try:
            return Task.model_validate(
                {k: v for k, v in values.items() if v not in (None, "", [], {})}, strict=False
            )
        except ValidationError as e:
            raise QueueError(f"the new task is not valid: {describe_validation_error(e)}") from None

    # --- operations ---

    def place(self, position: Position | None) -> int:
        """Where a new task goes: the top, the bottom, or (None) where the Rust ralph puts one: the top,
        after a leading `doing` task."""
        if position is None:
            return insert_index(self.queue.file)
        return 0 if position == "top" else len(self.queue.tasks)

    def add(self, task: Task, *, at: int | None = None) -> None:
        """A new task, at index `at` or at the default place."""
        self.queue.insert(self.place(None) if at is None else at, task)

    def update(self, task_id: str, **changes: Any) -> Task:
        new = self.stamp(self.queued(task_id), **changes)
        self.queue.replace(new)
        return new

    def remove(self, task_id: str) -> Task:
        self.queued(task_id)
        return self.queue.pop(task_id)[0]

    def finish(self, task_id: str, status: TaskStatus, *, note: str | None = None) -> Task:
        """Move a queued task to the end of the done archive as `status`, completed now.

        A task the Rust ralph left finished in the queue keeps its completed_at; one that is in the
        archive already (a copy a merge left in the queue) only leaves the queue.
        """
        task = self.queued(task_id)
        archived = self.done.find(task_id)
        if archived is not None:
            self.queue.pop(task_id)
            return archived
        changes: dict[str, Any] = {}
        if task.status is not status or task.completed_at is None:
            changes.update(status=status, completed_at=self.now)
        if note:
            changes["notes"] = [*task.notes, note]
        finished = self.stamp(task, **changes) if changes else task
        _, origin = self.queue.pop(task_id)
        self.done.insert(len(self.done.entries), finished, origin=origin)
        return finished

    def move(self, task_id: str, *, index: int) -> None:
        self.queued(task_id)
        self.queue.move(task_id, index)

    def sort(self) -> bool:
        """Reorder by priority, critical first, queue order kept among equals; True if anything moved."""
        rank = {p: n for n, p in enumerate(Priority)}
        before = [t.id for t in self.queue.tasks]
        after = [t.id for t in sorted(self.queue.tasks, key=lambda t: rank[t.priority])]
        if after == before:
            return False
        self.queue.reorder(after)
        return True

    def validate(self, config: QueueConfig) -> None:
        self.queues.validate(config)


def archive_task(
    queue: bytes | None,
    done: bytes | None,
    task_id: str,
    now: datetime,
    followups: Iterable[Task] = (),
    *,
    queue_name: str = ".ralph/queue.json",
    done_name: str = ".ralph/done.json",
) -> tuple[bytes, bytes]:
    """A landing's bookkeeping over the bytes of the two files: `task_id` moved to the done archive as
    done, and `followups` queued where new tasks go. Every other task's text is left as it was, so the
    diff of the done archive is exactly the moved task, and the queue loses exactly that task.

    Called once per landed task, each call on the previous one's output (a merge train lands several).
    """
    return archive_edit(
        queue, done, task_id, now, followups, queue_name=queue_name, done_name=done_name
    ).render()


def archive_edit(
    queue: bytes | None,
    done: bytes | None,
    task_id: str,
    now: datetime,
    followups: Iterable[Task] = (),
    *,
    queue_name: str,
    done_name: str,
    missing_ok: bool = False,
) -> QueueEdit:
    """archive_task, returning the edit itself (its `queues` are the models of the new files).
    `missing_ok`: a task in neither file only gets its follow-ups queued."""
    edit = QueueEdit.parse(queue, done, queue_name=queue_name, done_name=done_name, now=now)
    if edit.queue.find(task_id) is not None:
        edit.finish(task_id, TaskStatus.DONE)
    elif edit.done.find(task_id) is None and not missing_ok:
        raise QueueError(f"{task_id} is in neither {queue_name} nor {done_name}; nothing to archive")
    at = insert_index(edit.queue.file)
    for offset, task in enumerate(t for t in followups if edit.queue.find(t.id) is None):
        edit.add(task, at=at + offset)
    return edit
