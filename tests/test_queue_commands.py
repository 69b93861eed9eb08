"""The queue commands people reach for: `task edit | rm | done | reject | move`, `queue import | sort`,
`queue list` filters, `queue validate` of the working tree and the remote, through the real CLI.

Each change is one commit pushed with a lease when the queue is tracked (and changes only the lines of
the task it touches), or an edit of the working tree with --no-push.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE, git
from freezegun import freeze_time
from helpers import ralph
from rust_formats import schema_problems

QUEUE = ".ralph/queue.json"
DONE = ".ralph/done.json"


@pytest.fixture
def pushed(checkout: Path) -> Path:
    """After `ralph init` and three tasks (RQ-0001 first in the queue), committed and pushed."""
    for title in ("Fix the login bug", "Write the changelog", "Tidy the README"):
        assert ralph(checkout, "task", "add", title, "--bottom").exit_code == 0
    git(checkout, "add", ".ralph", ".gitignore")
    git(checkout, "commit", "-q", "-m", "Set up ralph")
    git(checkout, "push", "-q", "origin", f"HEAD:{BASE}")
    return checkout


def on_origin(origin: Path, name: str = QUEUE) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = json.loads(git(origin, "show", f"{BASE}:{name}"))["tasks"]
    return tasks


def ids(origin: Path, name: str = QUEUE) -> list[str]:
    return [t["id"] for t in on_origin(origin, name)]


def last_commit(origin: Path) -> tuple[str, str]:
    """The subject of origin's last commit and the files it changed."""
    subject = git(origin, "log", "-1", "--format=%s", BASE)
    files = git(origin, "diff-tree", "--no-commit-id", "--name-only", "-r", BASE)
    return subject, files


def diff_lines(origin: Path, name: str) -> tuple[list[str], list[str]]:
    """Removed and added lines of `name` in origin's last commit."""
    diff = git(origin, "diff", "-U0", f"{BASE}~1", BASE, "--", name).splitlines()
    removed = [line[1:] for line in diff if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]
    return removed, added


# --- task edit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flag", "order"), [("--top", ["RQ-0004", "RQ-0001"]), ("--bottom", ["RQ-0001"])])
def test_task_add_top_and_bottom(pushed: Path, origin: Path, flag: str, order: list[str]) -> None:
    assert ralph(pushed, "task", "add", "Another", flag).exit_code == 0
    queue = ids(origin)
    assert queue[: len(order)] == order and len(queue) == 4
    assert queue[-1] == ("RQ-0003" if flag == "--top" else "RQ-0004")


def test_edit_pushes_one_commit_changing_only_that_tasks_lines(pushed: Path, origin: Path) -> None:
    before = git(pushed, "rev-parse", "HEAD")
    with freeze_time("2030-01-01T00:00:00Z", tick=True):  # a later second than the add's: updated_at moves
        result = ralph(
            pushed, "task", "edit", "RQ-0002", "--title", "Write the release notes", "--priority", "high"
        )
    assert result.exit_code == 0, result.output
    assert result.stdout == f"RQ-0002 changed: title, priority (pushed to origin/{BASE})\n"
    assert last_commit(origin) == ("ralph: edit RQ-0002", QUEUE)
    assert git(origin, "rev-parse", f"{BASE}~1") == before  # one commit, on top of the base
    removed, added = diff_lines(origin, QUEUE)
    assert [line.split(":")[0].strip() for line in removed] == ['"title"', '"priority"', '"updated_at"']
    assert [line.split(":")[0].strip() for line in added] == ['"title"', '"priority"', '"updated_at"']
    edited = on_origin(origin)[1]
    assert (edited["title"], edited["priority"]) == ("Write the release notes", "high")
    assert git(pushed, "status", "--porcelain") == ""  # the working tree is not touched


