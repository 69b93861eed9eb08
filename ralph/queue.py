"""The task queue and done archive: models compatible with the Rust ralph, validation, selection.

Queue order is authoritative: selection walks the file top to bottom, and priority never reorders it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, field_validator

from ralph import jsonc
from ralph.clock import UtcDatetime, format_z
from ralph.errors import QueueError, TaskIdError
from ralph.files import FileTooLarge, read_bounded, write_atomic
from ralph.models import FileModel, Namer, Text, describe_errors, item_namer, no_nul
from ralph.paths import check_task_id
from ralph.state import Lifecycle, Worker

logger = logging.getLogger(__name__)

# A queue this large is a mistake or an attack; refuse it before parsing. 10,000 tasks is about 5 MB.
MAX_QUEUE_BYTES = 32 * 1024 * 1024


class TaskStatus(StrEnum):
    DRAFT = "draft"
    TODO = "todo"
    DOING = "doing"
    DONE = "done"
    REJECTED = "rejected"


TERMINAL_STATUSES = frozenset({TaskStatus.DONE, TaskStatus.REJECTED})


class Priority(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


Effort = Literal["default", "low", "medium", "high", "xhigh"]


def _task_ref(value: str) -> str:
    try:
        return check_task_id(value)
    except TaskIdError as e:
        raise ValueError(str(e)) from None


# min_length first: after an AfterValidator pydantic words it as "at least 1 item", not "1 character".
NonEmpty = Annotated[str, Field(min_length=1), AfterValidator(no_nul)]
# Checked per item, so an error names `depends_on[2]` rather than the whole list.
TaskRef = Annotated[str, AfterValidator(_task_ref)]


class TaskAgent(FileModel):
    """Per-task agent overrides, kept for compatibility with the Rust ralph's queue files."""

    runner: Text | None = None
    model: Text | None = None
    model_effort: Effort | None = None
    phases: Annotated[int, Field(ge=1, le=3)] | None = None
    iterations: Annotated[int, Field(ge=1)] | None = None
    followup_reasoning_effort: Effort | None = None
    runner_cli: dict[str, Any] | None = None
    phase_overrides: dict[str, Any] | None = None


def _strip(value: Any) -> Any:
    # The Rust ralph trims ids before it compares them; "RQ-0001 " names RQ-0001 there, and so here.
    return value.strip() if isinstance(value, str) else value


def _refs(value: Any) -> Any:
    """A list of task ids as the Rust ralph reads it: each trimmed, and an empty one skipped."""
    if not isinstance(value, list):
        return value
    kept = [v for v in value if not (isinstance(v, str) and not v.strip())]
    return [v.strip() if isinstance(v, str) else v for v in kept]


# Trimmed before the check, like the Rust ralph; an id still unsafe in a path or a ref is refused.
TaskId = Annotated[str, BeforeValidator(_strip), AfterValidator(_task_ref)]
TaskRefs = Annotated[list[TaskRef], BeforeValidator(_refs)]


