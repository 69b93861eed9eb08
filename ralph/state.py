"""`state.json`: this host's ledger of work in flight (DESIGN §4), versioned, strict, written atomically."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ralph.clock import UtcDatetime, format_z
from ralph.errors import StateError, TaskIdError
from ralph.files import FileTooLarge, copy_aside, read_bounded, sweep_temp_files, write_atomic
from ralph.models import FileModel, describe_validation_error
from ralph.paths import check_task_id

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 4
MAX_STATE_BYTES = 64 * 1024 * 1024


class Lifecycle(StrEnum):
    RUNNING = "running"  # the agent job works on the task
    CHECKING = "checking"  # the CI gate job runs on head_sha
    REMEDIATING = "remediating"  # an agent job fixes a CI failure or a rebase conflict
    INTEGRATING = "integrating"  # verified work waits to be rebased and pushed
    COMPLETED = "completed"  # landed: landed_sha is on origin/<base>
    FAILED = "failed"  # gave up; last_error says why
    BLOCKED_PUSH = "blocked_push"  # verified work that could not land; workspace kept

    @staticmethod
    def active() -> frozenset[Lifecycle]:
        """Lifecycles with a live job; they count toward --workers."""
        return _ACTIVE

    @staticmethod
    def terminal() -> frozenset[Lifecycle]:
        return _TERMINAL


_ACTIVE = frozenset({Lifecycle.RUNNING, Lifecycle.CHECKING, Lifecycle.REMEDIATING})
_TERMINAL = frozenset({Lifecycle.COMPLETED, Lifecycle.FAILED, Lifecycle.BLOCKED_PUSH})
# Pruned by TTL. blocked_push is kept: it holds verified work that only `retry` or `discard` may let go.
_PRUNABLE = frozenset({Lifecycle.COMPLETED, Lifecycle.FAILED})


class JobKind(StrEnum):
    AGENT = "agent"
    CI = "ci"


class Job(FileModel):
    """A detached job; alive only while (boot_id, pid, pid_start_ticks) all still match (DESIGN §4.2)."""

    kind: JobKind
    pid: Annotated[int, Field(gt=0)]
    pid_start_ticks: Annotated[int, Field(ge=0)]
    boot_id: Annotated[str, Field(min_length=1)]
    started_at: UtcDatetime
    deadline: UtcDatetime
    log_path: str
    result_path: str


class Worker(FileModel):
    task_id: str
    lifecycle: Lifecycle
    attempt: Annotated[int, Field(ge=1)] = 1
    workspace_path: str
    started_at: UtcDatetime
    updated_at: UtcDatetime
    completed_at: UtcDatetime | None = None
    base_sha: str | None = None
    head_sha: str | None = None
    verified_sha: str | None = None
    landed_sha: str | None = None
    remediations: Annotated[int, Field(ge=0)] = 0
    push_attempts: Annotated[int, Field(ge=0)] = 0
    next_attempt_at: UtcDatetime | None = None
    job: Job | None = None
    last_error: str | None = None

    @field_validator("task_id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        try:
            return check_task_id(value)
        except TaskIdError as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _consistent(self) -> Worker:
        if self.lifecycle in _ACTIVE and self.job is None:
            raise ValueError(f"lifecycle {self.lifecycle} needs a job (which process works on it?)")
        if self.lifecycle in _TERMINAL and self.completed_at is None:
            raise ValueError(f"lifecycle {self.lifecycle} needs completed_at")
        return self


class State(FileModel):
    schema_version: Literal[4]
    target_branch: str
    remote: str
    started_at: UtcDatetime
    updated_at: UtcDatetime
    workers: list[Worker] = []

    @model_validator(mode="after")
    def _one_record_per_task(self) -> State:
        seen: set[str] = set()
        for worker in self.workers:
            if worker.task_id in seen:
                raise ValueError(f"two worker records for {worker.task_id}; keep one")
            seen.add(worker.task_id)
        return self

    def worker(self, task_id: str) -> Worker | None:
        return next((w for w in self.workers if w.task_id == task_id), None)

    def by_task(self) -> dict[str, Worker]:
        return {w.task_id: w for w in self.workers}


def new_state(*, target_branch: str, remote: str, now: datetime) -> State:
    return State(
        schema_version=SCHEMA_VERSION, target_branch=target_branch, remote=remote, started_at=now, updated_at=now
    )


# --- migrations: pure dict -> dict, run before validation ----------------------------------------


def _migrate_v1_v2(raw: dict[str, Any], now: datetime) -> dict[str, Any]:
    # The Rust ralph's PR-era records (v1, v2) describe branches and PRs we never create; it drops them too.
    return {
        "schema_version": 3,
        "started_at": raw.get("started_at") or format_z(now),
        "target_branch": raw.get("target_branch") or "",
        "workers": [],
    }


def _migrate_v3(raw: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Rust ralph v3 -> v4. v3 kept no process identity, so a `running` record can only be a lost job."""
    stamp = format_z(now)
    workers = []
    for old in raw.get("workers") or []:
        if not isinstance(old, dict):
            workers.append(old)  # let validation name the problem
            continue
        lifecycle = old.get("lifecycle")
        started = old.get("started_at") or stamp
        record: dict[str, Any] = {
            "task_id": old.get("task_id"),
            "lifecycle": lifecycle,
            "attempt": 1,
            "workspace_path": old.get("workspace_path") or "",
            "started_at": started,
            "updated_at": old.get("completed_at") or started,
            "completed_at": old.get("completed_at"),
            "push_attempts": old.get("push_attempts") or 0,
            "last_error": old.get("last_error"),
        }
        if lifecycle in ("running", "integrating"):
            record.update(
                lifecycle="failed",
                completed_at=stamp,
                updated_at=stamp,
                last_error="job lost: recorded by a ralph that kept no process identity (state v3)",
            )
        elif lifecycle in ("completed", "failed", "blocked_push") and not record["completed_at"]:
            record["completed_at"] = started
        workers.append(record)
    return {
        "schema_version": 4,
        "target_branch": raw.get("target_branch") or "",
        "remote": "origin",
        "started_at": raw.get("started_at") or stamp,
        "updated_at": stamp,
        "workers": workers,
    }