def test_edit_dependencies_schedule_and_status(pushed: Path, origin: Path) -> None:
    args = ["--depends-on", "RQ-0001", "--scheduled-start", "2030-01-01T10:00:00+01:00", "--status", "draft"]
    assert ralph(pushed, "task", "edit", "RQ-0003", *args).exit_code == 0
    task = on_origin(origin)[2]
    assert (task["depends_on"], task["scheduled_start"], task["status"]) == (
        ["RQ-0001"],
        "2030-01-01T09:00:00Z",
        "draft",
    )
    cleared = ralph(pushed, "task", "edit", "RQ-0003", "--no-depends-on", "--scheduled-start", "")
    assert cleared.exit_code == 0, cleared.output
    task = on_origin(origin)[2]
    assert "scheduled_start" not in task and task["depends_on"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["RQ-0002"], "nothing to change: give --title"),
        (["RQ-0002", "--depends-on", "RQ-0404"], "--depends-on RQ-0404: no such task"),
        (["RQ-0001", "--depends-on", "RQ-0002"], ""),  # fine alone; the cycle case is below
        (["RQ-0404", "--title", "x"], "no task RQ-0404 in origin/main:.ralph/queue.json"),
        (
            ["RQ-0002", "--scheduled-start", "tomorrow"],
            "--scheduled-start 'tomorrow' is not an RFC 3339 time",
        ),
        (["RQ-0002", "--title", "x" * 501], "the title is 501 characters, over the 500-character limit"),
    ],
)
def test_edit_refusals_change_nothing(pushed: Path, origin: Path, args: list[str], message: str) -> None:
    tip = git(origin, "rev-parse", BASE)
    result = ralph(pushed, "task", "edit", *args)
    if not message:
        assert result.exit_code == 0
        return
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("ralph: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert git(origin, "rev-parse", BASE) == tip


def test_an_edit_that_makes_a_cycle_is_refused(pushed: Path, origin: Path) -> None:
    assert ralph(pushed, "task", "edit", "RQ-0002", "--depends-on", "RQ-0001").exit_code == 0
    tip = git(origin, "rev-parse", BASE)
    result = ralph(pushed, "task", "edit", "RQ-0001", "--depends-on", "RQ-0002")
    assert result.exit_code == 1
    assert "dependency cycle: RQ-0001 -> RQ-0002 -> RQ-0001" in result.stderr
    assert result.stderr.endswith("; nothing was changed\n")
    assert git(origin, "rev-parse", BASE) == tip


# --- rm, done, reject ----------------------------------------------------------------------------------


def test_rm_removes_exactly_the_task(pushed: Path, origin: Path) -> None:
    result = ralph(pushed, "task", "rm", "RQ-0002")
    assert (result.exit_code, result.stdout) == (0, f"RQ-0002 removed (pushed to origin/{BASE})\n")
    assert ids(origin) == ["RQ-0001", "RQ-0003"]
    removed, added = diff_lines(origin, QUEUE)
    assert added == [] and '      "id": "RQ-0002",' in removed


def test_rm_of_a_task_others_depend_on_is_refused(pushed: Path, origin: Path) -> None:
    assert ralph(pushed, "task", "edit", "RQ-0003", "--depends-on", "RQ-0001").exit_code == 0
    result = ralph(pushed, "task", "rm", "RQ-0001")
    assert result.exit_code == 1
    assert "RQ-0001 is named by RQ-0003 (depends_on); change those first" in result.stderr
    assert ids(origin) == ["RQ-0001", "RQ-0002", "RQ-0003"]


@pytest.mark.parametrize("verb", ["done", "reject"])
def test_done_and_reject_move_the_task_to_the_archive_at_once(pushed: Path, origin: Path, verb: str) -> None:
    result = ralph(pushed, "task", verb, "RQ-0002", "--note", "handled by hand")
    status = "done" if verb == "done" else "rejected"
    assert result.exit_code == 0, result.output
    assert result.stdout == f"RQ-0002 is {status} and moved to the done archive (pushed to origin/{BASE})\n"
    subject, files = last_commit(origin)
    assert subject == f"ralph: {verb} RQ-0002" and sorted(files.split()) == [DONE, QUEUE]
    assert ids(origin) == ["RQ-0001", "RQ-0003"]
    archived = on_origin(origin, DONE)
    assert [(t["id"], t["status"], t["notes"]) for t in archived] == [
        ("RQ-0002", status, ["handled by hand"])
    ]
    assert archived[0]["completed_at"] == archived[0]["updated_at"]
    for name in (QUEUE, DONE):
        assert schema_problems(git(origin, "show", f"{BASE}:{name}").encode()) == []
    again = ralph(pushed, "task", verb, "RQ-0002")
    assert again.exit_code == 1
    assert "RQ-0002 is in origin/main:.ralph/done.json, the archive of finished tasks" in again.stderr


# --- move and sort --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "order"),
    [
        (["RQ-0003", "--top"], ["RQ-0003", "RQ-0001", "RQ-0002"]),
        (["RQ-0001", "--bottom"], ["RQ-0002", "RQ-0003", "RQ-0001"]),
        (["RQ-0003", "--before", "RQ-0002"], ["RQ-0001", "RQ-0003", "RQ-0002"]),
        (["RQ-0001", "--after", "RQ-0002"], ["RQ-0002", "RQ-0001", "RQ-0003"]),
    ],
)
def test_move(pushed: Path, origin: Path, args: list[str], order: list[str]) -> None:
    result = ralph(pushed, "task", "move", *args)
    assert result.exit_code == 0, result.output
    assert ids(origin) == order
    assert last_commit(origin)[0] == f"ralph: move {args[0]}"