class Task(FileModel):
    """One task, its fields in the Rust ralph's order (the order it writes them in)."""

    # List and dict defaults are factories: pydantic deep-copies a literal [] or {} default for every
    # task that omits the field, a quarter of the validation time of a 10,000-task queue.
    id: TaskId
    status: TaskStatus = TaskStatus.TODO
    title: NonEmpty
    description: Text | None = None
    priority: Priority = Priority.MEDIUM
    tags: list[NonEmpty] = Field(default_factory=list)
    scope: list[NonEmpty] = Field(default_factory=list)
    evidence: list[NonEmpty] = Field(default_factory=list)
    plan: list[NonEmpty] = Field(default_factory=list)
    # The Rust ralph checks the four lists above for empty items, but not notes: `[""]` is valid there.
    notes: list[Text] = Field(default_factory=list)
    request: Text | None = None
    agent: TaskAgent | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    completed_at: UtcDatetime | None = None
    # Neither is checked by the Rust ralph when it loads a queue: started_at is informational, and
    # scheduled_start is parsed at selection (any RFC 3339 offset; unparseable means "not scheduled").
    started_at: Text | None = None
    estimated_minutes: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    actual_minutes: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    scheduled_start: Text | None = None
    depends_on: TaskRefs = Field(default_factory=list)
    blocks: TaskRefs = Field(default_factory=list)
    relates_to: TaskRefs = Field(default_factory=list)
    duplicates: Text | None = None
    custom_fields: dict[Text, Text] = Field(default_factory=dict)
    parent_id: Text | None = None

    @field_validator("custom_fields", mode="before")
    @classmethod
    def _coerce_custom_fields(cls, value: Any) -> Any:
        # The Rust ralph coerces numbers and booleans to strings; so do we, so its files load here.
        if not isinstance(value, dict):
            return value
        out = {}
        for key, item in value.items():
            # Checked as the Rust ralph checks it: the key trimmed must be non-empty, without whitespace.
            if isinstance(key, str) and (not key.strip() or any(c.isspace() for c in key.strip())):
                raise ValueError(f"custom_fields key {key!r} must be non-empty and contain no whitespace")
            if isinstance(item, bool):
                item = "true" if item else "false"
            elif isinstance(item, int | float):
                item = str(item)
            out[key] = item
        return out

    @property
    def scheduled_at(self) -> datetime | None:
        """scheduled_start as a UTC time, or None when unset or unparseable (the Rust ralph then runs it)."""
        return parse_rfc3339(self.scheduled_start)


def parse_rfc3339(value: str | None) -> datetime | None:
    """An RFC 3339 date-time with any offset, in UTC; None for anything else."""
    if not value or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().upper())
    except ValueError:
        return None
    if parsed.tzinfo is None or "T" not in value.strip().upper():
        return None
    return parsed.astimezone(UTC)


class QueueFile(FileModel):
    version: Literal[1]
    tasks: list[Task] = []

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_the_number_one(cls, value: Any) -> Any:
        # Literal[1] alone lets `true` and `1.0` through (they compare equal to 1) and would write them back.
        if type(value) is not int:
            raise ValueError("must be the number 1")
        return value


def empty_queue_file() -> QueueFile:
    return QueueFile(version=1, tasks=[])


# --- reading and writing -------------------------------------------------------------------------


def _too_large(source: str, size: int) -> QueueError:
    # Exact bytes, not rounded megabytes: "33.6 MB is over the 34 MB limit" read as a contradiction.
    return QueueError(
        f"{source}: {size:,} bytes is over the {MAX_QUEUE_BYTES:,}-byte ({MAX_QUEUE_BYTES >> 20} MiB) limit; "
        "move finished tasks to the done archive or split the queue"
    )


def parse_queue_file(data: bytes, source: str) -> QueueFile:
    """Parse queue or done bytes from a file or a git blob; `source` names it in errors."""
    queue, problems = read_queue_file(data, source)
    if queue is None:
        raise QueueError(first_of(problems))
    return queue


def read_queue_file(data: bytes, source: str) -> tuple[QueueFile | None, list[str]]:
    """The parsed file, or None and every problem that keeps it from parsing, one line each.

    Plain JSON is read by pydantic's own parser (fast); anything else as the Rust ralph reads it
    (ralph.jsonc: comments, trailing commas, unquoted keys, ...).
    """
    if len(data) > MAX_QUEUE_BYTES:  # a blob from origin/<base> did not pass through read_bounded
        return None, [str(_too_large(source, len(data)))]
    if b"\0" in data:
        return None, [f"{source}: contains NUL bytes, so it is not a JSON text file; restore it from git"]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, [f"{source}: not UTF-8 (byte {e.start}); save it as UTF-8 JSON"]
    try:
        queue = QueueFile.model_validate_json(text)
    except ValidationError as e:
        if e.errors()[0]["type"] != "json_invalid":
            return None, _listed(source, e, _parsed(text))
        try:
            raw = jsonc.loads(text)
        except jsonc.JsoncError as err:
            return None, [f"{source}: not valid JSON: {err}; fix the syntax"]
        try:
            queue = QueueFile.model_validate_json(json.dumps(raw))
        except ValidationError as err:
            if err.errors()[0]["type"] == "json_invalid":  # pydantic's recursion limit: deeper than ours
                return None, [f"{source}: not valid JSON: nested too deeply for a queue file; fix the syntax"]
            return None, _listed(source, err, raw)
        return queue, []
    problem = _not_finite(text)
    if problem is not None:
        return None, [f"{source}: {problem}"]
    return queue, []


