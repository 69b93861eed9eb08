"""`state.json`: this host's ledger of work in flight (DESIGN §4), versioned, strict, written atomically."""

from __future__ import annotations

import contextlib
import filecmp
import glob
import json
import logging
import os
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticSerializationError

from ralph import jsonc, proc
from ralph.clock import UtcDatetime, format_z
from ralph.errors import StateError, TaskIdError
from ralph.files import FileTooLarge, copy_aside, read_bounded, sweep_temp_files, write_atomic
from ralph.models import FileModel, Namer, Text, describe_validation_error, item_namer
from ralph.nesting import TooDeep, parsed_within
from ralph.paths import check_task_id

logger = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 5
MAX_STATE_BYTES = 64 * 1024 * 1024


class Lifecycle(StrEnum):
    RUNNING = "running"  # the agent job works on the task
    CHECKING = "checking"  # the CI gate job runs on the task's position in the merge train
    REMEDIATING = "remediating"  # an agent job fixes a CI failure or a merge conflict
    INTEGRATING = "integrating"  # committed work in the merge train (or about to join it), not gated now
    COMPLETED = "completed"  # landed: landed_sha is on origin/<base>
    FAILED = "failed"  # gave up; last_error says why
    BLOCKED_PUSH = "blocked_push"  # work that may not or could not land; workspace kept

    @staticmethod
    def active() -> frozenset[Lifecycle]:
        """Lifecycles with a live job; they count toward --workers."""
        return _ACTIVE

    @staticmethod
    def terminal() -> frozenset[Lifecycle]:
        return _TERMINAL

    @staticmethod
    def agents() -> frozenset[Lifecycle]:
        """Lifecycles with a live agent job; they count toward --workers."""
        return _AGENTS

    @staticmethod
    def in_train() -> frozenset[Lifecycle]:
        return _IN_TRAIN


_ACTIVE = frozenset({Lifecycle.RUNNING, Lifecycle.CHECKING, Lifecycle.REMEDIATING})
_AGENTS = frozenset({Lifecycle.RUNNING, Lifecycle.REMEDIATING})
# Where a worker may go from where it is: the lifecycle's every transition, in one place (the
# Ledger refuses any other). None is a record that does not exist yet.
TRANSITIONS: Final[dict[Lifecycle | None, frozenset[Lifecycle]]] = {
    # started (its job recorded), or it could not start
    None: frozenset({Lifecycle.RUNNING, Lifecycle.FAILED}),
    # committed and joined the train; failed (or over its budget, or at a usage limit); a change that
    # may not land
    Lifecycle.RUNNING: frozenset({Lifecycle.INTEGRATING, Lifecycle.FAILED, Lifecycle.BLOCKED_PUSH}),
    Lifecycle.REMEDIATING: frozenset({Lifecycle.INTEGRATING, Lifecycle.FAILED, Lifecycle.BLOCKED_PUSH}),
    # its position's gate starts; a conflict or its blamed gate failure goes to a remediation agent;
    # landed; stopped (closed elsewhere, a failure it cannot recover from); blocked (follow-ups, push)
    Lifecycle.INTEGRATING: frozenset(
        {
            Lifecycle.INTEGRATING,
            Lifecycle.CHECKING,
            Lifecycle.REMEDIATING,
            Lifecycle.COMPLETED,
            Lifecycle.FAILED,
            Lifecycle.BLOCKED_PUSH,
        }
    ),
    # the gate ended (a verdict, or the train moved under it and it was stopped); blamed; gave up
    Lifecycle.CHECKING: frozenset(
        {Lifecycle.INTEGRATING, Lifecycle.REMEDIATING, Lifecycle.FAILED, Lifecycle.BLOCKED_PUSH}
    ),
    # a rewind removed its landing and put it back in the queue: it is worked again from scratch
    Lifecycle.COMPLETED: frozenset({Lifecycle.RUNNING, Lifecycle.FAILED}),
    # retried (a new attempt, `ralph retry`), stopped for good (`ralph cancel`)
    Lifecycle.FAILED: frozenset({Lifecycle.RUNNING, Lifecycle.FAILED}),
    # `ralph retry`: work that passed its checks goes back to the train, anything else starts over
    Lifecycle.BLOCKED_PUSH: frozenset({Lifecycle.INTEGRATING, Lifecycle.RUNNING, Lifecycle.FAILED}),
}
# The lifecycles in which a worker may hold a position in the train.
_IN_TRAIN = frozenset({Lifecycle.INTEGRATING, Lifecycle.CHECKING})
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
    boot_id: Annotated[Text, Field(min_length=1)]
    started_at: UtcDatetime
    deadline: UtcDatetime
    log_path: Text
    result_path: Text
    commit: Text | None = None  # a gate job: the commit it judges

    @property
    def identity(self) -> proc.Identity:
        return proc.Identity(self.pid, self.pid_start_ticks, self.boot_id)


