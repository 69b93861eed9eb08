"""state.json: round trip, migration from the Rust ralph, quarantine of damaged files, atomic save, prune."""

from __future__ import annotations

import copy
import errno
import json
import os
import re
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import Crash, raising, temp_files

from ralph.errors import StateError
from ralph.state import (
    MAX_STATE_BYTES,
    SCHEMA_VERSION,
    Job,
    JobKind,
    Lifecycle,
    State,
    Worker,
    fingerprint,
    load_state,
    new_state,
    parse_state,
    prune_terminal,
    render_state,
    save_state,
)

README = Path(__file__).resolve().parent.parent / "README.md"
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 21, 10, 5, tzinfo=UTC)
STAMP = "20261121T100500Z"  # NOW as it appears in a quarantine copy's name


def ts(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def job(kind: JobKind, pid: int) -> Job:
    return Job(
        kind=kind,
        pid=pid,
        pid_start_ticks=183722 + pid,
        boot_id="3f1c0a9e-5b7d-4e2a-9c11-0d2e8f6a7b90",
        started_at=ts(1),
        deadline=ts(61),
        log_path=f"/srv/app/.ralph/cache/parallel/runs/RQ-{pid}/agent.log",
        result_path=f"/srv/app/.ralph/cache/parallel/runs/RQ-{pid}/agent.result.json",
    )


def worker(task_id: str, lifecycle: Lifecycle, **fields: Any) -> Worker:
    base: dict[str, Any] = {
        "task_id": task_id,
        "lifecycle": lifecycle,
        "workspace_path": f"/srv/app/.ralph/workspaces/{task_id}",
        "started_at": ts(0),
        "updated_at": ts(2),
    }
    if lifecycle in Lifecycle.active():
        base["job"] = job(
            JobKind.CI if lifecycle is Lifecycle.CHECKING else JobKind.AGENT, 4000 + len(task_id)
        )
    if lifecycle in Lifecycle.terminal():
        base["completed_at"] = ts(3)
    base.update(fields)
    return Worker(**base)


def full_state() -> State:
    """One worker in every lifecycle, every optional field used somewhere."""
    state = new_state(target_branch="main", remote="origin", now=T0)
    state.workers = [
        worker("RQ-0001", Lifecycle.RUNNING, base_sha="a" * 40),
        worker(
            "RQ-0002",
            Lifecycle.CHECKING,
            attempt=2,
            base_sha="a" * 40,
            head_sha="b" * 40,
            job=job(JobKind.CI, 4242),
        ),
        worker("RQ-0003", Lifecycle.REMEDIATING, remediations=2, base_sha="a" * 40, head_sha="c" * 40),
        worker(
            "RQ-0004",
            Lifecycle.INTEGRATING,
            base_sha="a" * 40,
            head_sha="d" * 40,
            verified_sha="d" * 40,
            push_attempts=3,
            next_attempt_at=ts(4.5),
            last_error="push raced: fetch first",
        ),
        worker("RQ-0005", Lifecycle.COMPLETED, verified_sha="e" * 40, landed_sha="f" * 40),
        worker("RQ-0006", Lifecycle.FAILED, attempt=3, last_error="job lost"),
        worker("RQ-0007", Lifecycle.BLOCKED_PUSH, push_attempts=50, last_error="pre-receive hook declined"),
    ]
    return state


def keys_in_order(data: bytes) -> list[list[str]]:
    """Every object's keys in file order, depth first."""
    found: list[list[str]] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found.append([k for k, _ in pairs])
        return dict(pairs)

    json.loads(data, object_pairs_hook=hook)
    return found


# --- round trip -----------------------------------------------------------------------------------


def test_every_lifecycle_round_trips() -> None:
    state = full_state()
    assert {w.lifecycle for w in state.workers} == set(Lifecycle)
    data = render_state(state)
    parsed = parse_state(data, NOW)
    assert parsed == state
    assert render_state(parsed) == data


def test_rendering_is_stable_pretty_json_with_z_timestamps() -> None:
    data = render_state(full_state())
    text = data.decode()
    assert text.endswith("}\n")
    assert text.startswith('{\n  "schema_version": 5,\n  "target_branch": "main",\n')
    assert '"started_at": "2026-11-21T10:00:00Z"' in text
    assert '"next_attempt_at": "2026-11-21T10:04:30Z"' in text
    assert '"deadline": "2026-11-21T11:01:00Z"' in text
    assert "+00:00" not in text
    doc = json.loads(data)
    stamps = [doc["started_at"], doc["updated_at"]]
    for w in doc["workers"]:
        stamps += [w[k] for k in ("started_at", "updated_at", "completed_at", "next_attempt_at") if w[k]]
        if w["job"]:
            stamps += [w["job"]["started_at"], w["job"]["deadline"]]
    assert len(stamps) == 2 + 7 * 2 + 3 + 1 + 3 * 2
    assert all(s.endswith("Z") and len(s) == 20 for s in stamps), stamps


def test_keys_are_in_the_documented_order() -> None:
    orders = keys_in_order(render_state(full_state()))
    top = [
        "schema_version",
        "target_branch",
        "remote",
        "started_at",
        "updated_at",
        "workers",
        "runner_pauses",
        "train",
        "watch",
    ]
    worker_keys = [
        "task_id",
        "lifecycle",
        "attempt",
        "workspace_path",
        "started_at",
        "updated_at",
        "completed_at",
        "base_sha",
        "head_sha",
        "verified_sha",
        "landed_sha",
        "remediations",
        "push_attempts",
        "next_attempt_at",
        "job",
        "last_error",
        "usage",
        "conflicts",
    ]
    job_keys = [
        "kind",
        "pid",
        "pid_start_ticks",
        "boot_id",
        "started_at",
        "deadline",
        "log_path",
        "result_path",
        "commit",
    ]
    assert orders[-1] == top
    assert [o for o in orders if o[0] == "task_id"] == [worker_keys] * 7
    assert [o for o in orders if o[0] == "kind"] == [job_keys] * 3


def test_save_then_load_is_identical(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "parallel" / "state.json"  # save creates the directory
    state = full_state()
    save_state(path, state, now=NOW)
    assert state.updated_at == NOW
    loaded = load_state(path, now=NOW + timedelta(hours=1), target_branch="other", remote="upstream")
    assert loaded == state
    assert path.read_bytes() == render_state(state)
    assert json.loads(path.read_bytes())["updated_at"] == "2026-11-21T10:05:00Z"


def test_a_missing_file_is_a_new_state_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = load_state(path, now=NOW, target_branch="trunk", remote="upstream", under_lock=True)
    assert state == State(
        schema_version=SCHEMA_VERSION,
        target_branch="trunk",
        remote="upstream",
        started_at=NOW,
        updated_at=NOW,
        workers=[],
    )
    assert list(tmp_path.iterdir()) == []


def test_save_writes_a_local_time_as_utc(tmp_path: Path) -> None:
    # Regression: an aware non-UTC `now` was written as +02:00, which the next load quarantined.
    path = tmp_path / "state.json"
    paris = datetime(2026, 11, 21, 12, 5, tzinfo=timezone(timedelta(hours=2)))
    save_state(path, full_state(), now=paris)
    assert json.loads(path.read_bytes())["updated_at"] == "2026-11-21T10:05:00Z"
    assert load_state(path, now=NOW, target_branch="main", remote="origin").updated_at == NOW


def test_save_refuses_a_naive_time_and_keeps_the_last_good_file(tmp_path: Path) -> None:
    # Regression: a naive `now` was written without a zone, and every later tick refused the file.
    path = tmp_path / "state.json"
    save_state(path, full_state(), now=NOW)
    before = path.read_bytes()
    with pytest.raises(StateError) as info:
        save_state(path, full_state(), now=datetime(2026, 11, 21, 10, 6))  # noqa: DTZ001
    assert str(info.value).startswith(f"{path}: not saved, the state is invalid (a bug in ralph): ")
    assert "naive datetime" in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda s: setattr(s.workers[0], "job", None), "workers[0] (RQ-0001): lifecycle running needs a job"),
        (
            lambda s: setattr(s.workers[1], "attempt", -1),
            "workers[1] (RQ-0002).attempt: Input should be greater",
        ),
        (lambda s: s.workers.append(s.workers[0].model_copy()), "two worker records for RQ-0001; keep one"),
        (lambda s: setattr(s.workers[2], "task_id", "../etc"), "task id '../etc' is not allowed"),
    ],
    ids=["active-without-job", "attempt-negative", "duplicate", "unsafe-id"],
)
def test_save_refuses_a_state_that_load_would_refuse(tmp_path: Path, damage: Any, problem: str) -> None:
    # Assignments skip validation; writing such a state would replace the last good file with one
    # the next tick quarantines.
    path = tmp_path / "state.json"
    save_state(path, full_state(), now=NOW)
    before = path.read_bytes()
    state = full_state()
    damage(state)
    with pytest.raises(StateError) as info:
        save_state(path, state, now=NOW)
    assert problem in str(info.value)
    assert path.read_bytes() == before
    assert temp_files(tmp_path) == []


