"""`events.jsonl`: an append-only line per lifecycle transition, for people and tools to follow."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ralph import job as jobs
from ralph.clock import format_z
from ralph.paths import Paths
from ralph.runners import child_env

logger = logging.getLogger(__name__)


def append_event(path: Path, *, at: datetime, task_id: str, event: str, **fields: object) -> None:
    line = json.dumps({"at": format_z(at), "task_id": task_id, "event": event, **fields}, ensure_ascii=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write on an O_APPEND descriptor: lines from concurrent writers never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Notice:
    """One hooks.on_event run, decided at a transition and started once the state is saved."""

    event: str  # landed, failed, blocked_push, rewound, starved
    task_id: str
    workspace: str
    sha: str
    reason: str


# How long a hook that outlived its timeout gets between SIGTERM and SIGKILL.
HOOK_GRACE_S = 5.0


def start_event_hook(
    argv: list[str],
    notice: Notice,
    *,
    paths: Paths,
    base_branch: str,
    timeout_s: float,
    now: datetime,
    n: int,
) -> None:
    """Start hooks.on_event as a detached job: nobody waits for it (a tick stays short, whatever the
    hook does), and its timeout stops its whole process group. Its output and exit status are in the
    task's run directory: hooks.log and hook-*.result.json. A hook that cannot start is logged."""
    env = child_env(task_id=notice.task_id, workspace=notice.workspace, base_branch=base_branch)
    env.update(RALPH_EVENT=notice.event, RALPH_SHA=notice.sha, RALPH_REASON=notice.reason)
    run_dir = paths.run_dir(notice.task_id)
    stem = f"hook-{notice.event}-{now:%Y%m%dT%H%M%S%fZ}-{n}"
    spec = jobs.JobSpec(
        task_id=notice.task_id,
        kind="hook",
        argv=argv,
        cwd=str(paths.root),
        env=env,
        log_path=str(run_dir / "hooks.log"),
        result_path=str(run_dir / f"{stem}.result.json"),
        timeout_s=timeout_s,
        grace_s=HOOK_GRACE_S,
        created_at=format_z(now),
    )
    try:
        jobs.start(spec, run_dir / f"{stem}.spec.json").confirm()
    except OSError as e:
        logger.warning("%s: hooks.on_event (%s) could not start: %s", notice.task_id, notice.event, e)