def first_of(problems: list[str]) -> str:
    """The first problem, and how many more `ralph queue validate` would list."""
    more = f" (and {len(problems) - 1} more; `ralph queue validate` lists them)" if len(problems) > 1 else ""
    return problems[0] + more


def _listed(source: str, error: ValidationError, raw: object) -> list[str]:
    return [f"{source}: {line}" for line in describe_errors(error, _task_namer(raw))]


class _NotFinite(Exception):
    pass


def _finite(token: str) -> float:
    value = float(token)
    if value in (float("inf"), float("-inf")) or value != value:
        raise _NotFinite(token)
    return value


def _not_json_constant(token: str) -> Any:
    raise _NotFinite(token)


# An exponent of three digits or more (1e999 overflows a float). NaN and Infinity are looked for
# with `in`: one alternation of the three costs a large queue three times as much.
_BIG_EXPONENT = re.compile(r"[0-9.][eE][+-]?[0-9]{3}")


def _not_finite(text: str) -> str | None:
    """NaN, Infinity or a number too large for a float: pydantic's parser accepts them in free-form
    objects (`runner_cli`), and they would be written back as `NaN`, which is not JSON at all."""
    if "NaN" not in text and "Infinity" not in text and not _BIG_EXPONENT.search(text):
        return None  # nothing that could be: a second full parse of a large queue is not free
    try:  # pydantic parsed it already, so it is valid JSON and shallow enough for json.loads
        json.loads(text, parse_float=_finite, parse_constant=_not_json_constant)
    except _NotFinite as e:
        return f"{e.args[0]} is not a finite number; JSON (and the Rust ralph) cannot hold it"
    except (ValueError, RecursionError):  # pragma: no cover (pydantic parsed it)
        return None
    return None


def duplicate_keys(data: bytes, source: str) -> list[str]:
    """Warnings, one per key written twice in one object: the last one counts (as in the Rust ralph),
    which a bad merge can make surprising. Empty for a file that does not parse."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return []
    scanner = jsonc.Scanner(text)
    try:
        scanner.document()
    except jsonc.JsoncError:
        return []
    out = []
    for pos, key in scanner.duplicates:
        where = jsonc.JsoncError("", text, pos)
        out.append(
            f"{source}: line {where.line}: key {key!r} appears twice in one object (a bad merge?); "
            "only the last counts"
        )
    return out


def _task_namer(raw: object) -> Namer:
    """Name `tasks[3].status` as `task 'RQ-0004' (tasks[3]).status` when the id is readable."""
    return item_namer(
        raw, "tasks", "id", lambda i, task: f"task {task!r} (tasks[{i}])" if task else f"tasks[{i}]"
    )


def _parsed(text: str) -> object:
    """`text` as JSON for naming an error's place, or None (pydantic already said what is wrong)."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None


def read_queue_bytes(path: Path) -> bytes | None:
    """A queue or done file's bytes, or None when it does not exist; QueueError past the size limit."""
    try:
        return read_bounded(path, MAX_QUEUE_BYTES)
    except FileNotFoundError:
        return None
    except FileTooLarge as e:
        raise _too_large(str(path), e.size) from None
    except OSError as e:
        raise QueueError(f"{path}: cannot read: {e.strerror}") from None


def load_queue_file(path: Path) -> QueueFile:
    """Read a queue or done file from disk; a missing file is an empty queue."""
    return parse_queue_bytes(read_queue_bytes(path), str(path))


def parse_queue_bytes(data: bytes | None, source: str) -> QueueFile:
    """parse_queue_file, where None (a file that does not exist) is an empty queue."""
    return empty_queue_file() if data is None else parse_queue_file(data, source)


