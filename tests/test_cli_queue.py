"""`ralph queue list | show | validate | explain`: text, --json, and refusals, through the real CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from helpers import ralph

from ralph.state import Lifecycle, Worker, new_state, save_state


@pytest.fixture
def checkout(checkout: Path) -> Path:
    """conftest's checkout (after `ralph init`) with two tasks: RQ-0002 depends on RQ-0001."""
    first = ["Add a --dry-run flag", "--priority", "high", "-d", "print, do not write"]
    assert ralph(checkout, "task", "add", *first).stdout == "RQ-0001\n"
    second = ["Document --dry-run", "--depends-on", "RQ-0001", "--bottom"]
    assert ralph(checkout, "task", "add", *second).stdout == "RQ-0002\n"
    return checkout


def edit_queue(checkout: Path, name: str = "queue.json") -> tuple[Path, dict[str, Any]]:
    path = checkout / ".ralph" / name
    return path, json.loads(path.read_text())


def write_done(checkout: Path, *tasks: dict[str, Any]) -> None:
    (checkout / ".ralph" / "done.json").write_text(json.dumps({"version": 1, "tasks": list(tasks)}, indent=2))


DONE_TASK = {
    "id": "RQ-0000",
    "status": "done",
    "title": "Set up CI",
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-02T00:00:00Z",
    "completed_at": "2026-01-02T00:00:00Z",
}


def json_doc(result: Result) -> dict[str, Any]:
    assert result.exit_code in (0, 1), result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    assert doc["schema"] == 1
    return doc


# --- list ----------------------------------------------------------------------------------------


def test_list_shows_tasks_in_queue_order(checkout: Path) -> None:
    result = ralph(checkout, "queue", "list")
    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout == (
        "ID       STATUS  PRIORITY  DEPENDS ON  TITLE\n"
        "RQ-0001  todo    high      -           Add a --dry-run flag\n"
        "RQ-0002  todo    medium    RQ-0001     Document --dry-run\n"
    )


def test_list_keeps_file_order_not_priority_order(checkout: Path) -> None:
    path, doc = edit_queue(checkout)
    doc["tasks"].reverse()
    path.write_text(json.dumps(doc))
    lines = ralph(checkout, "queue", "list").stdout.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["RQ-0002", "RQ-0001"]


def test_list_json(checkout: Path) -> None:
    doc = json_doc(ralph(checkout, "queue", "list", "--json"))
    assert set(doc) == {"schema", "tasks"}
    assert [t["id"] for t in doc["tasks"]] == ["RQ-0001", "RQ-0002"]
    first, second = doc["tasks"]
    assert (first["title"], first["status"], first["priority"]) == ("Add a --dry-run flag", "todo", "high")
    assert first["description"] == "print, do not write"
    assert second["depends_on"] == ["RQ-0001"]
    for key in ("created_at", "updated_at", "scheduled_start", "completed_at", "tags", "custom_fields"):
        assert key in first, key


def test_list_all_includes_the_done_archive_after_the_queue(checkout: Path) -> None:
    write_done(checkout, DONE_TASK)
    assert "RQ-0000" not in ralph(checkout, "queue", "list").stdout
    lines = ralph(checkout, "queue", "list", "--all").stdout.splitlines()
    assert [line.split()[:2] for line in lines[1:]] == [
        ["RQ-0001", "todo"],
        ["RQ-0002", "todo"],
        ["RQ-0000", "done"],
    ]
    doc = json_doc(ralph(checkout, "queue", "list", "--all", "--json"))
    assert [t["id"] for t in doc["tasks"]] == ["RQ-0001", "RQ-0002", "RQ-0000"]


def test_list_of_an_empty_queue_says_how_to_add_one(control: Path) -> None:
    assert ralph(control, "init").exit_code == 0
    result = ralph(control, "queue", "list")
    assert (result.exit_code, result.stdout) == (
        0,
        'no tasks in .ralph/queue.json; add one with `ralph task add "<title>"`\n',
    )
    assert json_doc(ralph(control, "queue", "list", "--json"))["tasks"] == []


def test_list_of_a_truncated_queue_is_exit_1_one_line(checkout: Path) -> None:
    path = checkout / ".ralph" / "queue.json"
    path.write_text(path.read_text()[:40])
    result = ralph(checkout, "queue", "list")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"ralph: error: {path}: not valid JSON: line ")
    assert result.stderr.count("\n") == 1


# --- show ----------------------------------------------------------------------------------------