@pytest.mark.parametrize(
    "args",
    [
        ["RQ-0001"],
        ["RQ-0001", "--top", "--bottom"],
        ["RQ-0001", "--before", "RQ-0001"],
        ["RQ-0001", "--after", "RQ-0404"],
    ],
)
def test_move_needs_one_real_place(pushed: Path, origin: Path, args: list[str]) -> None:
    tip = git(origin, "rev-parse", BASE)
    result = ralph(pushed, "task", "move", *args)
    assert result.exit_code == 1 and result.stderr.startswith("ralph: error: ")
    assert git(origin, "rev-parse", BASE) == tip


def test_sort_orders_by_priority_keeping_queue_order_among_equals(pushed: Path, origin: Path) -> None:
    assert ralph(pushed, "task", "edit", "RQ-0003", "--priority", "critical").exit_code == 0
    assert ralph(pushed, "task", "edit", "RQ-0001", "--priority", "low").exit_code == 0
    result = ralph(pushed, "queue", "sort")
    assert (result.exit_code, result.stdout) == (0, f"sorted by priority (pushed to origin/{BASE})\n")
    assert ids(origin) == ["RQ-0003", "RQ-0002", "RQ-0001"]
    tip = git(origin, "rev-parse", BASE)
    again = ralph(pushed, "queue", "sort")
    assert again.stdout == "already in priority order; nothing changed\n"
    assert git(origin, "rev-parse", BASE) == tip  # nothing to commit, no empty commit


# --- import ---------------------------------------------------------------------------------------------

MARKDOWN = """# Next steps

- [ ] Add a --json flag to `export`
  It should print one document.

  Keep the exit codes.
- Document the flag
  * in the README
  * in --help
- [x] Already done, skipped
1. Numbered items work too

A paragraph after the list is not a task.
"""


def test_import_a_markdown_list_in_one_commit_at_the_top(pushed: Path, origin: Path, tmp_path: Path) -> None:
    source = tmp_path / "plan.md"
    source.write_text(MARKDOWN)
    result = ralph(pushed, "queue", "import", str(source))
    assert result.exit_code == 0, result.output
    assert result.stdout == "RQ-0004\nRQ-0005\nRQ-0006\n"
    assert last_commit(origin) == ("ralph: import 3 tasks from plan.md", QUEUE)
    tasks = on_origin(origin)
    assert [t["id"] for t in tasks] == ["RQ-0004", "RQ-0005", "RQ-0006", "RQ-0001", "RQ-0002", "RQ-0003"]
    assert tasks[0]["title"] == "Add a --json flag to `export`"
    assert tasks[0]["description"] == "It should print one document.\n\nKeep the exit codes."
    assert tasks[1]["description"] == "* in the README\n* in --help"
    assert "description" not in tasks[2]