class Usage(FileModel):
    """What one agent run said it spent (README: "Tokens and cost")."""

    attempt: Annotated[int, Field(ge=0)]
    remediation: Annotated[int, Field(ge=0)] = 0  # 0: the task's own run
    input_tokens: Annotated[int, Field(ge=0)] = 0
    cached_input_tokens: Annotated[int, Field(ge=0)] = 0
    output_tokens: Annotated[int, Field(ge=0)] = 0
    # As the CLI reported it, or from tokens and agent.price_per_mtok; None: unknown.
    cost_usd: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None


class Position(FileModel):
    """A task's place in the merge train: its change stacked on the position ahead of it (or on the
    train's base), and what the CI gate said of it."""

    task_id: str
    commit: Text  # the task's change on top of every position ahead: what the gate judges
    onto: Text  # the commit it is stacked on: the position ahead's, or the train's base
    passed: Text | None = None  # a commit of this position that passed the gate (same code as `commit`)
    failed: Text | None = None  # a commit of this position that failed the gate
    failed_exit: int | None = None  # how the gate ended then: its exit code, or None (a signal, a timeout)
    failed_timed_out: bool = False


class Train(FileModel):
    """The merge train: verified work stacked in the order it became ready, landed as the longest
    prefix whose every position passed the gate, in one push (README "The merge train")."""

    base_sha: Text  # the remote base the first position is stacked on
    positions: list[Position] = []
    rebuilds: Annotated[int, Field(ge=0)] = 0  # outside pushes that forced gates again, since a landing
    starved_at: UtcDatetime | None = None  # when rebuilds reached landing.max_rebuilds
    push_attempts: Annotated[int, Field(ge=0)] = 0  # pushes of the prefix that did not land
    next_attempt_at: UtcDatetime | None = None  # backoff after a lost race
    last_error: Text | None = None
    # A push under way: each task it lands and its commit in the pushed chain (the last is the tip),
    # saved before the push, so a tick killed after it knows on its next fetch that these landed.
    pushing: dict[str, Text] = {}

    def position(self, task_id: str) -> Position | None:
        return next((p for p in self.positions if p.task_id == task_id), None)

    def index(self, task_id: str) -> int | None:
        return next((n for n, p in enumerate(self.positions) if p.task_id == task_id), None)


class BaseWatch(FileModel):
    """Whether the base's tip passes the gate (README "Watching main"): ralph's own landings did; a tip
    someone else pushed is gated by ralph (ci.watch_base) or asked of the team's CI
    (ci.base_status_command)."""

    sha: Text | None = None  # the tip judged (or being judged)
    verdict: Literal["green", "red", "unknown"] = "unknown"
    red_since: UtcDatetime | None = None  # when the base was first seen red, while it is
    red_sha: Text | None = None  # the first red tip
    reason: Text | None = None  # what failed, as the gate or the status command said it
    fix_task: Text | None = None  # the task ralph added to fix the base, once per red spell
    job: Job | None = None  # the gate on a new tip, while it runs

    def describe(self, base: str) -> str | None:
        """`main is red since 2026-12-04T21:00:00Z at 1a2b3c4d5e: <why>; fix task RQ-0042`, while it is."""
        if self.verdict != "red" or self.red_since is None:
            return None
        why = " ".join((self.reason or "the gate failed").split())[:120]
        fix = f"; fix task {self.fix_task}" if self.fix_task else ""
        red_since = self.red_since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{base} is red since {red_since} at {(self.red_sha or '')[:10]}: {why}{fix}"