def test_show_prints_the_fields_that_are_set(checkout: Path) -> None:
    result = ralph(checkout, "queue", "show", "RQ-0002")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "id:               RQ-0002",
        "status:           todo",
        "title:            Document --dry-run",
        "priority:         medium",
    ]
    assert "depends_on:       RQ-0001" in lines
    assert [line.split(":")[0] for line in lines] == [
        "id",
        "status",
        "title",
        "priority",
        "created_at",
        "updated_at",
        "depends_on",
    ]


def test_show_json(checkout: Path) -> None:
    doc = json_doc(ralph(checkout, "queue", "show", "RQ-0001", "--json"))
    assert set(doc) == {"schema", "task"}
    assert doc["task"]["id"] == "RQ-0001"
    assert doc["task"]["description"] == "print, do not write"


def test_show_finds_a_task_in_the_done_archive(checkout: Path) -> None:
    write_done(checkout, DONE_TASK)
    result = ralph(checkout, "queue", "show", "RQ-0000")
    assert result.exit_code == 0
    assert "status:           done" in result.stdout.splitlines()
    assert "completed_at:     2026-01-02T00:00:00Z" in result.stdout.splitlines()


def test_show_of_an_unknown_id_is_exit_1(checkout: Path) -> None:
    result = ralph(checkout, "queue", "show", "RQ-0099")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "ralph: error: no task RQ-0099 in .ralph/queue.json or .ralph/done.json; "
        "`ralph queue list --all` lists them\n"
    )


def test_show_of_a_path_like_id_is_refused(checkout: Path) -> None:
    result = ralph(checkout, "queue", "show", "../../etc/passwd")
    assert result.exit_code == 1
    assert result.stderr == (
        "ralph: error: task id '../../etc/passwd' is not allowed: it contains a path separator; "
        "task ids look like RQ-0001\n"
    )


# --- validate ------------------------------------------------------------------------------------


def test_validate_a_valid_queue(checkout: Path) -> None:
    result = ralph(checkout, "queue", "validate")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == "ok: 2 tasks in .ralph/queue.json, 0 tasks in .ralph/done.json\n"


def test_validate_counts_in_the_singular_for_one(checkout: Path) -> None:
    # It said "1 tasks".
    write_done(checkout, DONE_TASK)
    path, doc = edit_queue(checkout)
    doc["tasks"] = doc["tasks"][:1]
    path.write_text(json.dumps(doc))
    result = ralph(checkout, "queue", "validate")
    assert result.stdout == "ok: 1 task in .ralph/queue.json, 1 task in .ralph/done.json\n"


def test_validate_json_of_a_valid_queue(checkout: Path) -> None:
    doc = json_doc(ralph(checkout, "queue", "validate", "--json"))
    sources = doc.pop("sources")
    assert doc == {
        "schema": 1,
        "valid": True,
        "problems": [],
        "warnings": [],
        "queue_tasks": 2,
        "done_tasks": 0,
    }
    # Nothing was pushed yet: the working tree is the only place checked.
    assert [(s["name"], s["valid"], s["queue_tasks"]) for s in sources] == [("working tree", True, 2)]


INVALID_PROBLEMS = [
    ".ralph/queue.json: task RQ-0002: the id appears twice (in .ralph/queue.json); give one of them a new id",
    ".ralph/done.json: task RQ-0000: status todo does not belong in the done archive",
    ".ralph/queue.json: task RQ-0001: depends_on names RQ-0404, which is in neither .ralph/queue.json "
    "nor .ralph/done.json",
]


@pytest.fixture
def invalid(checkout: Path) -> Path:
    """Three problems: a duplicate id, a todo task in the done archive, a dangling dependency."""
    path, doc = edit_queue(checkout)
    doc["tasks"][0]["depends_on"] = ["RQ-0404"]
    doc["tasks"].append(dict(doc["tasks"][1]))
    path.write_text(json.dumps(doc))
    write_done(checkout, {**DONE_TASK, "status": "todo", "completed_at": None})
    return checkout


def test_validate_lists_every_problem_on_stdout_and_exits_1(invalid: Path) -> None:
    result = ralph(invalid, "queue", "validate")
    assert result.exit_code == 1
    assert result.stderr == ""
    assert sorted(result.stdout.splitlines()) == sorted(INVALID_PROBLEMS)


def test_validate_json_lists_every_problem_and_exits_1(invalid: Path) -> None:
    result = ralph(invalid, "queue", "validate", "--json")
    assert result.exit_code == 1
    doc = json_doc(result)
    assert doc["valid"] is False
    assert sorted(doc["problems"]) == sorted(INVALID_PROBLEMS)
    assert (doc["queue_tasks"], doc["done_tasks"]) == (3, 1)


