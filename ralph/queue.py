"""The task queue and done archive: models compatible with the Rust ralph, validation, selection.

Queue order is authoritative: selection walks the file top to bottom, and priority never reorders it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationError, field_validator

from ralph.clock import UtcDatetime, format_z
from ralph.config import QueueConfig
from ralph.errors import QueueError, TaskIdError
from ralph.files import FileTooLarge, read_bounded, write_atomic
from ralph.models import FileModel, Namer, Text, describe_validation_error, item_namer, no_nul
from ralph.paths import Paths, check_task_id
from ralph.state import Lifecycle, Worker

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


class Task(FileModel):
    # List and dict defaults are factories: pydantic deep-copies a literal [] or {} default for every
    # task that omits the field, a quarter of the validation time of a 10,000-task queue.
    id: TaskRef
    status: TaskStatus = TaskStatus.TODO
    title: NonEmpty
    description: Text | None = None
    priority: Priority = Priority.MEDIUM
    tags: list[NonEmpty] = Field(default_factory=list)
    scope: list[NonEmpty] = Field(default_factory=list)
    evidence: list[NonEmpty] = Field(default_factory=list)
    plan: list[NonEmpty] = Field(default_factory=list)
    notes: list[NonEmpty] = Field(default_factory=list)
    request: Text | None = None
    agent: TaskAgent | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    completed_at: UtcDatetime | None = None
    started_at: UtcDatetime | None = None
    scheduled_start: UtcDatetime | None = None
    estimated_minutes: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    actual_minutes: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    depends_on: list[TaskRef] = Field(default_factory=list)
    blocks: list[TaskRef] = Field(default_factory=list)
    relates_to: list[TaskRef] = Field(default_factory=list)
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
            if isinstance(key, str) and (not key or any(c.isspace() for c in key)):
                raise ValueError(f"custom_fields key {key!r} must be non-empty and contain no whitespace")
            if isinstance(item, bool):
                item = "true" if item else "false"
            elif isinstance(item, int | float):
                item = str(item)
            out[key] = item
        return out


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

_JSONC_COMMENT = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.S)
_JSONC_TRAILING_COMMA = re.compile(r'"(?:\\.|[^"\\])*"|,(?=\s*[}\]])', re.S)


def _blank(match: re.Match[str]) -> str:
    text = match.group(0)
    if text.startswith('"'):
        return text
    # Keep newlines so a later error still points at the right line.
    return "".join("\n" if c == "\n" else " " for c in text)


def strip_jsonc(text: str) -> str:
    """Turn JSONC (comments, trailing commas) into JSON without moving any line or column."""
    return _JSONC_TRAILING_COMMA.sub(_blank, _JSONC_COMMENT.sub(_blank, text))


def _too_large(source: str, size: int) -> QueueError:
    # Exact bytes, not rounded megabytes: "33.6 MB is over the 34 MB limit" read as a contradiction.
    return QueueError(
        f"{source}: {size:,} bytes is over the {MAX_QUEUE_BYTES:,}-byte ({MAX_QUEUE_BYTES >> 20} MiB) limit; "
        "move finished tasks to the done archive or split the queue"
    )


def parse_queue_file(data: bytes, source: str) -> QueueFile:
    """Parse queue or done bytes from a file or a git blob; `source` names it in errors."""
    if len(data) > MAX_QUEUE_BYTES:  # a blob from origin/<base> did not pass through read_bounded
        raise _too_large(source, len(data))
    if b"\0" in data:
        raise QueueError(f"{source}: contains NUL bytes, so it is not a JSON text file; restore it from git")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise QueueError(f"{source}: not UTF-8 (byte {e.start}); save it as UTF-8 JSON") from None
    try:
        queue = QueueFile.model_validate_json(text)
    except ValidationError as e:
        if e.errors()[0]["type"] != "json_invalid":
            raise QueueError(
                f"{source}: {describe_validation_error(e, _task_namer(_parsed(text)))}"
            ) from None
        text = strip_jsonc(text)
        try:
            queue = QueueFile.model_validate_json(text)
        except ValidationError as e:
            first = e.errors(include_url=False)[0]
            if first["type"] == "json_invalid":
                where = _json_error(text, fallback=str(first["msg"]))
                raise QueueError(f"{source}: not valid JSON: {where}; fix the syntax") from None
            raise QueueError(
                f"{source}: {describe_validation_error(e, _task_namer(_parsed(text)))}"
            ) from None
    strict_problem = _strict_json_problem(text)
    if strict_problem is not None:
        raise QueueError(f"{source}: {strict_problem}")
    return queue


def _json_error(text: str, *, fallback: str) -> str:
    """Where the syntax error is; `text` has had its comments blanked, so lines and columns still match.

    pydantic's own message has no line number, so json.loads is asked again; when it disagrees (pydantic
    stops at a nesting depth json accepts) pydantic's message is used.
    """
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        return f"line {e.lineno} column {e.colno}: {e.msg}"
    except RecursionError:
        return "nested too deeply"
    return fallback


class _Duplicated(dict[str, Any]):
    """A JSON object that had a key twice; `key` is the first repeated one."""

    key: str


class _NotFinite(Exception):
    pass


def _finite(token: str) -> float:
    value = float(token)
    if value in (float("inf"), float("-inf")) or value != value:
        raise _NotFinite(token)
    return value


def _not_json_constant(token: str) -> Any:
    raise _NotFinite(token)


def _strict_json_problem(text: str) -> str | None:
    """What pydantic's parser lets through but the Rust ralph refuses, as a message; None if nothing.

    - A key twice in one object: pydantic (like json.loads) keeps the last one, so a `"status"` left
      twice by a merge would silently change what runs.
    - NaN, Infinity or a number too large for a float: accepted in free-form objects (`runner_cli`),
      and written back as `NaN`, which is not JSON at all.
    """
    found = False

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        found = True
        marked = _Duplicated(obj)
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                marked.key = key
                break
            seen.add(key)
        return marked

    try:  # pydantic parsed it already, so it is valid and shallow enough for json.loads
        raw = json.loads(
            text, object_pairs_hook=pairs_hook, parse_float=_finite, parse_constant=_not_json_constant
        )
    except _NotFinite as e:
        return f"{e.args[0]} is not a finite number; JSON (and the Rust ralph) cannot hold it"
    if not found:
        return None
    stack: list[tuple[tuple[int | str, ...], Any]] = [((), raw)]
    while stack:  # depth first, in document order
        loc, value = stack.pop()
        if isinstance(value, _Duplicated):
            where = _task_namer(raw)(loc)
            return f"{where}: key {value.key!r} appears twice (a bad merge?); keep one, only the last counts"
        children: list[tuple[int | str, Any]] = []
        if isinstance(value, dict):
            children = list(value.items())
        elif isinstance(value, list):
            children = list(enumerate(value))
        stack.extend(((*loc, k), v) for k, v in reversed(children))
    return None  # pragma: no cover (the hook saw one)


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


def load_queue_file(path: Path) -> QueueFile:
    """Read a queue or done file from disk; a missing file is an empty queue."""
    try:
        data = read_bounded(path, MAX_QUEUE_BYTES)
    except FileNotFoundError:
        return empty_queue_file()
    except FileTooLarge as e:
        raise _too_large(str(path), e.size) from None
    except OSError as e:
        raise QueueError(f"{path}: cannot read: {e.strerror}") from None
    return parse_queue_file(data, str(path))


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
    """Every semantic problem of a queue and done pair, as one line each; empty when valid."""
    problems: list[str] = []
    pattern = id_pattern(prefix, width)
    seen: dict[str, tuple[str, Task]] = {}  # the first task with each id, and the file it is in
    for name, file in ((queue_name, queue), (done_name, done)):
        # Per file, not only across both: the queue copy of an id that is also rejected in the done
        # archive must not hide the same id twice inside the archive.
        in_this_file: set[str] = set()
        for task in file.tasks:
            where = f"{name}: task {task.id}"
            if not pattern.fullmatch(task.id):
                problems.append(
                    f"{where}: id should look like {prefix}-{'0' * (width - 1)}1 ({width} digits)"
                )
            if task.id in in_this_file:
                problems.append(f"{where}: the id appears twice (in {name}); give one of them a new id")
            elif task.id in seen:
                other_name, other = seen[task.id]
                # The Rust ralph lets a rejected task's id come back in the other file.
                if TaskStatus.REJECTED not in (task.status, other.status):
                    problems.append(
                        f"{where}: the id appears twice (in {other_name} and {name}); "
                        "give one of them a new id"
                    )
            else:
                seen[task.id] = (name, task)
            in_this_file.add(task.id)
            if task.status in TERMINAL_STATUSES and task.completed_at is None:
                problems.append(f"{where}: status {task.status} needs completed_at")
            if file is done and task.status not in TERMINAL_STATUSES:
                problems.append(f"{where}: status {task.status} does not belong in the done archive")
    for name, file in ((queue_name, queue), (done_name, done)):
        for task in file.tasks:
            for field in ("depends_on", "blocks"):
                for ref in getattr(task, field):
                    if ref not in seen:
                        problems.append(
                            f"{name}: task {task.id}: {field} names {ref}, which is in neither {queue_name} "
                            f"nor {done_name}"
                        )
                    elif ref == task.id:
                        problems.append(f"{name}: task {task.id}: {field} names the task itself")
    cycle = find_cycle(t for _, t in seen.values())
    if cycle:
        holders = {seen[i][0] for i in cycle if i in seen}
        files = " and ".join(n for n in (queue_name, done_name) if n in holders) or queue_name
        problems.append(f"{files}: dependency cycle: {' -> '.join(cycle)}; remove one of these dependencies")
    return problems


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


def next_id(queue: QueueFile, done: QueueFile, *, prefix: str = "RQ", width: int = 4) -> str:
    """One past the highest number in use, counting rejected tasks too so an id is never reused."""
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+)", re.IGNORECASE)
    highest = 0
    for task in (*queue.tasks, *done.tasks):
        match = pattern.fullmatch(task.id)
        if match:
            highest = max(highest, int(match.group(1)))
    return f"{prefix}-{highest + 1:0{width}d}"


def archive(queue: QueueFile, done: QueueFile, task_id: str, now: datetime) -> tuple[QueueFile, QueueFile]:
    """The queue and done archive with `task_id` moved to done; a task already archived stays put.

    Only this task's record changes: other tasks, and their order, are left exactly as they were. The
    files given are not changed (their tasks are shared, not copied: a 10,000-task queue stays cheap).
    """
    queued = next((t for t in queue.tasks if t.id == task_id), None)
    remaining = QueueFile(version=1, tasks=[t for t in queue.tasks if t.id != task_id])
    if any(t.id == task_id for t in done.tasks):
        return remaining, done
    if queued is None:
        raise QueueError(f"{task_id} is in neither the queue nor the done archive; nothing to archive")
    finished = queued.model_copy(update={"status": TaskStatus.DONE, "completed_at": now, "updated_at": now})
    return remaining, QueueFile(version=1, tasks=[*done.tasks, finished])


def find_task(queue: QueueFile, done: QueueFile, task_id: str) -> Task | None:
    for task in (*queue.tasks, *done.tasks):
        if task.id == task_id:
            return task
    return None


# --- selection (DESIGN §4.3) ---------------------------------------------------------------------


def why_not_runnable(
    task: Task,
    *,
    statuses: Mapping[str, TaskStatus],
    workers: Mapping[str, Worker],
    now: datetime,
    max_attempts: int,
) -> str | None:
    """Why `task` cannot start now, or None when it can. Selection and `queue explain` share this."""
    if task.status != TaskStatus.TODO:
        return f"status is {task.status}"
    waiting = [d for d in task.depends_on if statuses.get(d) not in TERMINAL_STATUSES]
    if waiting:
        described = ", ".join(f"{d} ({statuses[d]})" if d in statuses else f"{d} (missing)" for d in waiting)
        return f"waits for {described}"
    if task.scheduled_start is not None and task.scheduled_start > now:
        return f"scheduled to start at {format_z(task.scheduled_start)}"
    worker = workers.get(task.id)
    if worker is None:
        return None
    # Every non-terminal lifecycle, not only those with a live job: an `integrating` worker holds
    # verified work waiting to land, and starting the task again would land it twice.
    if worker.lifecycle not in Lifecycle.terminal():
        return f"in progress ({worker.lifecycle})"
    if worker.lifecycle == Lifecycle.BLOCKED_PUSH:
        what = worker.last_error or "work could not land"
        return f"blocked: {what}; `ralph retry {task.id}` or `ralph discard {task.id}`"
    if worker.lifecycle == Lifecycle.COMPLETED:
        return "landed; waiting for the queue on the base branch to show it done"
    if worker.lifecycle == Lifecycle.FAILED:
        if worker.attempt >= max_attempts:
            return f"attempts used up ({worker.attempt}/{max_attempts}): {worker.last_error or 'failed'}"
        if worker.next_attempt_at is None:
            # A failure with no retry time is one a person ended (`ralph cancel`): only they restart it.
            what = worker.last_error or "failed"
            return f"stopped: {what}; not retried automatically, `ralph retry {task.id}` runs it again"
        if worker.next_attempt_at > now:
            when = format_z(worker.next_attempt_at)
            return f"retry after {when} (attempt {worker.attempt}/{max_attempts} failed)"
    return None


def task_statuses(queue: QueueFile, done: QueueFile) -> dict[str, TaskStatus]:
    statuses = {t.id: t.status for t in done.tasks}
    statuses.update((t.id, t.status) for t in queue.tasks)
    return statuses


def select_runnable(
    queue: QueueFile,
    done: QueueFile,
    workers: Mapping[str, Worker],
    now: datetime,
    *,
    max_attempts: int,
) -> list[Task]:
    """The tasks that may start now, in queue order."""
    statuses = task_statuses(queue, done)
    return [
        t
        for t in queue.tasks
        if why_not_runnable(t, statuses=statuses, workers=workers, now=now, max_attempts=max_attempts) is None
    ]


# --- the pair ------------------------------------------------------------------------------------


@dataclass
class Queues:
    """A queue file and its done archive, read together because neither is valid alone."""

    queue: QueueFile
    done: QueueFile
    queue_name: str = "queue.json"
    done_name: str = "done.json"

    def problems(self, config: QueueConfig) -> list[str]:
        return find_problems(
            self.queue,
            self.done,
            prefix=config.id_prefix,
            width=config.id_width,
            queue_name=self.queue_name,
            done_name=self.done_name,
        )

    def validate(self, config: QueueConfig) -> None:
        problems = self.problems(config)
        if problems:
            more = (
                f" (and {len(problems) - 1} more; `ralph queue validate` lists them)"
                if len(problems) > 1
                else ""
            )
            raise QueueError(problems[0] + more)

    def find(self, task_id: str) -> Task | None:
        return find_task(self.queue, self.done, task_id)

    def statuses(self) -> dict[str, TaskStatus]:
        return task_statuses(self.queue, self.done)


def load_local_queues(paths: Paths) -> Queues:
    """Read queue and done from the working tree, without semantic validation."""
    queue_path, done_path = paths.queue_file(), paths.done_file()
    return Queues(
        queue=load_queue_file(queue_path),
        done=load_queue_file(done_path),
        queue_name=paths.relative(queue_path),
        done_name=paths.relative(done_path),
    )