MIGRATIONS: dict[int, Callable[[dict[str, Any], datetime], dict[str, Any]]] = {
    1: _migrate_v1_v2,
    2: _migrate_v1_v2,
    3: _migrate_v3,
}


def migrate(raw: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Bring a parsed state document up to SCHEMA_VERSION; refuse one from the future."""
    version = raw.get("schema_version", 1)  # the Rust ralph treats a missing version as 1
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _Corrupt(f"schema_version must be a whole number, got {version!r}")
    if version > SCHEMA_VERSION:
        raise StateError(
            f"written by a newer ralph (schema_version {version}; this ralph reads up to {SCHEMA_VERSION}); "
            "upgrade ralph"
        )
    while version < SCHEMA_VERSION:
        raw = MIGRATIONS[version](raw, now)
        logger.info("state.json: migrated schema_version %s to %s", version, raw["schema_version"])
        version = raw["schema_version"]
    return raw


class _Corrupt(Exception):
    pass


# --- load and save -------------------------------------------------------------------------------


def load_state(
    path: Path, *, now: datetime, target_branch: str, remote: str, under_lock: bool = False
) -> State:
    """Read the state file; a missing one is a fresh state.

    Under the tick lock, stray temp files of killed writers are swept, and a damaged file gets a
    byte-for-byte copy beside it before the tick refuses to run. The original is never overwritten:
    forgetting a live job would start a duplicate agent.
    """
    if under_lock:
        for stray in sweep_temp_files(path):
            logger.debug("removed a temp file a killed writer left: %s", stray)
    try:
        data = read_bounded(path, MAX_STATE_BYTES)
    except FileNotFoundError:
        return new_state(target_branch=target_branch, remote=remote, now=now)
    except FileTooLarge as e:
        return _refuse(path, f"{e.size} bytes is over the {MAX_STATE_BYTES}-byte limit", now, under_lock)
    except OSError as e:
        raise StateError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return parse_state(data, now)
    except _Corrupt as e:
        return _refuse(path, str(e), now, under_lock)


def parse_state(data: bytes, now: datetime) -> State:
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _Corrupt(f"not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise _Corrupt("not a JSON object")
    version = raw.get("schema_version", 1)
    try:
        if version == SCHEMA_VERSION:
            return State.model_validate_json(data)
        # Validate through JSON so strict mode reads enums and timestamps the same way as from disk.
        return State.model_validate_json(json.dumps(migrate(raw, now)))
    except ValidationError as e:
        raise _Corrupt(describe_validation_error(e, _worker_namer(raw))) from None


def _worker_namer(raw: dict[str, Any]) -> Callable[[tuple[int | str, ...]], str]:
    workers = raw.get("workers")

    def name(loc: tuple[int | str, ...]) -> str:
        if len(loc) >= 2 and loc[0] == "workers" and isinstance(loc[1], int):
            index = loc[1]
            task_id = None
            if isinstance(workers, list) and index < len(workers) and isinstance(workers[index], dict):
                task_id = workers[index].get("task_id")
            label = f"workers[{index}]" + (f" ({task_id})" if isinstance(task_id, str) else "")
            rest = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[2:])
            return label + rest
        return ".".join(str(p) for p in loc) or "(top level)"

    return name


def _refuse(path: Path, problem: str, now: datetime, under_lock: bool) -> State:
    if not under_lock:
        raise StateError(f"{path}: {problem}; `ralph doctor` explains how to repair it")
    copy = copy_aside(path, f".corrupt-{now.strftime('%Y%m%dT%H%M%SZ')}")
    raise StateError(
        f"{path}: {problem}; nothing was started. The file is left as it was and a copy saved as {copy.name}: "
        "fix the file by hand (README: 'State file'), or move it aside to start afresh, which forgets "
        "the jobs it records; `ralph doctor` explains"
    )


def render_state(state: State) -> bytes:
    return (state.model_dump_json(indent=2) + "\n").encode()


def save_state(path: Path, state: State, *, now: datetime) -> None:
    """Write atomically; the caller holds the tick lock."""
    state.updated_at = now
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, render_state(state))


def prune_terminal(state: State, *, now: datetime, ttl_hours: float) -> list[Worker]:
    """Drop completed and failed records whose completed_at is older than the TTL; return them."""
    cutoff = now - timedelta(hours=ttl_hours)
    pruned = [w for w in state.workers if w.lifecycle in _PRUNABLE and w.completed_at and w.completed_at <= cutoff]
    if pruned:
        gone = {w.task_id for w in pruned}
        state.workers = [w for w in state.workers if w.task_id not in gone]
    return pruned
