"""Task ids are checked before they become a path, a ref name or a log line; Paths resolves the layout."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ralph.errors import QueueError, TaskIdError
from ralph.paths import MAX_ID_LENGTH, Paths, check_task_id

GOOD_IDS = ["RQ-0001", "abc.def_1", "a", "A_b.c", "a-", "x.lock-1", "a.lock.b", "9" * MAX_ID_LENGTH]


@pytest.mark.parametrize("task_id", GOOD_IDS)
def test_accepts_safe_ids(task_id: str) -> None:
    assert check_task_id(task_id) == task_id


@pytest.mark.parametrize("task_id", GOOD_IDS)
def test_every_accepted_id_is_a_valid_git_ref_component(task_id: str) -> None:
    # The id names refs/ralph/claims/<id> and refs/ralph/attic/<id>-<n>; git itself is the judge.
    for ref in (f"refs/ralph/claims/{task_id}", f"refs/ralph/attic/{task_id}-1"):
        result = subprocess.run(["git", "check-ref-format", ref], capture_output=True)
        assert result.returncode == 0, ref


@pytest.mark.parametrize(
    ("task_id", "problem"),
    [
        ("", "it is empty"),
        ("../x", "it contains a path separator"),
        ("RQ-1/..", "it contains a path separator"),
        ("a\\b", "it contains a path separator"),
        ("-rf", "it starts with '-' and would be read as an option"),
        ("a\x00b", "it contains a NUL byte"),
        ("a\nb", "it contains a control character"),
        ("a\tb", "it contains a control character"),
        ("a\u202eb", "it contains a control character"),  # right-to-left override: hides text in logs
        (".hidden", "it starts with '.'"),
        ("..", "it contains '..'"),
        ("a..b", "it contains '..'"),
        ("x.lock", "it ends with '.lock', which git refuses in ref names"),
        ("abc.", "it ends with '.', which git refuses in ref names"),
        ("a b", "it contains ' '; only letters, digits, '.', '_' and '-' are allowed"),
        ("ü", "it contains 'ü'; only letters, digits, '.', '_' and '-' are allowed"),
        ("RQ@{1}", "it contains '@'; only letters, digits, '.', '_' and '-' are allowed"),
        ("a" * (MAX_ID_LENGTH + 1), f"it is longer than {MAX_ID_LENGTH} characters"),
    ],
)
def test_rejects_unsafe_ids_saying_why(task_id: str, problem: str) -> None:
    with pytest.raises(TaskIdError) as info:
        check_task_id(task_id)
    message = str(info.value)
    assert message == f"task id {task_id!r} is not allowed: {problem}; task ids look like RQ-0001"
    assert "\n" not in message and "\x00" not in message  # repr keeps the message one printable line


def test_an_id_ending_in_a_dot_is_refused_because_git_refuses_the_ref() -> None:
    # Regression: "abc." passed the check, then `git update-ref refs/ralph/claims/abc.` would have failed.
    assert subprocess.run(["git", "check-ref-format", "refs/ralph/claims/abc."]).returncode != 0
    with pytest.raises(TaskIdError, match="ends with '.'"):
        check_task_id("abc.")


def test_a_huge_id_is_shortened_in_the_message() -> None:
    with pytest.raises(TaskIdError) as info:
        check_task_id("A" * 10_000)
    message = str(info.value)
    assert len(message) < 200
    assert message.startswith("task id 'AAAA") and "...'" in message
    assert f"longer than {MAX_ID_LENGTH} characters" in message


def test_a_non_string_id_is_not_called_empty() -> None:
    with pytest.raises(TaskIdError, match="it is not a string but int"):
        check_task_id(7)  # type: ignore[arg-type]


def test_task_id_error_is_a_queue_error() -> None:
    # The CLI maps RalphError subclasses to exit 1 with one line; a bad id in the queue is a queue problem.
    assert issubclass(TaskIdError, QueueError)


@pytest.mark.parametrize("task_id", ["../x", "RQ-1/..", "", "-rf", "a\x00b"])
def test_run_dir_and_workspace_refuse_unsafe_ids(tmp_path: Path, task_id: str) -> None:
    paths = Paths.for_root(tmp_path)
    with pytest.raises(TaskIdError):
        paths.run_dir(task_id)
    with pytest.raises(TaskIdError):
        paths.workspace(task_id)


def test_run_dir_and_workspace_for_a_good_id(tmp_path: Path) -> None:
    paths = Paths.for_root(tmp_path)
    assert paths.run_dir("RQ-0001") == tmp_path / ".ralph/cache/parallel/runs/RQ-0001"
    assert paths.workspace("RQ-0001") == tmp_path / ".ralph/workspaces/RQ-0001"


def test_layout(tmp_path: Path) -> None:
    paths = Paths.for_root(tmp_path)
    assert paths.state == tmp_path / ".ralph/cache/parallel/state.json"
    assert paths.lock == tmp_path / ".ralph/cache/parallel/state.json.lock"
    assert paths.events == tmp_path / ".ralph/cache/parallel/events.jsonl"
    assert paths.config == tmp_path / ".ralph/config.toml"


def test_workspace_root_relative_is_under_the_repository(tmp_path: Path) -> None:
    paths = Paths.for_root(tmp_path, "build/ws")
    assert paths.workspace_root == tmp_path / "build/ws"
    assert paths.workspace("RQ-0002") == tmp_path / "build/ws/RQ-0002"


def test_workspace_root_absolute_is_kept(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    paths = Paths.for_root(tmp_path / "repo", str(elsewhere))
    assert paths.workspace_root == elsewhere


def test_workspace_root_tilde_is_the_home_directory(tmp_path: Path) -> None:
    home = Path.home()  # the hermetic fixture points HOME at a temporary directory
    assert home != tmp_path
    paths = Paths.for_root(tmp_path, "~/ralph-ws")
    assert paths.workspace_root == home / "ralph-ws"
    assert Paths.for_root(tmp_path, "~").workspace_root == home


def test_queue_file_prefers_json_and_reads_jsonc_alone(tmp_path: Path) -> None:
    paths = Paths.for_root(tmp_path)
    assert paths.queue_file() == tmp_path / ".ralph/queue.json"
    paths.ralph_dir.mkdir()
    (paths.ralph_dir / "queue.jsonc").write_text("{}")
    assert paths.queue_file() == tmp_path / ".ralph/queue.jsonc"
    (paths.ralph_dir / "queue.json").write_text("{}")
    with pytest.raises(QueueError, match="keep one of them"):
        paths.queue_file()
