"""`ralph task add`: ids, what is recorded, what is refused (with the queue untouched), and the lock."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE, git
from helpers import hold_lock, ralph, stop

from ralph import bookkeeping


def queue_file(checkout: Path) -> Path:
    return checkout / ".ralph" / "queue.json"


def tasks(checkout: Path) -> list[dict[str, Any]]:
    doc = json.loads(queue_file(checkout).read_text())
    assert doc["version"] == 1
    result: list[dict[str, Any]] = doc["tasks"]
    return result


def test_add_prints_the_new_id_and_puts_it_first_as_the_rust_ralph_does(checkout: Path) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    first = ralph(checkout, "task", "add", "Fix the login bug")
    second = ralph(checkout, "task", "add", "Write the changelog")
    # The queue is not on origin yet (init just wrote it), so the working-tree file is edited.
    assert (first.exit_code, first.stdout) == (0, "RQ-0001\n")
    assert first.stderr == "RQ-0001 written to .ralph/queue.json\n"
    assert (second.exit_code, second.stdout) == (0, "RQ-0002\n")

    recorded = tasks(checkout)
    # The newest first (the Rust ralph's order, which its users asked for); --bottom appends.
    assert [(t["id"], t["title"]) for t in recorded] == [
        ("RQ-0002", "Write the changelog"),
        ("RQ-0001", "Fix the login bug"),
    ]
    task = recorded[1]
    # Keys not given stay absent: no "description": null, no "depends_on": [].
    assert set(task) == {"id", "status", "title", "priority", "created_at", "updated_at"}
    assert (task["status"], task["priority"]) == ("todo", "medium")
    assert task["created_at"] == task["updated_at"]
    assert task["created_at"].endswith("Z")
    created = datetime.fromisoformat(task["created_at"])
    assert before <= created <= datetime.now(UTC)


def test_description_priority_and_dependencies_are_recorded(checkout: Path) -> None:
    assert ralph(checkout, "task", "add", "First").exit_code == 0
    assert ralph(checkout, "task", "add", "Second").exit_code == 0
    result = ralph(
        checkout,
        "task",
        "add",
        "  Third  ",
        "--description",
        "tests/test_login.py fails one run in ten",
        "--priority",
        "high",
        "--depends-on",
        "RQ-0002",
        "--depends-on",
        "RQ-0001",
        "--depends-on",
        "RQ-0002",
    )
    assert (result.exit_code, result.stdout) == (0, "RQ-0003\n")
    third = tasks(checkout)[0]
    assert third["title"] == "Third"
    assert third["description"] == "tests/test_login.py fails one run in ten"
    assert third["priority"] == "high"
    # Given order kept; the repeated id recorded once.
    assert third["depends_on"] == ["RQ-0002", "RQ-0001"]


def test_short_description_option(checkout: Path) -> None:
    assert ralph(checkout, "task", "add", "Title", "-d", "details").exit_code == 0
    assert tasks(checkout)[0]["description"] == "details"


def test_custom_prefix_and_width_from_the_config(control: Path) -> None:
    (control / ".ralph").mkdir()
    (control / ".ralph" / "config.toml").write_text('[queue]\nid_prefix = "OPS"\nid_width = 3\n')
    assert ralph(control, "task", "add", "One").stdout == "OPS-001\n"
    assert ralph(control, "task", "add", "Two").stdout == "OPS-002\n"


def test_ids_continue_after_the_done_archive_so_none_is_reused(checkout: Path) -> None:
    done = {
        "version": 1,
        "tasks": [
            {
                "id": "RQ-0007",
                "status": "rejected",
                "title": "Old idea",
                "created_at": "2026-01-01T00:00:00Z",
                "updated_at": "2026-01-02T00:00:00Z",
                "completed_at": "2026-01-02T00:00:00Z",
            }
        ],
    }
    (checkout / ".ralph" / "done.json").write_text(json.dumps(done))
    assert ralph(checkout, "task", "add", "New idea").stdout == "RQ-0008\n"


def test_depends_on_a_task_in_the_done_archive(checkout: Path) -> None:
    done = {
        "version": 1,
        "tasks": [
            {
                "id": "RQ-0001",
                "status": "done",
                "title": "Done already",
                "created_at": "2026-01-01T00:00:00Z",
                "updated_at": "2026-01-02T00:00:00Z",
                "completed_at": "2026-01-02T00:00:00Z",
            }
        ],
    }
    (checkout / ".ralph" / "done.json").write_text(json.dumps(done))
    result = ralph(checkout, "task", "add", "Follow-up", "--depends-on", "RQ-0001")
    assert (result.exit_code, result.stdout) == (0, "RQ-0002\n")
    assert tasks(checkout)[0]["depends_on"] == ["RQ-0001"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([""], 'the task title is empty; give it a short imperative title, e.g. "Fix the login bug"'),
        (["  \t "], 'the task title is empty; give it a short imperative title, e.g. "Fix the login bug"'),
        (
            ["Title", "--depends-on", "RQ-0042"],
            "--depends-on RQ-0042: no such task in .ralph/queue.json or .ralph/done.json",
        ),
        (
            ["Title", "--depends-on", "../x"],
            "--depends-on: task id '../x' is not allowed: it contains a path separator; "
            "task ids look like RQ-0001",
        ),
        (
            ["Title", "--depends-on", "-rf"],
            "--depends-on: task id '-rf' is not allowed: it starts with '-' and would be read as an option; "
            "task ids look like RQ-0001",
        ),
        (["Title\0with a NUL"], "the new task is not valid: "),
    ],
    ids=["empty", "blank", "unknown-dependency", "dotdot-dependency", "dash-dependency", "nul-title"],
)
def test_bad_input_is_exit_1_one_line_and_the_queue_is_untouched(
    checkout: Path, args: list[str], message: str
) -> None:
    assert ralph(checkout, "task", "add", "Existing").exit_code == 0
    before = queue_file(checkout).read_bytes()
    result = ralph(checkout, "task", "add", *args)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("ralph: error: " + message)
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert queue_file(checkout).read_bytes() == before


def test_truncated_queue_file_is_refused_and_left_as_it_is(checkout: Path) -> None:
    assert ralph(checkout, "task", "add", "Existing").exit_code == 0
    full = queue_file(checkout).read_bytes()
    queue_file(checkout).write_bytes(full[: len(full) // 2])
    result = ralph(checkout, "task", "add", "Another")
    assert result.exit_code == 1
    assert result.stderr.startswith("ralph: error: .ralph/queue.json: not valid JSON: line ")
    assert result.stderr.endswith("; fix the syntax\n")
    assert result.stderr.count("\n") == 1
    assert queue_file(checkout).read_bytes() == full[: len(full) // 2]


def test_semantically_invalid_queue_is_refused(checkout: Path) -> None:
    stamp = "2026-01-01T00:00:00Z"
    task = {"id": "RQ-0001", "title": "Twin", "created_at": stamp, "updated_at": stamp}
    queue_file(checkout).write_text(json.dumps({"version": 1, "tasks": [task, task]}))
    before = queue_file(checkout).read_bytes()
    result = ralph(checkout, "task", "add", "Another")
    assert result.exit_code == 1
    assert result.stderr == (
        "ralph: error: .ralph/queue.json: task RQ-0001: the id appears twice (in .ralph/queue.json); "
        "give one of them a new id\n"
    )
    assert queue_file(checkout).read_bytes() == before


def test_bad_priority_is_a_usage_error(checkout: Path) -> None:
    before = queue_file(checkout).read_bytes()
    result = ralph(checkout, "task", "add", "Title", "--priority", "urgent")
    assert result.exit_code == 2
    expected = "Invalid value for '--priority': 'urgent' is not one of 'critical', 'high', 'medium', 'low'."
    assert expected in result.stderr
    assert queue_file(checkout).read_bytes() == before


def test_missing_title_is_a_usage_error(checkout: Path) -> None:
    result = ralph(checkout, "task", "add")
    assert result.exit_code == 2
    assert "Missing argument 'TITLE'." in result.stderr


def test_before_init_it_refuses_and_creates_nothing(control: Path) -> None:
    # It used to write .ralph/queue.json and .ralph/cache/ (not yet ignored) into an uninitialised clone.
    result = ralph(control, "task", "add", "Too early")
    assert result.exit_code == 1
    assert result.stderr == (
        f"ralph: error: {control} is not set up for ralph (no .ralph/config.toml and no queue file): "
        "run `ralph init` there, commit and push what it creates\n"
    )
    assert not (control / ".ralph").exists()


# --- the tick lock -------------------------------------------------------------------------------


@pytest.fixture
def lock_holder(checkout: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the tick lock, as a running tick would, until its stdin is closed."""
    holder, _ = hold_lock(checkout / ".ralph" / "cache" / "parallel" / "state.json.lock")
    yield holder
    assert holder.stdin is not None
    if not holder.stdin.closed:
        holder.stdin.close()
    assert holder.wait(timeout=10) == 0
    stop(holder)