def render_queue_file(queue: QueueFile) -> bytes:
    """Pretty JSON; keys a file did not have stay absent, so a round trip changes nothing else."""
    doc = queue.model_dump(mode="json", exclude_unset=True)
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def save_queue_file(path: Path, queue: QueueFile) -> None:
    write_atomic(path, render_queue_file(queue))


# --- validation ----------------------------------------------------------------------------------


def id_pattern(prefix: str, width: int) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(prefix)}-\d{{{width}}}", re.IGNORECASE)


def find_problems(
    queue: QueueFile,
    done: QueueFile,
    *,
    prefix: str = "RQ",
    width: int = 4,
    queue_name: str = "queue.json",
    done_name: str = "done.json",
) -> list[str]:
    """Every semantic problem of a queue and done pair, as one line each; empty when valid.

    The rules are the Rust ralph's: what it refuses is refused, and nothing else.
    """
    problems: list[str] = []
    pattern = id_pattern(prefix, width)
    seen: dict[str, tuple[str, Task]] = {}  # the first task with each id, and the file it is in
    for name, file in ((queue_name, queue), (done_name, done)):
        # Per file, not only across both: the queue copy of an id that is also rejected in the done
        # archive must not hide the same id twice inside the archive.
        in_this_file: dict[str, Task] = {}
        for task in file.tasks:
            where = f"{name}: task {task.id}"
            if not pattern.fullmatch(task.id):
                problems.append(
                    f"{where}: id should look like {prefix}-{'0' * (width - 1)}1 ({width} digits)"
                )
            twin = in_this_file.get(task.id)
            # The Rust ralph lets a rejected task share its id, in one file or across both.
            if twin is not None and TaskStatus.REJECTED not in (task.status, twin.status):
                problems.append(f"{where}: the id appears twice (in {name}); give one of them a new id")
            elif twin is None and task.id in seen:
                other_name, other = seen[task.id]
                if TaskStatus.REJECTED not in (task.status, other.status):
                    problems.append(
                        f"{where}: the id appears twice (in {other_name} and {name}); "
                        "give one of them a new id"
                    )
            seen.setdefault(task.id, (name, task))
            if twin is None or twin.status is TaskStatus.REJECTED:
                in_this_file[task.id] = task
            if task.status in TERMINAL_STATUSES and task.completed_at is None:
                problems.append(f"{where}: status {task.status} needs completed_at")
            if file is done and task.status not in TERMINAL_STATUSES:
                problems.append(f"{where}: status {task.status} does not belong in the done archive")
    for name, file in ((queue_name, queue), (done_name, done)):
        for task in file.tasks:
            refs = {"depends_on": task.depends_on, "blocks": task.blocks, "relates_to": task.relates_to}
            if task.duplicates and task.duplicates.strip():
                refs["duplicates"] = [task.duplicates.strip()]
            for field, ids in refs.items():
                for ref in ids:
                    if ref == task.id:
                        problems.append(f"{name}: task {task.id}: {field} names the task itself")
                    elif ref not in seen:
                        problems.append(
                            f"{name}: task {task.id}: {field} names {ref}, which is in neither {queue_name} "
                            f"nor {done_name}"
                        )
    cycle = find_cycle(t for _, t in seen.values())
    if cycle:
        holders = {seen[i][0] for i in cycle if i in seen}
        files = " and ".join(n for n in (queue_name, done_name) if n in holders) or queue_name
        problems.append(f"{files}: dependency cycle: {' -> '.join(cycle)}; remove one of these dependencies")
    return problems


def find_warnings(queue: QueueFile, *, queue_name: str = "queue.json") -> list[str]:
    """What is valid but probably not meant: a scheduled_start nobody can read runs the task at once."""
    return [
        f"{queue_name}: task {t.id}: scheduled_start {t.scheduled_start!r} is not an RFC 3339 time, "
        "so the task is not held back; write it like 2026-11-21T09:00:00Z"
        for t in queue.tasks
        if t.scheduled_start and t.scheduled_start.strip() and t.scheduled_at is None
    ]


# Limits on what a person types into a task (issue 15): long enough for any real task, short enough
# that a paste by mistake is caught before it reaches every prompt and every queue read.
MAX_TITLE_CHARS = 500
MAX_DESCRIPTION_BYTES = 64 * 1024


