"""The queue file and its done archive as one pair (neither is valid alone), and the index a tick
derives from a pair nobody edits (kept by ralph.queuecache): selection, queue order and statuses come
from the index, and whole tasks are parsed only when something needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from ralph.config import QueueConfig
from ralph.errors import QueueError
from ralph.paths import Paths
from ralph.queue import (
    SELECTION_ORDER,
    QueueFile,
    Task,
    TaskStatus,
    find_problems,
    find_task,
    first_of,
    load_queue_file,
    parse_rfc3339,
    select_runnable,
    task_statuses,
    why_not_now,
    why_not_ready,
)
from ralph.state import Worker


@dataclass(frozen=True)
class Ready:
    """A queued task the two files let start (its status and dependencies allow it): whether it
    starts now is for the clock, the workers and --include-draft to say."""

    position: int  # in the queue file
    id: str
    status: TaskStatus
    scheduled_start: str | None
    # The task as JSON, to build it again without parsing the whole queue; None when too many tasks
    # are ready (QueueIndex.MAX_KEPT_TASKS) for building them one by one to beat one parse of all.
    text: str | None


@dataclass(frozen=True)
class QueueIndex:
    """What a tick derives from a queue and done pair that nobody edits: the same for the same bytes,
    so it is kept by the files' blob ids (ralph.queuecache) and a tick whose queue did not change
    needs neither the parse nor the validation of thousands of tasks."""

    queue: list[tuple[str, TaskStatus]]  # every queued task's id and status, in file order
    done: list[tuple[str, TaskStatus]]
    ready: list[Ready]  # in queue order
    scheduled: list[datetime]  # every readable scheduled_start of the queue, in UTC
    valid_for: tuple[str, int]  # the (id prefix, id width) under which the pair has no problems

    # Building a task from its JSON costs about what its share of parsing the whole queue does: past
    # this many ready tasks (a backlog without dependencies), a tick that starts one parses the queue.
    MAX_KEPT_TASKS = 256

    @classmethod
    def of(cls, queue: QueueFile, done: QueueFile, *, valid_for: tuple[str, int]) -> QueueIndex:
        statuses = task_statuses(queue, done)
        ready = [
            (n, t)
            for n, t in enumerate(queue.tasks)
            if why_not_ready(t, statuses=statuses, include_draft=True) is None
        ]
        keep = len(ready) <= cls.MAX_KEPT_TASKS
        return cls(
            queue=[(t.id, t.status) for t in queue.tasks],
            done=[(t.id, t.status) for t in done.tasks],
            ready=[
                Ready(
                    n,
                    t.id,
                    t.status,
                    t.scheduled_start,
                    t.model_dump_json(exclude_unset=True) if keep else None,
                )
                for n, t in ready
            ],
            scheduled=[at for t in queue.tasks if (at := t.scheduled_at) is not None],
            valid_for=valid_for,
        )


class Queues:
    """A queue file and its done archive, read together because neither is valid alone.

    Read with an index (ralph.queuecache), the models are parsed only when something needs whole
    tasks beyond those the index keeps; selection, queue order and statuses come from the index.
    Only a pair nobody edits has one: ralph.queuedoc's edits change the models in place.
    """

    def __init__(
        self,
        queue: QueueFile | None = None,
        done: QueueFile | None = None,
        queue_name: str = "queue.json",
        done_name: str = "done.json",
        *,
        index: QueueIndex | None = None,
        parse: Callable[[], tuple[QueueFile, QueueFile]] | None = None,
    ) -> None:
        if (queue is None or done is None) and (parse is None or index is None):
            raise TypeError("Queues needs both models, or an index and the parse that gives them")
        self._queue = queue
        self._done = done
        self.queue_name = queue_name
        self.done_name = done_name
        self.index = index
        self._parse = parse
        self._built: dict[int, Task] = {}
        self._first: dict[str, TaskStatus] | None = None

    def __repr__(self) -> str:
        return f"Queues({self.queue_name!r}, {self.done_name!r}, parsed={self._queue is not None})"

    @property
    def parsed(self) -> bool:
        """Whether the models were read (an index answers most of what a tick asks without them)."""
        return self._queue is not None

    @property
    def queue(self) -> QueueFile:
        if self._queue is None:
            self._load()
        assert self._queue is not None
        return self._queue

    @property
    def done(self) -> QueueFile:
        if self._done is None:
            self._load()
        assert self._done is not None
        return self._done

    def _load(self) -> None:
        assert self._parse is not None
        self._queue, self._done = self._parse()

    def problems(self, config: QueueConfig) -> list[str]:
        if self.index is not None and self.index.valid_for == (config.id_prefix, config.id_width):
            return []
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
            raise QueueError(first_of(problems))

    def find(self, task_id: str) -> Task | None:
        return find_task(self.queue, self.done, task_id)

    def status(self, task_id: str) -> TaskStatus | None:
        """The status `find` would give the task (the queue's copy first), or None when in neither."""
        if self.index is None:
            task = self.find(task_id)
            return None if task is None else task.status
        if self._first is None:
            self._first = {}
            for pairs in (self.index.queue, self.index.done):
                for key, status in pairs:
                    self._first.setdefault(key, status)
        return self._first.get(task_id)

    def statuses(self) -> dict[str, TaskStatus]:
        if self.index is None:
            return task_statuses(self.queue, self.done)
        statuses = dict(self.index.done)
        statuses.update(self.index.queue)
        return statuses

    def positions(self) -> dict[str, int]:
        """Each queued id's place in the queue file (a repeated id: its last)."""
        pairs = self.index.queue if self.index is not None else [(t.id, t.status) for t in self.queue.tasks]
        return {task_id: n for n, (task_id, _) in enumerate(pairs)}

    def scheduled_times(self) -> list[datetime]:
        """Every readable scheduled_start in the queue, in UTC."""
        if self.index is not None:
            return list(self.index.scheduled)
        return [at for t in self.queue.tasks if (at := t.scheduled_at) is not None]

    def runnable(
        self,
        workers: Mapping[str, Worker],
        now: datetime,
        *,
        max_attempts: int,
        include_draft: bool = False,
        only: str | None = None,
    ) -> list[Task]:
        """select_runnable over this pair; with an index, only the tasks the files let start are
        looked at, and only those chosen are built."""
        if self.index is None or only is not None:  # --only logs why its task cannot start: the models
            return select_runnable(
                self.queue,
                self.done,
                workers,
                now,
                max_attempts=max_attempts,
                include_draft=include_draft,
                only=only,
            )
        chosen = [
            r
            for r in self.index.ready
            if (include_draft or r.status is not TaskStatus.DRAFT)
            and why_not_now(
                r.id,
                r.status,
                parse_rfc3339(r.scheduled_start),
                workers=workers,
                now=now,
                max_attempts=max_attempts,
            )
            is None
        ]
        return [self._build(r) for r in sorted(chosen, key=lambda r: SELECTION_ORDER[r.status])]

    def _build(self, ready: Ready) -> Task:
        if self._queue is not None or ready.text is None:
            return self.queue.tasks[ready.position]
        task = self._built.get(ready.position)
        if task is None:
            task = self._built[ready.position] = Task.model_validate_json(ready.text)
        return task


def load_local_queues(paths: Paths) -> Queues:
    """Read queue and done from the working tree, without semantic validation."""
    queue_path, done_path = paths.queue_file(), paths.done_file()
    return Queues(
        queue=load_queue_file(queue_path),
        done=load_queue_file(done_path),
        queue_name=paths.relative(queue_path),
        done_name=paths.relative(done_path),
    )