def test_lock_held_longer_than_the_wait_exits_75_and_adds_nothing(
    checkout: Path, lock_holder: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bookkeeping, "LOCK_WAIT_S", 0.3)
    before = queue_file(checkout).read_bytes()
    result = ralph(checkout, "task", "add", "Blocked")
    assert result.exit_code == 75
    assert result.stdout == ""
    lock = checkout / ".ralph" / "cache" / "parallel" / "state.json.lock"
    holder = f"(pid {lock_holder.pid} since "
    assert result.stderr.startswith(f"ralph: another ralph process holds {lock} {holder}")
    assert result.stderr.endswith(
        ") and did not let go within 0.3s; nothing was changed, try again in a minute\n"
    )
    assert queue_file(checkout).read_bytes() == before


def test_a_lock_released_within_the_wait_lets_the_add_through(
    checkout: Path, lock_holder: subprocess.Popen[str]
) -> None:
    assert lock_holder.stdin is not None
    release = threading.Timer(0.5, lock_holder.stdin.close)
    started = time.monotonic()
    release.start()
    result = ralph(checkout, "task", "add", "Patient")
    assert (result.exit_code, result.stdout) == (0, "RQ-0001\n"), result.output
    assert time.monotonic() - started >= 0.4  # it waited for the holder rather than racing it
    assert [t["title"] for t in tasks(checkout)] == ["Patient"]


