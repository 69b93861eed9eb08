"""Follow-up tasks an agent proposes in `.ralph/cache/followups/<TASK>.json`, added to the queue in the
commit that lands its task.

The proposal is read when the agent's work is committed, from the agent's workspace — so as a file an
agent controls: a regular file under the workspace, never through a symlink (which could name
/dev/zero or a secret), never blocking on a FIFO, bounded in size and in the number of tasks — and kept
in the task's run directory (ralph's own copy) until its task lands, when its tasks get their ids.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from ralph.config import QueueConfig
from ralph.errors import QueueError, RalphError
from ralph.files import FileTooLarge, read_beneath, write_atomic
from ralph.models import FileModel, Text, describe_validation_error
from ralph.queue import Priority, Task, TaskStatus, next_id
from ralph.queues import Queues

logger = logging.getLogger(__name__)

FOLLOWUPS_DIR = ".ralph/cache/followups"
MAX_PROPOSAL_BYTES = 256 * 1024
MAX_PROPOSED_TASKS = 20
KEPT = "followups.json"  # the validated copy in the task's run directory


class FollowupError(RalphError):
    """An agent's follow-up proposal is invalid; the work does not land until it is fixed."""


class ProposedTask(FileModel):
    key: Text = Field(min_length=1)
    title: Text = Field(min_length=1)
    description: Text | None = None
    priority: Priority = Priority.MEDIUM
    tags: list[Text] = []
    scope: list[Text] = []
    evidence: list[Text] = []
    plan: list[Text] = []
    depends_on_keys: list[Text] = []
    independence_rationale: Text | None = None


class Proposal(FileModel):
    version: int = Field(ge=1, le=1)
    source_task_id: str
    tasks: list[ProposedTask]


def followups_path(path: Path, task_id: str) -> Path:
    return path / FOLLOWUPS_DIR / f"{task_id}.json"


def take_proposal(workspace: Path, task_id: str, run_dir: Path) -> int:
    """Read and check the workspace's proposal for `task_id`, keep ralph's copy in `run_dir`; the
    number of tasks proposed (0 without a proposal). FollowupError says what is wrong."""
    file = followups_path(workspace, task_id)
    where = f"follow-up proposal {file}"
    rel = f"{FOLLOWUPS_DIR}/{task_id}.json"
    kept = run_dir / KEPT
    kept.unlink(missing_ok=True)
    try:
        data = read_beneath(workspace, rel, limit=MAX_PROPOSAL_BYTES)
    except FileTooLarge as e:
        raise FollowupError(f"{where}: {e}; propose fewer, shorter tasks") from None
    if data is None:
        if os.path.lexists(file) or _has_link_on_the_way(workspace, rel):
            raise FollowupError(f"{where}: not a regular file (a symlink, a FIFO or a directory); remove it")
        return 0
    try:
        proposal = Proposal.model_validate_json(data)
    except ValidationError as e:
        raise FollowupError(f"{where}: {describe_validation_error(e)}") from None
    if len(proposal.tasks) > MAX_PROPOSED_TASKS:
        raise FollowupError(
            f"{where}: {len(proposal.tasks)} tasks proposed; at most {MAX_PROPOSED_TASKS} at once"
        )
    if proposal.source_task_id != task_id:
        raise FollowupError(f"{where}: source_task_id is {proposal.source_task_id!r}, not {task_id}")
    keys = [t.key for t in proposal.tasks]
    if len(set(keys)) != len(keys):
        raise FollowupError(f"{where}: keys must be unique")
    seen: set[str] = set()
    for proposed in proposal.tasks:
        unknown = [k for k in proposed.depends_on_keys if k not in keys]
        if unknown:
            raise FollowupError(f"{where}: task {proposed.key!r} depends on unknown keys {unknown}")
        later = [k for k in proposed.depends_on_keys if k not in seen]
        if later:
            raise FollowupError(f"{where}: task {proposed.key!r} depends on {later}, listed after it")
        seen.add(proposed.key)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(kept, proposal.model_dump_json(indent=2).encode())
    return len(proposal.tasks)


def _has_link_on_the_way(root: Path, rel: str) -> bool:
    """Whether a directory on the way to `rel` under `root` is a symlink (read_beneath stops there)."""
    here = root
    for part in rel.split("/")[:-1]:
        here = here / part
        if here.is_symlink():
            return True
        if not here.is_dir():
            return False
    return False


def proposed_tasks(run_dir: Path, queues: Queues, config: QueueConfig, now: datetime) -> list[Task]:
    """The kept proposal's tasks as queue entries, with ids following `queues` (as the landing commit
    will have them); [] without one. FollowupError when they would make the queue invalid."""
    kept = run_dir / KEPT
    try:
        proposal = Proposal.model_validate_json(kept.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValidationError) as e:
        raise FollowupError(
            f"{kept}: unreadable ({e}); `ralph retry` the task to read the proposal again"
        ) from None
    queue = queues.queue.model_copy(deep=True)
    ids: dict[str, str] = {}
    stamp = now.replace(microsecond=0)
    out: list[Task] = []
    for proposed in proposal.tasks:
        new_id = next_id(queue, queues.done, prefix=config.id_prefix, width=config.id_width)
        fields: dict[str, Any] = {
            "description": proposed.description,
            "tags": proposed.tags,
            "scope": proposed.scope,
            "evidence": proposed.evidence,
            "plan": proposed.plan,
            "depends_on": [ids[k] for k in proposed.depends_on_keys],
        }
        created = Task(
            id=new_id,
            status=TaskStatus.TODO,
            title=proposed.title,
            priority=proposed.priority,
            created_at=stamp,
            updated_at=stamp,
            **{k: v for k, v in fields.items() if v},
        )
        ids[proposed.key] = new_id
        queue.tasks.append(created)
        out.append(created)
    try:
        Queues(queue, queues.done).validate(config)
    except QueueError as e:
        raise FollowupError(f"follow-up proposal of {proposal.source_task_id}: {e}") from None
    if out:
        logger.info(
            "%s: %d follow-up task(s): %s", proposal.source_task_id, len(out), json.dumps([t.id for t in out])
        )
    return out
