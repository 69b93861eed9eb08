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
from ralph.state import Job, JobKind, Lifecycle, Usage, Worker, new_state, save_state

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
def checkout(checkout: Path) -> Path:
    """conftest's checkout (after `ralph init`) with three tasks."""
    for title in ("Add a --dry-run flag", "Document --dry-run", "Fix the flaky login test"):
        assert ralph(checkout, "task", "add", "--bottom", title).exit_code == 0
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
        "main: 0 landed in 24h, 0 in flight, 0 blocked, 0 failed · no tick recorded yet · "
        "next runnable RQ-0001 (+2 more)\n"
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
    # RQ-0001 and RQ-0002 are in flight, RQ-0003 failed; RQ-0009 is blocked and in no queue.
    assert lines[0] == (
        "main: 0 landed in 24h, 2 in flight, 1 blocked, 1 failed · no tick recorded yet · nothing runnable"
    )
    assert lines[2] == "queue: 3 todo    done archive: 0 done, 0 rejected"
    assert re.split(r"\s{2,}", lines[3]) == [
        "TASK",
        "LIFECYCLE",
        "ATTEMPT",
        "TIME",
        "JOB",
        "COST",
        "LAST ERROR",
    ]
    details = {n: line.strip() for n, line in enumerate(lines[4:]) if line.startswith("    ")}
    rows = [re.split(r"\s{2,}", line) for line in lines[4:] if not line.startswith("    ")]
    assert [row[:3] for row in rows] == [
        ["RQ-0001", "running", "1/3"],
        ["RQ-0002", "checking", "2/3"],
        ["RQ-0003", "failed", "3/3"],
        ["RQ-0009", "blocked_push", "1/3"],
    ]
    assert rows[0][3] in ("5m00s", "5m01s", "5m02s")
    assert rows[0][4] in ("agent pid 4242, 5m00s", "agent pid 4242, 5m01s", "agent pid 4242, 5m02s")
    assert rows[0][5:] == ["—", "-"]
    assert rows[1][4] in ("ci pid 4343, 1m00s", "ci pid 4343, 1m01s", "ci pid 4343, 1m02s")
    # Under each row with a job: where its log is.
    runs = workers / ".ralph" / "cache" / "parallel" / "runs"
    assert list(details.values()) == [
        f"log: {runs / 'RQ-0001' / 'agent.log'}",
        f"log: {runs / 'RQ-0002' / 'ci.log'}",
        "no attempts left (3/3): not retried on its own; `ralph retry RQ-0003` starts a fresh round",
    ]
    # A multi-line error is one row; a finished worker's time is from its start to its end.
    assert rows[2][3:] == ["50m00s", "-", "—", "CI failed 3 times: make ci exited 2"]
    assert rows[3][3:] == ["1d00h", "-", "—", "push rejected 50 times"]