# --- migration ------------------------------------------------------------------------------------

RUST_V3 = b"""{
  "schema_version": 3,
  "started_at": "2026-02-20T00:00:00Z",
  "target_branch": "main",
  "pending_merges": [],
  "workers": [
    {
      "task_id": "RQ-0001",
      "workspace_path": "/home/ann/.workspaces/app/parallel/RQ-0001",
      "lifecycle": "running",
      "started_at": "2026-02-20T00:00:00Z",
      "push_attempts": 0
    },
    {
      "task_id": "RQ-0002",
      "workspace_path": "/home/ann/.workspaces/app/parallel/RQ-0002",
      "lifecycle": "integrating",
      "started_at": "2026-02-20T00:01:00Z",
      "push_attempts": 2,
      "last_error": "push rejected: fetch first",
      "branch": "ralph/RQ-0002"
    },
    {
      "task_id": "RQ-0003",
      "workspace_path": "/home/ann/.workspaces/app/parallel/RQ-0003",
      "lifecycle": "completed",
      "started_at": "2026-02-20T00:02:00Z",
      "completed_at": "2026-02-20T00:30:00.123456789Z",
      "push_attempts": 1
    },
    {
      "task_id": "RQ-0004",
      "workspace_path": "/home/ann/.workspaces/app/parallel/RQ-0004",
      "lifecycle": "failed",
      "started_at": "2026-02-20T00:03:00Z",
      "completed_at": "2026-02-20T00:40:00Z",
      "push_attempts": 0,
      "last_error": "Worker exited with status: Some(1)"
    },
    {
      "task_id": "RQ-0005",
      "workspace_path": "/home/ann/.workspaces/app/parallel/RQ-0005",
      "lifecycle": "blocked_push",
      "started_at": "2026-02-20T00:04:00Z",
      "completed_at": "2026-02-20T01:00:00Z",
      "push_attempts": 50,
      "last_error": "push attempts exhausted (50/50)",
      "pid": 4242
    },
    {
      "task_id": "RQ-0006",
      "workspace_path": "/home/ann/.workspaces/app/parallel/RQ-0006",
      "lifecycle": "failed",
      "started_at": "2026-02-20T00:05:00Z",
      "push_attempts": 0
    }
  ]
}
"""


