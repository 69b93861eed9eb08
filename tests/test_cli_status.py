"""`ralph status`: the table and the documented --json document, read from state.json without the lock."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import git
from helpers import ralph

from ralph.markers import CiFailure, write_ci_failure
from ralph.state import Job, JobKind, Lifecycle, Worker, new_state, save_state

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
def checkout(checkout: Path) -> Path:
    """conftest's checkout (after `ralph init`) with three tasks."""
    for title in ("Add a --dry-run flag", "Document --dry-run", "Fix the flaky login test"):
        assert ralph(checkout, "task", "add", title).exit_code == 0
    return checkout


def state_path(checkout: Path) -> Path:
    return checkout / ".ralph" / "cache" / "parallel" / "state.json"


def status_json(checkout: Path) -> dict[str, Any]:
    result = ralph(checkout, "status", "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


@pytest.fixture
def now() -> datetime:
    """The clock at the start of the test; status reads the real clock, so ages are checked in a range."""
    return datetime.now(UTC).replace(microsecond=0)


def job(checkout: Path, kind: JobKind, task_id: str, started: datetime, pid: int) -> Job:
    run_dir = checkout / ".ralph" / "cache" / "parallel" / "runs" / task_id
    return Job(
        kind=kind,
        pid=pid,
        pid_start_ticks=12345,
        boot_id="3f0c2d4e-7a1b-4c5d-9e8f-0a1b2c3d4e5f",
        started_at=started,
        deadline=started + timedelta(minutes=30),
        log_path=str(run_dir / f"{kind}.log"),
        result_path=str(run_dir / f"{kind}.result.json"),
    )


@pytest.fixture
def workers(checkout: Path, now: datetime) -> Path:
    """A state file with workers in four lifecycles, one of them for a task no longer in the queue."""
    ws = checkout / ".ralph" / "workspaces"
    state = new_state(target_branch="main", remote="origin", now=now - timedelta(hours=2))
    state.workers = [
        Worker(
            task_id="RQ-0001",
            lifecycle=Lifecycle.RUNNING,
            workspace_path=str(ws / "RQ-0001"),
            started_at=now - timedelta(seconds=300),
            updated_at=now - timedelta(seconds=300),
            job=job(checkout, JobKind.AGENT, "RQ-0001", now - timedelta(seconds=300), 4242),
        ),
        Worker(
            task_id="RQ-0002",
            lifecycle=Lifecycle.CHECKING,
            attempt=2,
            workspace_path=str(ws / "RQ-0002"),
            started_at=now - timedelta(hours=1),
            updated_at=now - timedelta(seconds=60),
            head_sha="9f1c2ab47e3d5b6c8a0f2e4d6c8b0a2f4e6d8c0b",
            job=job(checkout, JobKind.CI, "RQ-0002", now - timedelta(seconds=60), 4343),
        ),
        Worker(
            task_id="RQ-0003",
            lifecycle=Lifecycle.FAILED,
            attempt=3,
            workspace_path=str(ws / "RQ-0003"),
            started_at=now - timedelta(hours=1),
            updated_at=now - timedelta(minutes=10),
            completed_at=now - timedelta(minutes=10),
            last_error="CI failed 3 times:\n  make ci exited 2",
        ),
        Worker(
            task_id="RQ-0009",
            lifecycle=Lifecycle.BLOCKED_PUSH,
            workspace_path=str(ws / "RQ-0009"),
            started_at=now - timedelta(days=2),
            updated_at=now - timedelta(days=1),
            completed_at=now - timedelta(days=1),
            push_attempts=50,
            last_error="push rejected 50 times",
        ),
    ]
    save_state(state_path(checkout), state, now=now - timedelta(seconds=5))
    return checkout


def test_no_state_yet(checkout: Path) -> None:
    top = Path(git(checkout, "rev-parse", "--show-toplevel"))
    result = ralph(checkout, "status")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (
        f"base: origin/main    repository: {top}\n"
        "queue: 3 todo    done archive: 0 done, 0 rejected\n"
        "workers: none (no tick has run yet)\n"
    )
    assert not state_path(checkout).exists()  # reading created nothing


def test_no_state_yet_json(checkout: Path) -> None:
    doc = status_json(checkout)
    assert doc["schema"] == 1
    assert doc["state_exists"] is False
    assert doc["state_updated_at"] is None
    assert doc["workers"] == []
    assert (doc["target_branch"], doc["remote"]) == ("main", "origin")
    assert doc["state_file"] == str(state_path(Path(doc["repository"])))
    assert doc["queue"] == {"draft": 0, "todo": 3, "doing": 0, "done": 0, "rejected": 0}
    assert doc["archive"] == {"draft": 0, "todo": 0, "doing": 0, "done": 0, "rejected": 0}
    assert doc["queue_error"] is None
    assert set(doc["lifecycle_counts"].values()) == {0}
    assert doc["generated_at"].endswith("Z")


def test_workers_table(workers: Path) -> None:
    result = ralph(workers, "status")
    assert (result.exit_code, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[1] == "queue: 3 todo    done archive: 0 done, 0 rejected"
    assert re.split(r"\s{2,}", lines[2]) == ["TASK", "LIFECYCLE", "ATTEMPT", "AGE", "JOB", "LAST ERROR"]
    details = {n: line.strip() for n, line in enumerate(lines[3:]) if line.startswith("    ")}
    rows = [re.split(r"\s{2,}", line) for line in lines[3:] if not line.startswith("    ")]
    assert [row[:3] for row in rows] == [
        ["RQ-0001", "running", "1/3"],
        ["RQ-0002", "checking", "2/3"],
        ["RQ-0003", "failed", "3/3"],
        ["RQ-0009", "blocked_push", "1/3"],
    ]
    assert rows[0][3] in ("5m00s", "5m01s", "5m02s")
    assert rows[0][4] in ("agent pid 4242, 5m00s", "agent pid 4242, 5m01s", "agent pid 4242, 5m02s")
    assert rows[0][5] == "-"
    assert rows[1][4] in ("ci pid 4343, 1m00s", "ci pid 4343, 1m01s", "ci pid 4343, 1m02s")
    # Under each row with a job: where its log is.
    runs = workers / ".ralph" / "cache" / "parallel" / "runs"
    assert list(details.values()) == [
        f"log: {runs / 'RQ-0001' / 'agent.log'}",
        f"log: {runs / 'RQ-0002' / 'ci.log'}",
    ]
    # A multi-line error is one row.
    assert rows[2][4:] == ["-", "CI failed 3 times: make ci exited 2"]
    assert rows[3][3:] == ["2d00h", "-", "push rejected 50 times"]


WORKER_KEYS = {
    "task_id",
    "title",
    "lifecycle",
    "attempt",
    "max_attempts",
    "age_seconds",
    "started_at",
    "updated_at",
    "completed_at",
    "workspace_path",
    "base_sha",
    "head_sha",
    "verified_sha",
    "landed_sha",
    "remediations",
    "push_attempts",
    "next_attempt_at",
    "last_error",
    "log_path",
    "ci_failure",
    "blocked_push",
    "job",
}
JOB_KEYS = {"kind", "pid", "started_at", "elapsed_seconds", "deadline", "log_path"}


def test_workers_json(workers: Path, now: datetime) -> None:
    doc = status_json(workers)
    assert doc["state_exists"] is True
    assert doc["state_updated_at"] == (now - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert doc["lifecycle_counts"] == {
        "running": 1,
        "checking": 1,
        "remediating": 0,
        "integrating": 0,
        "completed": 0,
        "failed": 1,
        "blocked_push": 1,
    }
    by_id = {w["task_id"]: w for w in doc["workers"]}
    assert list(by_id) == ["RQ-0001", "RQ-0002", "RQ-0003", "RQ-0009"]
    for worker in doc["workers"]:
        assert set(worker) == WORKER_KEYS
        assert worker["max_attempts"] == 3

    running = by_id["RQ-0001"]
    assert running["title"] == "Add a --dry-run flag"
    assert (running["lifecycle"], running["attempt"]) == ("running", 1)
    assert 300 <= running["age_seconds"] <= 360
    assert set(running["job"]) == JOB_KEYS
    assert running["job"]["kind"] == "agent"
    assert running["job"]["pid"] == 4242
    assert 300 <= running["job"]["elapsed_seconds"] <= 360
    assert running["job"]["log_path"] == str(workers / ".ralph/cache/parallel/runs/RQ-0001/agent.log")
    assert running["last_error"] is None

    checking = by_id["RQ-0002"]
    assert (checking["lifecycle"], checking["attempt"], checking["job"]["kind"]) == ("checking", 2, "ci")
    assert checking["head_sha"] == "9f1c2ab47e3d5b6c8a0f2e4d6c8b0a2f4e6d8c0b"
    assert 60 <= checking["job"]["elapsed_seconds"] <= 120

    failed = by_id["RQ-0003"]
    assert (failed["lifecycle"], failed["job"]) == ("failed", None)
    assert failed["last_error"] == "CI failed 3 times:\n  make ci exited 2"
    assert failed["completed_at"] == (now - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")

    # A worker whose task is in neither file has no title, and is still listed.
    orphan = by_id["RQ-0009"]
    assert (orphan["title"], orphan["lifecycle"], orphan["push_attempts"]) == (None, "blocked_push", 50)


def test_a_corrupt_queue_still_shows_the_workers(workers: Path) -> None:
    queue = workers / ".ralph" / "queue.json"
    queue.write_text("{ not json")
    doc = status_json(workers)
    assert doc["queue"] is None and doc["archive"] is None
    assert doc["queue_error"].startswith(f"{queue}: not valid JSON: line 1 column 7")
    assert [w["task_id"] for w in doc["workers"]] == ["RQ-0001", "RQ-0002", "RQ-0003", "RQ-0009"]
    assert all(w["title"] is None for w in doc["workers"])

    text = ralph(workers, "status")
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    assert lines[1].startswith(f"queue: unreadable: {queue}: not valid JSON: line 1 column 7")
    assert lines[3].startswith("RQ-0001  running")


def test_a_corrupt_state_is_exit_1_one_line_and_no_quarantine_copy(checkout: Path) -> None:
    path = state_path(checkout)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"schema_version": 5, "workers": [')
    before = sorted(p.name for p in path.parent.iterdir())
    result = ralph(checkout, "status")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"ralph: error: {path}: not valid JSON")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    # status reads without the lock, so it must not write: the quarantine copy is the tick's job.
    assert sorted(p.name for p in path.parent.iterdir()) == before
    assert path.read_text() == '{"schema_version": 5, "workers": ['
    assert ralph(checkout, "status", "--json").stdout == ""


def test_a_state_from_a_newer_ralph_is_refused(checkout: Path) -> None:
    path = state_path(checkout)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"schema_version": 99}')
    result = ralph(checkout, "status")
    assert result.exit_code == 1
    assert "written by a newer ralph" in result.stderr
    assert result.stderr.count("\n") == 1


def readme_status_example() -> dict[str, Any]:
    """The JSON example under the README heading "ralph status --json"."""
    text = README.read_text()
    section = text[text.index("### `ralph status --json`") :]
    block = section[section.index("```json\n") + len("```json\n") :]
    doc: dict[str, Any] = json.loads(block[: block.index("```")])
    return doc


def test_the_readme_example_has_exactly_the_real_documents_keys(workers: Path) -> None:
    example = readme_status_example()
    real = status_json(workers)
    assert set(example) == set(real)
    assert set(example["lifecycle_counts"]) == set(real["lifecycle_counts"])
    assert set(example["queue"]) == set(real["queue"])
    assert set(example["archive"]) == set(real["archive"])
    example_worker = example["workers"][0]
    assert set(example_worker) == set(real["workers"][0]) == WORKER_KEYS
    assert set(example_worker["job"]) == set(real["workers"][0]["job"]) == JOB_KEYS


def test_a_ci_failure_marker_in_a_workspace_is_reported(workers: Path) -> None:
    workspace = workers / ".ralph" / "workspaces" / "RQ-0003"  # the failed worker's, as recorded
    ci_log = workers / ".ralph" / "cache" / "parallel" / "runs" / "RQ-0003" / "ci.log"
    marker = CiFailure(
        task_id="RQ-0003",
        command=["make", "ci"],
        exit_code=2,
        timed_out=False,
        output_tail="FAILED tests/test_login.py::test_login",
        log_path=str(ci_log),
        generated_at="2026-11-21T10:04:00Z",
    )
    written = write_ci_failure(workspace, marker)
    assert written == workspace / ".ralph" / "cache" / "ci-failure-marker"

    by_id = {w["task_id"]: w for w in status_json(workers)["workers"]}
    assert by_id["RQ-0003"]["ci_failure"] == {
        "exit_code": 2,
        "timed_out": False,
        "generated_at": "2026-11-21T10:04:00Z",
        "log_path": str(ci_log),
    }
    # Workers without a marker (or without a workspace on disk) report none.
    assert [w["ci_failure"] for t, w in by_id.items() if t != "RQ-0003"] == [None, None, None]

    text = ralph(workers, "status")
    assert text.exit_code == 0
    assert f"    CI failed (exit 2) at 2026-11-21T10:04:00Z; remediations 0; log: {ci_log}" in (
        text.stdout.splitlines()
    )