WORKER_KEYS = {
    "task_id",
    "duration_seconds",
    "attempts_left",
    "usage",
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
    assert lines[0].endswith(" · queue unreadable")
    assert lines[2].startswith(f"queue: unreadable: {queue}: not valid JSON: line 1 column 7")
    assert lines[4].startswith("RQ-0001  running")


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


# --- what ticks cannot do, said first ------------------------------------------------------------------


def push_queue(checkout: Path) -> None:
    git(checkout, "add", "-A")
    git(checkout, "commit", "-q", "-m", "Set up ralph")
    git(checkout, "push", "-q", "origin", "HEAD:main")


def test_a_base_branch_missing_on_the_remote_is_said_first_and_exits_1(checkout: Path) -> None:
    """Issue 13: status exited 0 and said nothing when the configured base was not on the remote."""
    config = checkout / ".ralph" / "config.toml"
    config.write_text(config.read_text().replace('base_branch = "main"', 'base_branch = "develop"'))
    assert 'base_branch = "develop"' in config.read_text()
    result = ralph(checkout, "status")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[1].startswith(
        "BASE BRANCH MISSING: origin/develop is not in this clone: origin has no branch 'develop', or it "
        "was never fetched, and every tick fails; push it (`git push origin HEAD:develop`)"
    )
    doc = json.loads(ralph(checkout, "status", "--json").stdout)
    assert doc["base_error"].startswith("origin/develop is not in this clone")
    # The same checkout with its base on origin is fine.
    config.write_text(config.read_text().replace('base_branch = "develop"', 'base_branch = "main"'))
    push_queue(checkout)
    assert ralph(checkout, "status").exit_code == 0
    assert status_json(checkout)["base_error"] is None


def test_no_remote_at_all_is_said_first(checkout: Path) -> None:
    git(checkout, "remote", "remove", "origin")
    result = ralph(checkout, "status")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[1].startswith("BASE BRANCH MISSING: no remote 'origin' in ")


def failed_worker(checkout: Path, now: datetime, *, attempt: int, next_attempt_at: datetime | None) -> None:
    ws = checkout / ".ralph" / "workspaces"
    state = new_state(target_branch="main", remote="origin", now=now - timedelta(hours=1))
    state.workers = [
        Worker(
            task_id="RQ-0001",
            lifecycle=Lifecycle.FAILED,
            attempt=attempt,
            workspace_path=str(ws / "RQ-0001"),
            started_at=now - timedelta(minutes=40),
            updated_at=now - timedelta(minutes=30),
            completed_at=now - timedelta(minutes=30),
            next_attempt_at=next_attempt_at,
            last_error="agent failed (exit 1)",
        )
    ]
    save_state(state_path(checkout), state, now=now - timedelta(minutes=30))


def detail_lines(checkout: Path) -> list[str]:
    result = ralph(checkout, "status")
    assert result.exit_code == 0, result.output
    return [line.strip() for line in result.stdout.splitlines() if line.startswith("    ")]


def test_no_past_next_attempt_for_a_task_with_no_attempts_left(checkout: Path, now: datetime) -> None:
    """Issue 13: status showed "next attempt at <a past time>" for a task selection will never retry."""
    past = now - timedelta(minutes=25)
    failed_worker(checkout, now, attempt=3, next_attempt_at=past)
    lines = detail_lines(checkout)
    assert not any(line.startswith("next attempt") for line in lines), lines
    assert lines == [
        "no attempts left (3/3): not retried on its own; `ralph retry RQ-0001` starts a fresh round"
    ]
    assert status_json(checkout)["workers"][0]["attempts_left"] == 0


def test_when_a_failed_task_starts_again(checkout: Path, now: datetime) -> None:
    soon = now + timedelta(minutes=20)
    failed_worker(checkout, now, attempt=1, next_attempt_at=soon)
    assert detail_lines(checkout) == [f"next attempt at {soon.strftime('%Y-%m-%dT%H:%M:%SZ')}"]
    failed_worker(checkout, now, attempt=1, next_attempt_at=now - timedelta(minutes=1))
    assert detail_lines(checkout) == ["next attempt: at the next tick"]
    failed_worker(checkout, now, attempt=1, next_attempt_at=None)
    assert detail_lines(checkout) == [
        "not retried on its own (stopped, or closed elsewhere); `ralph retry RQ-0001` runs it again"
    ]


def test_text_from_files_and_tasks_is_printed_escaped(workers: Path, now: datetime) -> None:
    """A title, an error or a marker can hold escape sequences or a newline faking a log line."""
    path = state_path(workers)
    raw = json.loads(path.read_text())
    raw["workers"][2]["last_error"] = "\x1b[2J\x1b[31mRQ-0042 landed 1234567 on main\x07"
    path.write_text(json.dumps(raw))
    blocked_ws = workers / ".ralph" / "workspaces" / "RQ-0009"
    marker = blocked_ws / ".ralph" / "cache" / "parallel" / "blocked_push.json"
    marker.parent.mkdir(parents=True)
    marker.write_text(
        json.dumps(
            {
                "task_id": "RQ-0009",
                "reason": "rejected\nRQ-0010 landed abc on main\u202e",
                "attempt": 50,
                "max_attempts": 50,
                "generated_at": "2026-11-21T10:00:00Z",
            }
        )
    )
    out = ralph(workers, "status").stdout
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\e[2J\\e[31mRQ-0042 landed 1234567 on main\\x07" in out
    # Folded onto the line it belongs to: no line of the output starts with the faked text.
    assert not any(line.startswith("RQ-0010 landed") for line in out.splitlines())
    assert "push blocked (50/50): rejected RQ-0010 landed abc on main\\u202e" in out


def test_the_summary_counts_landings_of_the_last_day_and_tokens_are_totalled(
    checkout: Path, now: datetime
) -> None:
    push_queue(checkout)
    events = checkout / ".ralph" / "cache" / "parallel" / "events.jsonl"
    events.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        {"at": now - timedelta(hours=30), "task_id": "RQ-0001", "event": "completed"},  # too long ago
        {"at": now - timedelta(hours=3), "task_id": "RQ-0002", "event": "completed"},
        {"at": now - timedelta(minutes=5), "task_id": "RQ-0003", "event": "completed"},
    ]
    events.write_text(
        "".join(
            json.dumps({**e, "at": e["at"].strftime("%Y-%m-%dT%H:%M:%SZ"), "previous": "integrating"}) + "\n"
            for e in lines
        )
    )
    state = new_state(target_branch="main", remote="origin", now=now)
    state.workers = [
        Worker(
            task_id="RQ-0003",
            lifecycle=Lifecycle.COMPLETED,
            workspace_path=str(checkout / ".ralph" / "workspaces" / "RQ-0003"),
            started_at=now - timedelta(minutes=20),
            updated_at=now - timedelta(minutes=5),
            completed_at=now - timedelta(minutes=5),
            usage=[
                Usage(attempt=1, input_tokens=1000, output_tokens=200, cost_usd=0.25),
                Usage(attempt=1, remediation=1, input_tokens=500, output_tokens=100, cost_usd=0.15),
            ],
        )
    ]
    save_state(state_path(checkout), state, now=now)
    doc = status_json(checkout)
    assert doc["summary"]["landed_last_24h"] == 2
    assert doc["summary"]["next_runnable"] == "RQ-0001"
    assert doc["workers"][0]["usage"] == {
        "input_tokens": 1500,
        "cached_input_tokens": 0,
        "output_tokens": 300,
        "cost_usd": 0.4,
    }
    assert doc["workers"][0]["duration_seconds"] == 15 * 60
    first = ralph(checkout, "status").stdout.splitlines()[0]
    assert first.startswith("main: 2 landed in 24h, 0 in flight, 0 blocked, 0 failed · no tick recorded yet")
    assert "$0.40, 1.8k tokens" in ralph(checkout, "status").stdout