# --- a queue tracked on origin -------------------------------------------------------------------


@pytest.fixture
def pushed(checkout: Path) -> Path:
    """The checkout after `ralph init`, committed and pushed: the queue is tracked on origin/main."""
    git(checkout, "add", ".ralph", ".gitignore")
    git(checkout, "commit", "-q", "-m", "Set up ralph")
    git(checkout, "push", "-q", "origin", f"HEAD:{BASE}")
    return checkout


def origin_titles(origin: Path) -> list[str]:
    return [t["title"] for t in json.loads(git(origin, "show", f"{BASE}:.ralph/queue.json"))["tasks"]]


def test_a_tracked_queue_gets_the_task_committed_and_pushed(pushed: Path, origin: Path) -> None:
    before = queue_file(pushed).read_bytes()
    result = ralph(pushed, "task", "add", "Pushed")
    assert (result.exit_code, result.stdout) == (0, "RQ-0001\n"), result.output
    assert result.stderr == "RQ-0001 pushed to origin/main\n"
    assert origin_titles(origin) == ["Pushed"]
    assert git(origin, "log", "-1", "--format=%s", BASE) == "ralph: add RQ-0001: Pushed"
    assert queue_file(pushed).read_bytes() == before  # the working tree is not touched


def test_no_push_edits_the_working_tree_and_pushes_nothing(pushed: Path, origin: Path) -> None:
    refs = git(origin, "for-each-ref")
    result = ralph(pushed, "task", "add", "Local only", "--no-push")
    assert (result.exit_code, result.stdout) == (0, "RQ-0001\n"), result.output
    assert result.stderr == "RQ-0001 written to .ralph/queue.json\n"
    assert [t["title"] for t in tasks(pushed)] == ["Local only"]
    assert git(origin, "for-each-ref") == refs  # no branch moved, none created
    assert origin_titles(origin) == []
    assert git(pushed, "status", "--porcelain") == " M .ralph/queue.json"