def test_validate_reports_a_file_that_does_not_parse_as_a_problem(checkout: Path) -> None:
    # It used to exit 1 with the message on stderr only, and `--json` printed nothing at all.
    path = checkout / ".ralph" / "queue.json"
    path.write_text(path.read_text()[:40])
    result = ralph(checkout, "queue", "validate")
    assert result.exit_code == 1
    assert result.stdout.startswith(".ralph/queue.json: not valid JSON: line ")
    assert result.stdout.count("\n") == 1
    doc = json_doc(ralph(checkout, "queue", "validate", "--json"))
    assert doc["valid"] is False
    assert len(doc["problems"]) == 1 and "not valid JSON" in doc["problems"][0]
    assert (doc["queue_tasks"], doc["done_tasks"]) == (None, 0)  # the done archive still parses


def test_validate_uses_the_configured_id_pattern(checkout: Path) -> None:
    config = checkout / ".ralph" / "config.toml"
    config.write_text('[queue]\nid_prefix = "OPS"\n')
    result = ralph(checkout, "queue", "validate")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        ".ralph/queue.json: task RQ-0001: id should look like OPS-0001 (4 digits)",
        ".ralph/queue.json: task RQ-0002: id should look like OPS-0001 (4 digits)",
    ]


# --- explain -------------------------------------------------------------------------------------


def test_explain_runnable_and_waiting(checkout: Path) -> None:
    result = ralph(checkout, "queue", "explain")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (
        "ID       VERDICT                   TITLE\n"
        "RQ-0001  runnable                  Add a --dry-run flag\n"
        "RQ-0002  waits for RQ-0001 (todo)  Document --dry-run\n"
    )


def test_explain_a_dependency_in_the_done_archive_is_satisfied(checkout: Path) -> None:
    write_done(checkout, DONE_TASK)
    assert ralph(checkout, "task", "add", "After CI", "--depends-on", "RQ-0000").exit_code == 0
    verdicts = {v["id"]: v for v in json_doc(ralph(checkout, "queue", "explain", "--json"))["tasks"]}
    assert verdicts["RQ-0003"]["runnable"] is True


def test_explain_scheduled_start_and_status(checkout: Path) -> None:
    path, doc = edit_queue(checkout)
    doc["tasks"][0]["scheduled_start"] = "2999-01-01T02:00:00Z"
    doc["tasks"][1]["status"] = "draft"
    path.write_text(json.dumps(doc))
    lines = ralph(checkout, "queue", "explain").stdout.splitlines()
    assert lines[1].split("  ")[0:2] == ["RQ-0001", "scheduled to start at 2999-01-01T02:00:00Z"]
    assert "status is draft" in lines[2]


def test_explain_a_failed_worker_with_attempts_used_up(checkout: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    state = new_state(target_branch="main", remote="origin", now=now)
    state.workers.append(
        Worker(
            task_id="RQ-0001",
            lifecycle=Lifecycle.FAILED,
            attempt=3,
            workspace_path=str(checkout / ".ralph" / "workspaces" / "RQ-0001"),
            started_at=now - timedelta(hours=1),
            updated_at=now - timedelta(minutes=5),
            completed_at=now - timedelta(minutes=5),
            last_error="agent exited 1 without a commit",
        )
    )
    save_state(checkout / ".ralph" / "cache" / "parallel" / "state.json", state, now=now)
    result = ralph(checkout, "queue", "explain")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].startswith(
        "RQ-0001  attempts used up (3/3): agent exited 1 without a commit"
    )
    doc = json_doc(ralph(checkout, "queue", "explain", "--json"))
    assert set(doc) == {"schema", "generated_at", "paused", "tasks"}
    assert doc["paused"] is None
    assert doc["tasks"][0] == {
        "id": "RQ-0001",
        "title": "Add a --dry-run flag",
        "runnable": False,
        "reason": "attempts used up (3/3): agent exited 1 without a commit",
    }


def test_explain_json(checkout: Path) -> None:
    doc = json_doc(ralph(checkout, "queue", "explain", "--json"))
    assert doc["generated_at"].endswith("Z")
    assert doc["tasks"] == [
        {"id": "RQ-0001", "title": "Add a --dry-run flag", "runnable": True, "reason": None},
        {
            "id": "RQ-0002",
            "title": "Document --dry-run",
            "runnable": False,
            "reason": "waits for RQ-0001 (todo)",
        },
    ]


def test_explain_of_an_invalid_queue_is_exit_1(invalid: Path) -> None:
    result = ralph(invalid, "queue", "explain")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("ralph: error: ")
    assert result.stderr.endswith(" (and 2 more; `ralph queue validate` lists them)\n")


def test_explain_of_an_empty_queue(control: Path) -> None:
    assert ralph(control, "init").exit_code == 0
    assert ralph(control, "queue", "explain").stdout == "no tasks in .ralph/queue.json\n"