def test_import_json_at_the_bottom_with_dependencies_between_the_new_tasks(
    pushed: Path, origin: Path, tmp_path: Path
) -> None:
    source = tmp_path / "tasks.json"
    source.write_text(
        json.dumps(
            {
                "version": 1,
                "tasks": [
                    {"id": "RQ-0010", "title": "Schema", "priority": "high", "tags": ["db"]},
                    {"title": "Migration", "depends_on": ["RQ-0010"], "status": "draft"},
                ],
            }
        )
    )
    result = ralph(pushed, "queue", "import", str(source), "--bottom")
    assert (result.exit_code, result.stdout) == (0, "RQ-0010\nRQ-0011\n"), result.output
    tasks = on_origin(origin)
    assert [(t["id"], t.get("depends_on"), t["status"]) for t in tasks[3:]] == [
        ("RQ-0010", None, "todo"),
        ("RQ-0011", ["RQ-0010"], "draft"),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[{"title": "Fine"}, {"title": ""}]', "task 2: a task needs a non-empty title"),
        (
            '[{"title": "Fine"}, {"title": "Typo", "prioritty": "high"}]',
            "task 2: the new task is not valid: prioritty",
        ),
        ('[{"title": "Fine"}, {"title": "Taken", "id": "RQ-0002"}]', "task 2: id RQ-0002 is taken"),
        ('[{"title": "Fine"}, {"title": "Loop", "depends_on": ["RQ-0404"]}]', "depends_on names RQ-0404"),
        ('{"tasks": 3}', "expected a list of task objects"),
        ("[{", "not valid JSON"),
        ("", "no tasks in it"),
    ],
)
def test_import_is_all_or_nothing(
    pushed: Path, origin: Path, tmp_path: Path, content: str, message: str
) -> None:
    source = tmp_path / "tasks.json"
    source.write_text(content)
    tip = git(origin, "rev-parse", BASE)
    result = ralph(pushed, "queue", "import", str(source))
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("ralph: error: ") and message in result.stderr, result.stderr
    assert git(origin, "rev-parse", BASE) == tip


def test_import_with_no_push_edits_the_working_tree(pushed: Path, origin: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ralph", "-C", str(pushed), "queue", "import", "-", "--no-push"],
        input="- One\n- Two\n",
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    local = json.loads((pushed / QUEUE).read_text())["tasks"]
    assert [t["title"] for t in local[:2]] == ["One", "Two"]
    assert ids(origin) == ["RQ-0001", "RQ-0002", "RQ-0003"]


# --- list filters ---------------------------------------------------------------------------------------


def test_list_filters(pushed: Path) -> None:
    assert ralph(pushed, "task", "edit", "RQ-0002", "--status", "draft").exit_code == 0
    assert ralph(pushed, "task", "edit", "RQ-0003", "--depends-on", "RQ-0001").exit_code == 0
    git(pushed, "pull", "-q", "origin", BASE)

    def listed(*args: str) -> list[str]:
        result = ralph(pushed, "queue", "list", "--json", *args)
        assert result.exit_code == 0, result.output
        return [t["id"] for t in json.loads(result.stdout)["tasks"]]

    assert listed("--status", "draft") == ["RQ-0002"]
    assert listed("--status", "draft", "--status", "todo") == ["RQ-0001", "RQ-0002", "RQ-0003"]
    assert listed("--runnable") == ["RQ-0001"]
    assert listed("--tag", "db") == []
    assert (
        ralph(pushed, "queue", "list", "--tag", "db").stdout
        == "no task in origin/main:.ralph/queue.json matches\n"
    )


# --- validate -------------------------------------------------------------------------------------------


def test_validate_checks_the_working_tree_and_the_remote_when_they_differ(pushed: Path, origin: Path) -> None:
    """It read origin/<base> only: an invalid local edit was "ok", and once pushed every tick failed."""
    queue = pushed / QUEUE
    doc = json.loads(queue.read_text())
    doc["tasks"][0]["depends_on"] = ["RQ-0404"]
    doc["tasks"][1]["title"] = ""
    queue.write_text(json.dumps(doc, indent=2))
    result = ralph(pushed, "queue", "validate")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        # Both problems of the working tree, not only the first, then the remote's verdict.
        ".ralph/queue.json: task 'RQ-0002' (tasks[1]).title: String should have at least 1 character "
        "(got '')",
        f"origin/{BASE} (as last fetched): ok: 3 tasks in origin/{BASE}:.ralph/queue.json, "
        f"0 tasks in origin/{BASE}:.ralph/done.json",
    ]
    doc["tasks"][1]["title"] = "Back"
    queue.write_text(json.dumps(doc, indent=2))
    result = ralph(pushed, "queue", "validate", "--json")
    report = json.loads(result.stdout)
    assert report["problems"] == [
        ".ralph/queue.json: task RQ-0001: depends_on names RQ-0404, which is in neither .ralph/queue.json "
        "nor .ralph/done.json"
    ]
    assert [(s["name"], s["valid"]) for s in report["sources"]] == [
        ("working tree", False),
        (f"origin/{BASE} (as last fetched)", True),
    ]
    local = ralph(pushed, "queue", "validate", "--local")
    assert local.exit_code == 1 and "origin" not in local.stdout