class RunnerPause(FileModel):
    """No new agent of `runner` starts before `until`: it reported a usage or rate limit."""

    runner: Text
    since: UtcDatetime
    until: UtcDatetime
    reason: Text
    strikes: Annotated[int, Field(ge=1)] = 1  # limits in a row without a reset time: the pause doubles

    def active(self, now: datetime) -> bool:
        return now < self.until

    def describe(self, now: datetime) -> str:
        """`claude paused until 23:41Z: usage limit (5-hour), reset stated by the CLI`."""
        return f"{self.runner} paused until {short_time(self.until, now)}: {self.reason}"


# Without a reset time from the CLI, a runner's pause doubles with every limit in a row, within these.
FIRST_RUNNER_PAUSE = timedelta(minutes=5)
LONGEST_RUNNER_PAUSE = timedelta(hours=6)
# A stated reset already past (a clock skew, a slow tick) still pauses this long: the limit was real.
SHORTEST_RUNNER_PAUSE = timedelta(minutes=1)


def short_time(when: datetime, now: datetime) -> str:
    """`23:41Z` when it falls on the day of `now` (UTC), else `2026-12-07 23:41Z`."""
    when = when.astimezone(UTC)
    return when.strftime("%H:%MZ" if when.date() == now.astimezone(UTC).date() else "%Y-%m-%d %H:%MZ")


