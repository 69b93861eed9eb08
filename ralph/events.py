"""`events.jsonl`: an append-only line per lifecycle transition, for people and tools to follow."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ralph.clock import format_z
from ralph.runners import child_env

if TYPE_CHECKING:
    from ralph.config import HooksConfig
    from ralph.state import Worker

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


def run_event_hook(hooks: HooksConfig, *, worker: Worker, event: str, reason: str) -> None:
    """Run hooks.on_event with RALPH_EVENT, RALPH_TASK_ID, RALPH_SHA, RALPH_REASON; a failure is logged."""
    env = child_env(task_id=worker.task_id, workspace=worker.workspace_path, base_branch="")
    env.update(
        RALPH_EVENT=event,
        RALPH_SHA=worker.landed_sha or worker.verified_sha or worker.head_sha or "",
        RALPH_REASON=reason,
    )
    argv = list(hooks.on_event)
    try:
        done = subprocess.run(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=hooks.timeout_seconds,
            start_new_session=True,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        logger.warning("%s: hooks.on_event (%s) did not run to the end: %s", worker.task_id, event, e)
        return
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()[-1:]
        logger.warning(
            "%s: hooks.on_event (%s) exited %d: %s",
            worker.task_id,
            event,
            done.returncode,
            tail[0] if tail else "no output",
        )