def test_validate_lists_every_parse_problem_of_a_file(checkout: Path) -> None:
    stamp = "2026-01-01T00:00:00Z"
    bad = [
        {"id": "RQ-0001", "title": "", "created_at": stamp, "updated_at": stamp},
        {"id": "RQ-0002", "title": "ok", "priority": "urgent", "created_at": stamp, "updated_at": stamp},
    ]
    (checkout / QUEUE).write_text(json.dumps({"version": 1, "tasks": bad}))
    result = ralph(checkout, "queue", "validate")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(".ralph/queue.json: task 'RQ-0001' (tasks[0]).title:")
    assert lines[1].startswith(".ralph/queue.json: task 'RQ-0002' (tasks[1]).priority:")


def test_validate_before_init_says_run_init(control: Path) -> None:
    result = ralph(control, "queue", "validate")
    assert result.exit_code == 1
    assert result.stdout == f"{control}: not set up for ralph; run `ralph init` there\n"


def test_validate_warns_about_what_is_valid_but_surprising(checkout: Path) -> None:
    stamp = "2026-01-01T00:00:00Z"
    text = (
        '{"version": 1, "tasks": [{"id": "RQ-0001", "title": "a", "title": "b", '
        f'"created_at": "{stamp}", "updated_at": "{stamp}", "scheduled_start": "next week"}}]}}'
    )
    (checkout / QUEUE).write_text(text)
    result = ralph(checkout, "queue", "validate")
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "warning: .ralph/queue.json: line 1: key 'title' appears twice in one object (a bad merge?); "
        "only the last counts",
        "warning: .ralph/queue.json: task RQ-0001: scheduled_start 'next week' is not an RFC 3339 time, "
        "so the task is not held back; write it like 2026-11-21T09:00:00Z",
    ]


# --- task add ------------------------------------------------------------------------------------------


def test_add_no_push_skips_ids_the_remote_has_handed_out(pushed: Path, origin: Path) -> None:
    """`task add --no-push` once handed out an id already archived on the remote."""
    assert ralph(pushed, "task", "done", "RQ-0003").exit_code == 0  # on origin; not pulled here
    assert ralph(pushed, "task", "add", "From another host").stdout == "RQ-0004\n"
    assert "RQ-0004" not in (pushed / QUEUE).read_text()
    result = ralph(pushed, "task", "add", "Local", "--no-push")
    assert (result.exit_code, result.stdout) == (0, "RQ-0005\n"), result.output


def test_add_refuses_an_overlong_title_or_description(checkout: Path) -> None:
    before = (checkout / QUEUE).read_bytes()
    long_title = ralph(checkout, "task", "add", "x" * 501)
    assert long_title.exit_code == 1
    assert long_title.stderr == (
        "ralph: error: the title is 501 characters, over the 500-character limit; keep it to a short line "
        "and put the detail in the description\n"
    )
    long_description = ralph(checkout, "task", "add", "Fine", "-d", "y" * (64 * 1024 + 1))
    assert long_description.exit_code == 1
    assert "the description is 65,537 bytes, over the 65,536-byte limit" in long_description.stderr
    assert (checkout / QUEUE).read_bytes() == before
    assert ralph(checkout, "task", "add", "x" * 500).exit_code == 0


def test_show_into_a_closed_pipe_is_no_traceback(checkout: Path) -> None:
    """`ralph queue show ID | head -1` exited 3 with a traceback (broken pipe)."""
    stamp = "2026-01-01T00:00:00Z"
    long = "\n".join(f"line {n}" for n in range(40_000))  # far more than a pipe holds
    task = {"id": "RQ-0001", "title": "Long", "description": long, "created_at": stamp, "updated_at": stamp}
    (checkout / QUEUE).write_text(json.dumps({"version": 1, "tasks": [task]}))
    shell = f'{sys.executable} -m ralph -C {checkout} queue show RQ-0001 | head -1; echo "${{PIPESTATUS[0]}}"'
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60)
    first, status = done.stdout.splitlines()
    assert first.startswith("id:") and first.endswith("RQ-0001")
    assert done.stderr == ""
    assert status == "141"