def rust_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_rust_v3_file_migrates(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(RUST_V3)
    state = load_state(path, now=NOW, target_branch="ignored", remote="ignored", under_lock=True)
    assert path.read_bytes() == RUST_V3  # loading never writes; the tick's next save makes it v4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]

    assert (state.schema_version, state.target_branch, state.remote) == (5, "main", "origin")
    assert state.started_at == rust_time("2026-02-20T00:00:00Z")
    assert state.updated_at == NOW
    ws = "/home/ann/.workspaces/app/parallel/"
    lost = "job lost: recorded by a ralph that kept no process identity (state v3)"
    assert state.workers == [
        Worker(
            task_id="RQ-0001",
            lifecycle=Lifecycle.FAILED,
            workspace_path=ws + "RQ-0001",
            started_at=rust_time("2026-02-20T00:00:00Z"),
            updated_at=NOW,
            completed_at=NOW,
            last_error=lost,
            next_attempt_at=NOW,
        ),
        Worker(
            task_id="RQ-0002",
            lifecycle=Lifecycle.FAILED,
            workspace_path=ws + "RQ-0002",
            started_at=rust_time("2026-02-20T00:01:00Z"),
            updated_at=NOW,
            completed_at=NOW,
            push_attempts=2,
            last_error=lost,
            next_attempt_at=NOW,
        ),
        Worker(
            task_id="RQ-0003",
            lifecycle=Lifecycle.COMPLETED,
            workspace_path=ws + "RQ-0003",
            started_at=rust_time("2026-02-20T00:02:00Z"),
            updated_at=rust_time("2026-02-20T00:30:00.123456Z"),
            completed_at=rust_time("2026-02-20T00:30:00.123456Z"),
            push_attempts=1,
        ),
        Worker(
            task_id="RQ-0004",
            lifecycle=Lifecycle.FAILED,
            workspace_path=ws + "RQ-0004",
            started_at=rust_time("2026-02-20T00:03:00Z"),
            updated_at=rust_time("2026-02-20T00:40:00Z"),
            completed_at=rust_time("2026-02-20T00:40:00Z"),
            last_error="Worker exited with status: Some(1)",
            next_attempt_at=NOW,  # the Rust ralph retries failed tasks on its next run; so do we
        ),
        Worker(
            task_id="RQ-0005",
            lifecycle=Lifecycle.BLOCKED_PUSH,
            workspace_path=ws + "RQ-0005",
            started_at=rust_time("2026-02-20T00:04:00Z"),
            updated_at=rust_time("2026-02-20T01:00:00Z"),
            completed_at=rust_time("2026-02-20T01:00:00Z"),
            push_attempts=50,
            last_error="push attempts exhausted (50/50)",
        ),
        Worker(
            # completed_at omitted by the Rust ralph: the record still ages out, from its start
            task_id="RQ-0006",
            lifecycle=Lifecycle.FAILED,
            workspace_path=ws + "RQ-0006",
            started_at=rust_time("2026-02-20T00:05:00Z"),
            updated_at=rust_time("2026-02-20T00:05:00Z"),
            completed_at=rust_time("2026-02-20T00:05:00Z"),
            next_attempt_at=NOW,
        ),
    ]
    assert all(w.attempt == 1 and w.job is None for w in state.workers)

    save_state(path, state, now=NOW)
    assert json.loads(path.read_bytes())["schema_version"] == 5
    assert load_state(path, now=NOW, target_branch="main", remote="origin") == state


@pytest.mark.parametrize("version", [1, 2, None])
def test_v1_and_v2_records_are_dropped(tmp_path: Path, version: int | None) -> None:
    doc: dict[str, Any] = {
        "started_at": "2025-12-01T08:00:00Z",
        "target_branch": "develop",
        "workers": [{"task_id": "RQ-0001", "pid": 77, "branch": "ralph/RQ-0001", "pr_number": 12}],
        "pending_merges": [{"task_id": "RQ-0001", "pr_number": 12}],
    }
    if version is not None:  # a missing version is the Rust ralph's v1
        doc["schema_version"] = version
    path = tmp_path / "state.json"
    path.write_text(json.dumps(doc))
    state = load_state(path, now=NOW, target_branch="main", remote="origin", under_lock=True)
    assert state == State(
        schema_version=5,
        target_branch="develop",
        remote="origin",
        started_at=datetime(2025, 12, 1, 8, 0, tzinfo=UTC),
        updated_at=NOW,
        workers=[],
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_deeply_nested_file_is_quarantined_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    data = b'{"schema_version": 5, "workers": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path.write_bytes(data)
    with pytest.raises(StateError, match="nested more than 64 levels deep"):
        load_state(path, now=NOW, target_branch="main", remote="origin", under_lock=True)
    assert path.read_bytes() == data
    assert len(list(tmp_path.glob("state.json.corrupt-*"))) == 1


@pytest.mark.parametrize("under_lock", [True, False])
def test_a_newer_schema_is_refused_untouched_and_not_quarantined(tmp_path: Path, under_lock: bool) -> None:
    path = tmp_path / "state.json"
    doc = json.loads(render_state(full_state()))
    doc["schema_version"] = 6
    doc["shiny_new_key"] = {"anything": True}
    data = json.dumps(doc, indent=2).encode()
    path.write_bytes(data)
    with pytest.raises(StateError) as info:
        load_state(path, now=NOW, target_branch="main", remote="origin", under_lock=under_lock)
    assert str(info.value) == (
        f"{path}: written by a newer ralph (schema_version 6; this ralph reads up to 5); upgrade ralph"
    )
    assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


# --- damaged files --------------------------------------------------------------------------------


def valid_doc() -> dict[str, Any]:
    return json.loads(render_state(full_state()))


def with_doc(change: Any) -> bytes:
    doc = valid_doc()
    change(doc)
    return json.dumps(doc, indent=2).encode()


def first_worker(**fields: Any) -> Any:
    return lambda doc: doc["workers"][0].update(fields)


CORRUPT = {
    "truncated": (
        render_state(full_state())[: render_state(full_state()).index(b"RQ-0003") + 3],  # a torn write
        "not valid JSON (Unterminated string starting at: line ",
    ),
    "empty": (b"", "not valid JSON (Expecting value: line 1 column 1 (char 0))"),
    "zero-filled": (b"\x00" * 4096, "not valid JSON ("),
    "not-utf8": (b'{"schema_version": 5, "target_branch": "\xff"}', "not valid JSON ("),
    "array": (b"[1, 2, 3]\n", "not a JSON object"),
    "typo-key": (
        with_doc(first_worker(stauts="running")),
        "workers[0] (RQ-0001).stauts: unknown key (a typo?)",
    ),
    "unknown-top-key": (with_doc(lambda d: d.update(generation=3)), "generation: unknown key (a typo?)"),
    "string-attempt": (
        with_doc(first_worker(attempt="1")),
        "workers[0] (RQ-0001).attempt: Input should be a valid integer (got '1')",
    ),
    "non-utc": (
        with_doc(first_worker(started_at="2026-11-21T12:00:00+02:00")),
        "workers[0] (RQ-0001).started_at: must be UTC (RFC 3339 ending in Z), not a local offset "
        "(got '2026-11-21T12:00:00+02:00')",
    ),
    "naive": (
        with_doc(first_worker(updated_at="2026-11-21T10:00:00")),
        "workers[0] (RQ-0001).updated_at: Input should have timezone info (got '2026-11-21T10:00:00')",
    ),
    "unknown-lifecycle": (
        with_doc(first_worker(lifecycle="lost")),
        "workers[0] (RQ-0001).lifecycle: Input should be 'running', 'checking', 'remediating', "
        "'integrating', 'completed', 'failed' or 'blocked_push' (got 'lost')",
    ),
    "duplicate": (
        with_doc(lambda d: d["workers"].append(copy.deepcopy(d["workers"][4]))),
        "(top level): two worker records for RQ-0005; keep one",
    ),
    "active-without-job": (
        with_doc(lambda d: d["workers"][1].update(job=None)),
        "workers[1] (RQ-0002): lifecycle checking needs a job (which process works on it?)",
    ),
    "terminal-without-completed-at": (
        with_doc(lambda d: d["workers"][5].update(completed_at=None)),
        "workers[5] (RQ-0006): lifecycle failed needs completed_at",
    ),
    "path-like-id": (
        with_doc(first_worker(task_id="../../etc/passwd")),
        "workers[0] (../../etc/passwd).task_id: task id '../../etc/passwd' is not allowed: "
        "it contains a path separator; task ids look like RQ-0001",
    ),
    "nul-in-id": (
        with_doc(first_worker(task_id="RQ-1\x00")),
        "task id 'RQ-1\\x00' is not allowed: it contains a NUL byte",
    ),
    "nul-in-path": (
        with_doc(first_worker(workspace_path="/srv/app/ws\x00/RQ-0001")),
        "workers[0] (RQ-0001).workspace_path: contains a NUL character (\\u0000); remove it",
    ),
    "pid-zero": (
        with_doc(lambda d: d["workers"][0]["job"].update(pid=0)),
        "workers[0] (RQ-0001).job.pid: Input should be greater than 0;",
    ),
    "version-string": (
        with_doc(lambda d: d.update(schema_version="3")),
        "schema_version must be a whole number, got '3'",
    ),
    "missing-remote": (with_doc(lambda d: d.pop("remote")), "remote: Field required"),
}


def corrupt_copies(directory: Path) -> list[Path]:
    return sorted(directory.glob("state.json.corrupt-*"))


@pytest.mark.parametrize(("data", "problem"), CORRUPT.values(), ids=CORRUPT.keys())
def test_damage_is_quarantined_never_reset(tmp_path: Path, data: bytes, problem: str) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(data)
    with pytest.raises(StateError) as info:
        load_state(path, now=NOW, target_branch="main", remote="origin", under_lock=True)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert problem in message
    assert f"a copy saved as state.json.corrupt-{STAMP}:" in message
    assert "nothing was started" in message and "ralph doctor" in message
    assert "\n" not in message
    assert path.read_bytes() == data
    first = tmp_path / f"state.json.corrupt-{STAMP}"
    assert corrupt_copies(tmp_path) == [first]
    assert first.read_bytes() == data

    # Every later tick (cron: one a minute) names the same copy instead of making another: the
    # defect was ~1,440 identical copies a day.
    for _ in range(3):
        with pytest.raises(StateError) as again:
            load_state(
                path, now=NOW + timedelta(minutes=1), target_branch="main", remote="origin", under_lock=True
            )
        assert f"a copy saved as {first.name}:" in str(again.value)
    assert corrupt_copies(tmp_path) == [first]
    assert first.read_bytes() == path.read_bytes() == data
    assert temp_files(tmp_path) == []


def test_a_file_damaged_differently_gets_a_copy_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"{ broken")
    for data, minute in ((b"{ broken", 0), (b"{ broken", 1), (b"[]", 2), (b"{ broken", 3)):
        path.write_bytes(data)
        with pytest.raises(StateError):
            load_state(
                path,
                now=NOW + timedelta(minutes=minute),
                target_branch="main",
                remote="origin",
                under_lock=True,
            )
    copies = corrupt_copies(tmp_path)
    assert [c.read_bytes() for c in copies] == [b"{ broken", b"[]"]


def test_the_repair_hint_names_a_readme_section_that_exists(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"{ broken")
    with pytest.raises(StateError) as info:
        load_state(path, now=NOW, target_branch="main", remote="origin", under_lock=True)
    sections = re.findall(r"^#+ (.+)$", README.read_text(), re.M)
    named = re.search(r"README: '([^']+)'", str(info.value))
    assert named is not None and any(named.group(1) in section for section in sections), named


@pytest.mark.parametrize(("data", "problem"), CORRUPT.values(), ids=CORRUPT.keys())
def test_damage_without_the_lock_makes_no_copy(tmp_path: Path, data: bytes, problem: str) -> None:
    # `ralph status` reads without the lock; only a tick under the lock may write beside the file.
    path = tmp_path / "state.json"
    path.write_bytes(data)
    with pytest.raises(StateError) as info:
        load_state(path, now=NOW, target_branch="main", remote="origin")
    message = str(info.value)
    assert message.startswith(f"{path}: ") and problem in message
    assert message.endswith("; `ralph doctor` explains how to repair it")
    assert "copy" not in message
    assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_an_oversized_file_is_refused_before_it_is_read_and_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with open(path, "wb") as f:
        f.write(b'{"schema_version": 5, "junk": "')
        f.truncate(MAX_STATE_BYTES + 1)  # sparse: cheap to make, still over the limit
    with pytest.raises(StateError) as info:
        load_state(path, now=NOW, target_branch="main", remote="origin", under_lock=True)
    message = str(info.value)
    assert message.startswith(
        f"{path}: {MAX_STATE_BYTES + 1} bytes is over the {MAX_STATE_BYTES}-byte limit; "
    )
    assert f"a copy saved as state.json.corrupt-{STAMP}:" in message
    copy_path = tmp_path / f"state.json.corrupt-{STAMP}"
    assert copy_path.stat().st_size == MAX_STATE_BYTES + 1
    with open(copy_path, "rb") as f, open(path, "rb") as g:
        while chunk := f.read(1 << 20):
            assert chunk == g.read(1 << 20)
    assert path.stat().st_size == MAX_STATE_BYTES + 1


def test_when_the_copy_cannot_be_saved_the_message_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"[]")

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StateError) as info:
        load_state(path, now=NOW, target_branch="main", remote="origin", under_lock=True)
    monkeypatch.undo()
    message = str(info.value)
    assert message.startswith(f"{path}: not a JSON object; nothing was started. ")
    assert "a copy could not be saved (No space left on device): copy it somewhere safe" in message
    assert path.read_bytes() == b"[]"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_an_unreadable_path_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.mkdir()
    with pytest.raises(StateError) as info:
        load_state(path, now=NOW, target_branch="main", remote="origin", under_lock=True)
    assert str(info.value) == f"{path}: cannot read: Is a directory"