def check_text(title: str, description: str | None, *, where: str = "") -> None:
    """Refuse a title or description over the limits, in one line naming which and by how much."""
    if len(title) > MAX_TITLE_CHARS:
        raise QueueError(
            f"{where}the title is {len(title):,} characters, over the {MAX_TITLE_CHARS}-character limit; "
            "keep it to a short line and put the detail in the description"
        )
    if description is not None and len(description.encode()) > MAX_DESCRIPTION_BYTES:
        raise QueueError(
            f"{where}the description is {len(description.encode()):,} bytes, over the "
            f"{MAX_DESCRIPTION_BYTES:,}-byte limit; link to a document instead of pasting it"
        )


def find_cycle(tasks: Iterable[Task]) -> list[str] | None:
    """A dependency cycle as `[a, b, ..., a]`, or None. `X blocks Y` counts as `Y depends on X`."""
    edges: dict[str, list[str]] = {}
    for task in tasks:
        edges.setdefault(task.id, []).extend(d for d in task.depends_on if d != task.id)
        for blocked in task.blocks:
            if blocked != task.id:
                edges.setdefault(blocked, []).append(task.id)
    # Iterative DFS with colours: a 10,000-task chain must not hit the recursion limit.
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(edges, white)
    for start in edges:
        if colour[start] != white:
            continue
        path = [start]
        stack = [iter(edges[start])]
        colour[start] = grey
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                colour[path.pop()] = black
                stack.pop()
                continue
            state = colour.get(nxt, black)  # a dangling id is reported elsewhere
            if state == grey:
                return path[path.index(nxt) :] + [nxt]
            if state == white:
                colour[nxt] = grey
                path.append(nxt)
                stack.append(iter(edges.get(nxt, [])))
    return None


def next_id(
    queue: QueueFile, done: QueueFile, *, prefix: str = "RQ", width: int = 4, also: Iterable[str] = ()
) -> str:
    """One past the highest number in use, counting rejected tasks too so an id is never reused.

    `also`: ids known elsewhere (the remote's files, when the working tree's may be behind).
    """
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+)", re.IGNORECASE)
    highest = 0
    for task_id in (*(t.id for t in queue.tasks), *(t.id for t in done.tasks), *also):
        match = pattern.fullmatch(task_id)
        if match:
            highest = max(highest, int(match.group(1)))
    return f"{prefix.upper()}-{highest + 1:0{width}d}"


def find_task(queue: QueueFile, done: QueueFile, task_id: str) -> Task | None:
    for task in (*queue.tasks, *done.tasks):
        if task.id == task_id:
            return task
    return None


def insert_index(queue: QueueFile) -> int:
    """Where a new task goes by default, as in the Rust ralph: the top, or after a leading `doing` task."""
    return 1 if queue.tasks and queue.tasks[0].status is TaskStatus.DOING else 0


# --- selection (DESIGN §4.3) ---------------------------------------------------------------------


def why_not_runnable(
    task: Task,
    *,
    statuses: Mapping[str, TaskStatus],
    workers: Mapping[str, Worker],
    now: datetime,
    max_attempts: int,
    include_draft: bool = False,
) -> str | None:
    """Why `task` cannot start now, or None when it can. Selection and `queue explain` share this.

    As in the Rust ralph: a `doing` task (one a run started and did not finish) is resumed as it is,
    without waiting for its dependencies or its schedule again; a `draft` runs only when asked for.
    """
    return why_not_ready(task, statuses=statuses, include_draft=include_draft) or why_not_now(
        task.id,
        task.status,
        task.scheduled_at,
        workers=workers,
        now=now,
        max_attempts=max_attempts,
    )


