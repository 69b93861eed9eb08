"""Marker files inside a workspace: why its CI gate failed, and why its work could not land (DESIGN §2).

Both live under `.ralph/cache/` in the workspace, which its `.git/info/exclude` keeps out of commits.
They are written atomically and read by `ralph status` and by the prompts.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from ralph.files import FileTooLarge, read_regular, write_json
from ralph.nesting import loads_json

logger = logging.getLogger(__name__)

CI_FAILURE = ".ralph/cache/ci-failure-marker"
CI_FAILURE_FALLBACK = ".ralph-ci-failure-marker"  # when .ralph/cache cannot be written (the agent broke it)
BLOCKED_PUSH = ".ralph/cache/parallel/blocked_push.json"
# Lines for a workspace's .git/info/exclude: ralph's runtime files, and aider's caches and history
# (aider writes them into the checkout it works in).
EXCLUDES = (".ralph/cache/", "/" + CI_FAILURE_FALLBACK, ".aider*")
RUNTIME_PATHS = (".ralph/cache", CI_FAILURE_FALLBACK)  # never committed from a workspace
MAX_MARKER_BYTES = 1024 * 1024  # ours hold a 16 KiB output tail at most


@dataclass(frozen=True)
class CiFailure:
    task_id: str
    command: list[str]
    exit_code: int | None
    timed_out: bool
    output_tail: str
    log_path: str
    generated_at: str


@dataclass(frozen=True)
class BlockedPush:
    task_id: str
    reason: str
    attempt: int
    max_attempts: int
    generated_at: str


def render(doc: CiFailure | BlockedPush) -> bytes:
    """A marker's bytes, as written to its file (for a checkout a job makes: ralph.job writes them)."""
    return (json.dumps(asdict(doc), indent=2) + "\n").encode()


def _write(path: Path, doc: CiFailure | BlockedPush) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, asdict(doc))


def _read(path: Path) -> dict[str, object] | None:
    """A marker's fields. The workspace is the agent's: what is at the path may be a FIFO, a link, or
    a file of any size, and none of those may hang or flood `ralph status`."""
    try:
        data = read_regular(path, limit=MAX_MARKER_BYTES)
        raw = loads_json(data) if data is not None else None
    except (FileTooLarge, ValueError) as e:
        logger.warning("%s: unreadable marker (%s); ignoring it", path, e)
        return None
    return raw if isinstance(raw, dict) else None


def write_ci_failure(workspace: Path, marker: CiFailure) -> Path:
    primary = workspace / CI_FAILURE
    try:
        _write(primary, marker)
        return primary
    except OSError as e:
        fallback = workspace / CI_FAILURE_FALLBACK
        logger.warning(
            "%s: cannot write the CI marker (%s); writing %s instead", primary, e.strerror, fallback
        )
        _write(fallback, marker)
        return fallback


def read_ci_failure(workspace: Path) -> CiFailure | None:
    for path in (workspace / CI_FAILURE, workspace / CI_FAILURE_FALLBACK):
        raw = _read(path)
        if raw is not None:
            with contextlib.suppress(TypeError):
                return CiFailure(**raw)  # type: ignore[arg-type]
    return None


def clear_ci_failure(workspace: Path) -> None:
    for path in (workspace / CI_FAILURE, workspace / CI_FAILURE_FALLBACK):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def write_blocked_push(workspace: Path, marker: BlockedPush) -> Path:
    path = workspace / BLOCKED_PUSH
    _write(path, marker)
    return path


def read_blocked_push(workspace: Path) -> BlockedPush | None:
    raw = _read(workspace / BLOCKED_PUSH)
    if raw is None:
        return None
    try:
        return BlockedPush(**raw)  # type: ignore[arg-type]
    except TypeError:
        return None


def clear_blocked_push(workspace: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (workspace / BLOCKED_PUSH).unlink()