def test_only_a_load_under_the_lock_sweeps_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    save_state(path, full_state(), now=NOW)
    stray = tmp_path / ".state.json.k1ll3d.tmp"
    stray.write_bytes(b'{"half": ')
    # Without the lock a live writer may own the temp file; deleting it would fail its rename.
    saved = load_state(path, now=NOW, target_branch="main", remote="origin")
    assert stray.exists()
    assert load_state(path, now=NOW, target_branch="main", remote="origin", under_lock=True) == saved
    assert not stray.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


# --- saving under faults --------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["write", "fsync", "replace"])
def test_a_failed_save_keeps_the_last_good_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    # save_state writes through write_atomic, whose every failure mode test_files.py covers; here
    # only that a save dying at each step leaves the last good state loadable.
    path = tmp_path / "state.json"
    good = full_state()
    save_state(path, good, now=NOW)
    before = path.read_bytes()
    changed = full_state()
    changed.workers.pop()
    with monkeypatch.context() as m:
        m.setattr(os, call, raising(Crash()))
        with pytest.raises(Crash):
            save_state(path, changed, now=NOW + timedelta(minutes=1))
    assert path.read_bytes() == before
    assert temp_files(tmp_path) == []
    assert load_state(path, now=NOW, target_branch="main", remote="origin", under_lock=True) == good