def why_not_ready(task: Task, *, statuses: Mapping[str, TaskStatus], include_draft: bool) -> str | None:
    """The part of why_not_runnable the two files alone decide: status and dependencies."""
    if task.status is TaskStatus.DRAFT and not include_draft:
        return "status is draft (`ralph run --include-draft` runs drafts)"
    if task.status not in (TaskStatus.TODO, TaskStatus.DOING, TaskStatus.DRAFT):
        return f"status is {task.status}"
    if task.status is not TaskStatus.DOING:
        waiting = [d for d in task.depends_on if statuses.get(d) not in TERMINAL_STATUSES]
        if waiting:
            described = ", ".join(f"{d} ({statuses.get(d, 'missing')})" for d in waiting)
            return f"waits for {described}"
    return None


def why_not_now(
    task_id: str,
    status: TaskStatus,
    scheduled: datetime | None,
    *,
    workers: Mapping[str, Worker],
    now: datetime,
    max_attempts: int,
) -> str | None:
    """The part of why_not_runnable the clock and the workers decide, for a task the files let start."""
    if status is not TaskStatus.DOING and scheduled is not None and scheduled > now:
        return f"scheduled to start at {format_z(scheduled)}"
    worker = workers.get(task_id)
    if worker is None:
        return None
    # Every non-terminal lifecycle, not only those with a live job: an `integrating` worker holds
    # verified work waiting to land, and starting the task again would land it twice.
    if worker.lifecycle not in Lifecycle.terminal():
        return f"in progress ({worker.lifecycle})"
    if worker.lifecycle == Lifecycle.BLOCKED_PUSH:
        what = worker.last_error or "work could not land"
        return f"blocked: {what}; `ralph retry {task_id}` or `ralph discard {task_id}`"
    if worker.lifecycle == Lifecycle.COMPLETED:
        return "landed; waiting for the queue on the base branch to show it done"
    if worker.lifecycle == Lifecycle.FAILED:
        if worker.attempt >= max_attempts:
            return f"attempts used up ({worker.attempt}/{max_attempts}): {worker.last_error or 'failed'}"
        if worker.next_attempt_at is None:
            # A failure with no retry time is one a person ended (`ralph cancel`): only they restart it.
            what = worker.last_error or "failed"
            return f"stopped: {what}; not retried automatically, `ralph retry {task_id}` runs it again"
        if worker.next_attempt_at > now:
            when = format_z(worker.next_attempt_at)
            return f"retry after {when} (attempt {worker.attempt}/{max_attempts} failed)"
    return None


def still_wanted(status: TaskStatus | None) -> bool:
    """Whether work on a task whose status is `status` (None: in neither file) should go on: it is
    not done or rejected. `doing` and `draft` count: a doing task is being resumed, and a draft one
    was started on purpose."""
    return status is not None and status not in TERMINAL_STATUSES


def task_statuses(queue: QueueFile, done: QueueFile) -> dict[str, TaskStatus]:
    statuses = {t.id: t.status for t in done.tasks}
    statuses.update((t.id, t.status) for t in queue.tasks)
    return statuses


# Resumed first, then the queue, then (with --include-draft) the drafts: the Rust ralph's order.
SELECTION_ORDER = {TaskStatus.DOING: 0, TaskStatus.TODO: 1, TaskStatus.DRAFT: 2}


def select_runnable(
    queue: QueueFile,
    done: QueueFile,
    workers: Mapping[str, Worker],
    now: datetime,
    *,
    max_attempts: int,
    include_draft: bool = False,
    only: str | None = None,
) -> list[Task]:
    """The tasks that may start now: `doing` ones first, then `todo`, then drafts, each in queue order.

    With `only`, that task alone, out of queue order; why it cannot start is logged.
    """
    statuses = task_statuses(queue, done)
    candidates = queue.tasks
    if only is not None:
        candidates = [t for t in queue.tasks if t.id == only]
        if not candidates:
            logger.info("--only %s: it is not in the queue; nothing to start", only)
            return []
    runnable = []
    for task in candidates:
        reason = why_not_runnable(
            task,
            statuses=statuses,
            workers=workers,
            now=now,
            max_attempts=max_attempts,
            include_draft=include_draft,
        )
        if reason is None:
            runnable.append(task)
        elif only is not None:
            logger.info("--only %s: not starting it: %s", only, reason)
    return sorted(runnable, key=lambda t: SELECTION_ORDER[t.status])