class Worker(FileModel):
    task_id: str
    lifecycle: Lifecycle
    # Attempts started in the current round: `ralph retry` sets it to 0, so the next start is 1 again.
    attempt: Annotated[int, Field(ge=0)] = 1
    workspace_path: Text
    started_at: UtcDatetime
    updated_at: UtcDatetime
    completed_at: UtcDatetime | None = None
    base_sha: Text | None = None
    head_sha: Text | None = None
    verified_sha: Text | None = None
    landed_sha: Text | None = None
    remediations: Annotated[int, Field(ge=0)] = 0
    push_attempts: Annotated[int, Field(ge=0)] = 0
    next_attempt_at: UtcDatetime | None = None
    job: Job | None = None
    last_error: Text | None = None
    usage: list[Usage] = []  # one entry per agent run that reported any
    # While a remediation agent resolves a merge conflict: the files that held markers in head_sha.
    conflicts: list[Text] = []

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
    schema_version: Literal[5]
    target_branch: Text
    remote: Text
    started_at: UtcDatetime
    updated_at: UtcDatetime
    workers: list[Worker] = []
    runner_pauses: list[RunnerPause] = []
    train: Train | None = None
    watch: BaseWatch = Field(default_factory=BaseWatch)

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

    def runner_pause(self, runner: str, now: datetime) -> RunnerPause | None:
        """The pause that holds `runner`'s new agents back now, if any."""
        return next((p for p in self.runner_pauses if p.runner == runner and p.active(now)), None)

    def pause_runner(
        self, runner: str, *, now: datetime, reason: str, reset_at: datetime | None
    ) -> RunnerPause:
        """Pause `runner` until the reset its CLI stated; without one for 5 minutes, doubling with every
        limit in a row (capped at 6 hours). Runs that hit the same limit while it holds add no strike."""
        earlier = next((p for p in self.runner_pauses if p.runner == runner), None)
        held = earlier is not None and earlier.active(now)
        if reset_at is not None:
            until = max(reset_at, now + SHORTEST_RUNNER_PAUSE)
            if earlier is not None and held and earlier.until > until:
                return earlier
            pause = RunnerPause(
                runner=runner, since=now, until=until, reason=f"{reason}, reset stated by the CLI", strikes=1
            )
        else:
            if earlier is not None and held:
                return earlier
            strikes = earlier.strikes + 1 if earlier is not None else 1
            wait = min(FIRST_RUNNER_PAUSE * 2 ** min(strikes - 1, 16), LONGEST_RUNNER_PAUSE)
            minutes = int(wait.total_seconds() // 60)
            pause = RunnerPause(
                runner=runner,
                since=now,
                until=now + wait,
                reason=f"{reason}, no reset stated: {minutes} min (limit {strikes} in a row)",
                strikes=strikes,
            )
        self.runner_pauses = [p for p in self.runner_pauses if p.runner != runner] + [pause]
        return pause

    def forget_runner_pause(self, runner: str, now: datetime) -> bool:
        """A run of `runner` ended without a limit: a pause that is over is forgotten, and with it its
        strikes (one still holding stays: that run started before the limit)."""
        kept = [p for p in self.runner_pauses if p.runner != runner or p.active(now)]
        changed = len(kept) != len(self.runner_pauses)
        self.runner_pauses = kept
        return changed

    def leave_train(self, task_id: str) -> None:
        """Drop the task's position: the positions behind it are stacked again by the next tick."""
        if self.train is not None and self.train.position(task_id) is not None:
            self.train.positions = [p for p in self.train.positions if p.task_id != task_id]

    def lifecycle_counts(self) -> dict[str, int]:
        """How many workers are in each lifecycle, every lifecycle named (0 included)."""
        counts = Counter(str(w.lifecycle) for w in self.workers)
        return {str(lc): counts[str(lc)] for lc in Lifecycle}


def new_state(*, target_branch: str, remote: str, now: datetime) -> State:
    return State(
        schema_version=SCHEMA_VERSION,
        target_branch=target_branch,
        remote=remote,
        started_at=now,
        updated_at=now,
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
    """Rust ralph v3 -> v4, read as the Rust ralph reads it, and with nothing it left behind lost.

    Its records may lack `lifecycle` (then `running`), `push_attempts` and `completed_at`, and carry
    times with any offset, or none it could parse; unknown keys are ignored. v3 kept no process
    identity, so a `running` record can only be a lost job. A record whose workspace is still on disk
    (the Rust ralph's workspaces live outside ralph's workspace root, where no tick deletes anything)
    may hold unlanded commits: it becomes `blocked_push`, kept for a person, and `ralph retry` or
    `ralph discard` saves those commits to the attic before letting go of it.
    """
    stamp = format_z(now)
    workers = []
    for old in raw.get("workers") or []:
        if not isinstance(old, dict):
            workers.append(old)  # let validation name the problem
            continue
        lifecycle = old.get("lifecycle") or "running"  # the Rust ralph's default
        started = _rust_time(old.get("started_at")) or stamp
        completed = _rust_time(old.get("completed_at"))
        workspace = old.get("workspace_path") or ""
        record: dict[str, Any] = {
            "task_id": old.get("task_id"),
            "lifecycle": lifecycle,
            "attempt": 1,
            "workspace_path": workspace,
            "started_at": started,
            "updated_at": completed or started,
            "completed_at": completed,
            "push_attempts": old.get("push_attempts") or 0,
            "last_error": old.get("last_error"),
        }
        kept = bool(workspace) and lifecycle != "completed" and Path(workspace).is_dir()
        if kept:
            what = record["last_error"] or f"{lifecycle} when the Rust ralph stopped"
            record.update(
                lifecycle="blocked_push",
                completed_at=completed or stamp,
                updated_at=completed or stamp,
                last_error=(
                    f"migrated from the Rust ralph ({what}); its workspace may hold unlanded work: "
                    f"`ralph retry {old.get('task_id')}` starts over, `ralph discard` lets it go "
                    "(either saves its commits to refs/ralph/attic/ first)"
                ),
            )
        elif lifecycle in ("running", "integrating"):
            record.update(
                lifecycle="failed",
                completed_at=stamp,
                updated_at=stamp,
                last_error="job lost: recorded by a ralph that kept no process identity (state v3)",
            )
        elif lifecycle in ("completed", "failed", "blocked_push") and not record["completed_at"]:
            record["completed_at"] = started
            record["updated_at"] = started
        if record["lifecycle"] == "failed":
            # The Rust ralph retries a failed task on its next run; so do we (None means "only on request").
            record["next_attempt_at"] = stamp
        workers.append(record)
    return {
        "schema_version": 4,
        "target_branch": raw.get("target_branch") or "",
        "remote": "origin",
        "started_at": _rust_time(raw.get("started_at")) or stamp,
        "updated_at": stamp,
        "workers": workers,
    }


def _rust_time(value: Any) -> str | None:
    """A time of a Rust ralph state file, as RFC 3339 UTC; None when absent or unreadable (the Rust ralph
    stores them as plain strings and only prunes a record whose time it cannot parse)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().upper())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _migrate_v4(raw: dict[str, Any], now: datetime) -> dict[str, Any]:
    """v4 -> v5: usage per worker and runner pauses, both empty to begin with."""
    return {**raw, "schema_version": 5}


MIGRATIONS: dict[int, Callable[[dict[str, Any], datetime], dict[str, Any]]] = {
    1: _migrate_v1_v2,
    2: _migrate_v1_v2,
    3: _migrate_v3,
    4: _migrate_v4,
}


def migrate(raw: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Bring a parsed state document up to SCHEMA_VERSION; refuse one from the future."""
    version = raw.get("schema_version", 1)  # the Rust ralph treats a missing version as 1
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _Corrupt(f"schema_version must be a whole number, got {version!r}")
    if version > SCHEMA_VERSION:
        raise _TooNew(
            f"written by a newer ralph (schema_version {version}; this ralph reads up to {SCHEMA_VERSION}); "
            "upgrade ralph"
        )
    first = version
    while version < SCHEMA_VERSION:
        raw = MIGRATIONS[version](raw, now)
        version = raw["schema_version"]
    if version != first:
        logger.info("state.json: migrated schema_version %s to %s", first, version)
    return raw


class _Corrupt(Exception):
    pass


# Keys the Rust ralph's files never had: a file with them and no version is one of ours.
_OUR_KEYS = frozenset({"remote", "updated_at"})


class _TooNew(StateError):
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
        state = parse_state(data, now)
    except _Corrupt as e:
        return _refuse(path, str(e), now, under_lock)
    except _TooNew as e:
        # Not damage: the file is fine for the ralph that wrote it, so there is nothing to quarantine.
        raise StateError(f"{path}: {e}") from None
    if not state.target_branch:
        # The Rust ralph leaves it empty until its first run; so does a migration of its v1/v2 files.
        state.target_branch = target_branch
    return state


def parse_state(data: bytes, now: datetime) -> State:
    try:
        # json.loads reads the bytes, as it always did here; the text only names a line too deep.
        raw = parsed_within(data.decode(), lambda: json.loads(data))
    except TooDeep as e:
        raise _Corrupt(str(e)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raw = _rust_jsonc(data)  # the Rust ralph reads its state file as JSONC
        if raw is None:
            raise _Corrupt(f"not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise _Corrupt("not a JSON object")
    if "schema_version" not in raw and _OUR_KEYS & raw.keys():
        # A missing version means a v1 file to the Rust ralph, whose migration drops every worker; our
        # file that lost the key in a hand edit must not silently forget its live jobs.
        raise _Corrupt(
            "schema_version is missing; this is a ralph state file, so put back "
            f'"schema_version": {SCHEMA_VERSION}'
        )
    version = raw.get("schema_version", 1)
    try:
        if version == SCHEMA_VERSION:
            return State.model_validate_json(data)
        # Validate through JSON so strict mode reads enums and timestamps the same way as from disk.
        return State.model_validate_json(json.dumps(migrate(raw, now)))
    except ValidationError as e:
        raise _Corrupt(describe_validation_error(e, _worker_namer(raw))) from None


def _rust_jsonc(data: bytes) -> Any:
    """A Rust ralph state file (version 3 or older) with comments or trailing commas, parsed as it
    parses it; None for anything else (ralph's own files are plain JSON)."""
    try:
        raw = jsonc.loads(data.decode())
    except (jsonc.JsoncError, UnicodeDecodeError):
        return None
    version = raw.get("schema_version", 1) if isinstance(raw, dict) else None
    return raw if isinstance(version, int) and not isinstance(version, bool) and version <= 3 else None


def _worker_namer(raw: dict[str, Any]) -> Namer:
    return item_namer(
        raw, "workers", "task_id", lambda i, task: f"workers[{i}]" + (f" ({task})" if task else "")
    )


def _refuse(path: Path, problem: str, now: datetime, under_lock: bool) -> State:
    if not under_lock:
        raise StateError(f"{path}: {problem}; `ralph doctor` explains how to repair it")
    try:
        # One copy of each damaged version: a tick a minute would otherwise make 1,440 copies a day.
        copy = _copy_of(path) or copy_aside(
            path, f".corrupt-{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}"
        )
    except OSError as e:
        raise StateError(
            f"{path}: {problem}; nothing was started. The file is left as it was, but a copy could not be "
            f"saved ({e.strerror or e}): copy it somewhere safe before repairing it; `ralph doctor` explains"
        ) from None
    raise StateError(
        f"{path}: {problem}; nothing was started. "
        f"The file is left as it was and a copy saved as {copy.name}: "
        "fix the file by hand (README: 'state.json' shows every key), or move it aside to start afresh, "
        "which forgets the jobs it records; `ralph doctor` explains"
    )


def _copy_of(path: Path) -> Path | None:
    """An earlier `.corrupt-*` copy with exactly these bytes, if there is one."""
    size = path.stat().st_size
    for candidate in sorted(path.parent.glob(glob.escape(path.name) + ".corrupt-*")):
        with contextlib.suppress(OSError):
            if candidate.stat().st_size == size and filecmp.cmp(candidate, path, shallow=False):
                return candidate
    return None


def render_state(state: State) -> bytes:
    return (state.model_dump_json(indent=2) + "\n").encode()


Fingerprint = tuple[int, int, int] | None  # (inode, mtime_ns, size); None: there was no file


def fingerprint(path: Path) -> Fingerprint:
    """What the file on disk is now, to notice a hand edit between a load and a save."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def save_state(path: Path, state: State, *, now: datetime, expect: Fingerprint | bool = False) -> Fingerprint:
    """Write atomically; the caller holds the tick lock. Returns the new file's fingerprint.

    Code that assigns fields skips validation, so the rendered bytes are parsed back first: a file the
    next tick would quarantine must not replace the last good one. With `expect` (the fingerprint
    taken before loading) a file someone changed meanwhile is not overwritten: their edit wins.
    """
    if expect is not False and fingerprint(path) != expect:
        raise StateError(
            f"{path} changed on disk while ralph was running (a hand edit?); not overwriting it. "
            "Nothing was lost: the edit is kept, and the next run starts from it"
        )
    state.updated_at = now
    try:
        data = render_state(state)
        parse_state(data, now)
    except (PydanticSerializationError, _Corrupt) as e:
        raise StateError(f"{path}: not saved, the state is invalid (a bug in ralph): {e}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    return fingerprint(path)


def prune_terminal(state: State, *, now: datetime, ttl_hours: float) -> list[Worker]:
    """Drop completed and failed records whose completed_at is older than the TTL; return them."""
    cutoff = now - timedelta(hours=ttl_hours)
    pruned = [
        w for w in state.workers if w.lifecycle in _PRUNABLE and w.completed_at and w.completed_at < cutoff
    ]
    if pruned:
        gone = {w.task_id for w in pruned}
        state.workers = [w for w in state.workers if w.task_id not in gone]
    return pruned