def test_save_fsyncs_the_directory_after_the_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    save_state(path, full_state(), now=NOW)
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def spy_fsync(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            events.append("fsync dir" if st.st_ino == tmp_path.stat().st_ino else "fsync other dir")
        else:
            events.append("fsync file")
        real_fsync(fd)

    def spy_replace(src: Any, dst: Any) -> None:
        events.append(f"replace -> {Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    save_state(path, full_state(), now=NOW + timedelta(minutes=1))
    monkeypatch.undo()
    assert events == ["fsync file", "replace -> state.json", "fsync dir"]


# --- prune ----------------------------------------------------------------------------------------

TTL_HOURS = 24


def test_prune_removes_only_old_completed_and_failed_records() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    ttl = timedelta(hours=TTL_HOURS)
    ancient = now - timedelta(days=30)
    state = new_state(target_branch="main", remote="origin", now=ancient)
    state.workers = [
        worker("OLD-DONE", Lifecycle.COMPLETED, completed_at=now - ttl - timedelta(microseconds=1)),
        worker("AT-TTL", Lifecycle.COMPLETED, completed_at=now - ttl),  # not older than the TTL: kept
        worker("YOUNG-DONE", Lifecycle.COMPLETED, completed_at=now - timedelta(hours=1)),
        worker("OLD-FAILED", Lifecycle.FAILED, completed_at=ancient, started_at=ancient),
        worker("FAILED-AT-TTL", Lifecycle.FAILED, completed_at=now - ttl),
        worker("OLD-BLOCKED", Lifecycle.BLOCKED_PUSH, completed_at=ancient, started_at=ancient),
        worker("OLD-RUNNING", Lifecycle.RUNNING, started_at=ancient, updated_at=ancient),
        worker("OLD-CHECKING", Lifecycle.CHECKING, started_at=ancient, updated_at=ancient),
        worker("OLD-REMEDIATING", Lifecycle.REMEDIATING, started_at=ancient, updated_at=ancient),
        worker("OLD-INTEGRATING", Lifecycle.INTEGRATING, started_at=ancient, updated_at=ancient),
    ]
    old_done, old_failed = state.workers[0], state.workers[3]

    pruned = prune_terminal(state, now=now, ttl_hours=TTL_HOURS)

    assert [w.task_id for w in pruned] == ["OLD-DONE", "OLD-FAILED"]
    assert pruned[0] is old_done and pruned[1] is old_failed
    assert [w.task_id for w in state.workers] == [
        "AT-TTL",
        "YOUNG-DONE",
        "FAILED-AT-TTL",
        "OLD-BLOCKED",
        "OLD-RUNNING",
        "OLD-CHECKING",
        "OLD-REMEDIATING",
        "OLD-INTEGRATING",
    ]
    assert prune_terminal(state, now=now, ttl_hours=TTL_HOURS) == []

    # A microsecond later the records exactly at the TTL are older than it.
    later = prune_terminal(state, now=now + timedelta(microseconds=1), ttl_hours=TTL_HOURS)
    assert [w.task_id for w in later] == ["AT-TTL", "FAILED-AT-TTL"]


def test_prune_with_a_fractional_ttl() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    state = new_state(target_branch="main", remote="origin", now=now)
    state.workers = [
        worker("A", Lifecycle.FAILED, completed_at=now - timedelta(minutes=31)),
        worker("B", Lifecycle.FAILED, completed_at=now - timedelta(minutes=29)),
    ]
    assert [w.task_id for w in prune_terminal(state, now=now, ttl_hours=0.5)] == ["A"]
    assert [w.task_id for w in state.workers] == ["B"]


def test_a_v4_file_that_lost_its_version_is_damage_not_a_v1_file(tmp_path: Path) -> None:
    """Read as v1 it would drop every worker and forget live jobs; it is quarantined instead."""
    path = tmp_path / "state.json"
    save_state(path, full_state(), now=NOW)
    doc = json.loads(path.read_bytes())
    del doc["schema_version"]
    damaged = json.dumps(doc, indent=2).encode()
    path.write_bytes(damaged)
    with pytest.raises(StateError, match='schema_version is missing; .* put back "schema_version": 5'):
        load_state(path, now=NOW, target_branch="main", remote="origin", under_lock=True)
    assert path.read_bytes() == damaged


def test_save_refuses_to_overwrite_an_edit_made_since_the_load(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    first = save_state(path, full_state(), now=NOW)
    assert first == fingerprint(path)
    edited = path.read_bytes().replace(b'"attempt": 1', b'"attempt": 2', 1)
    path.write_bytes(edited)  # a person fixes something by hand while a tick runs
    with pytest.raises(StateError, match="changed on disk while ralph was running"):
        save_state(path, full_state(), now=NOW, expect=first)
    assert path.read_bytes() == edited
    # Saving from the file as it is now works, and reports the new file.
    assert save_state(path, full_state(), now=NOW, expect=fingerprint(path)) == fingerprint(path)


def test_save_expecting_no_file_refuses_one_created_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"{}")
    with pytest.raises(StateError, match="changed on disk"):
        save_state(path, full_state(), now=NOW, expect=None)
    assert path.read_bytes() == b"{}"
