"""Taking over from the Rust ralph, and the defects a new user met: v3 state files loaded as the Rust
ralph loads them, its workers' work kept, its running coordinator respected, and the rest."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import BASE, git
from harness import Project, make_project, wait_until
from helpers import ralph

from ralph.checkout import open_checkout
from ralph.cli import cli
from ralph.clock import now as read_clock
from ralph.config import HooksConfig
from ralph.errors import LockBusy, PreflightError
from ralph.ledger import Ledger
from ralph.state import Lifecycle, load_state
from ralph.tick import TickOptions, run_tick

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def v3(*workers: dict[str, object], target: str = "main", comments: bool = False) -> bytes:
    doc = {
        "schema_version": 3,
        "started_at": "2026-02-20T00:00:00Z",
        "target_branch": target,
        "workers": list(workers),
    }
    text = json.dumps(doc, indent=2)
    if comments:  # the Rust ralph reads its state as JSONC
        text = (
            "// written by hand\n" + text.replace('"workers": [', '"workers": [ /* one */').rstrip("}") + ",}"
        )
    return text.encode()


# --- v3 files, as the Rust ralph loads them -------------------------------------------------------------


def test_a_v3_record_without_lifecycle_comments_and_offsets_loads(tmp_path: Path) -> None:
    """All three once made the whole file "corrupt" (and a tick a minute copied it aside)."""
    path = tmp_path / "state.json"
    record = {
        "task_id": "RQ-0001",
        "workspace_path": str(tmp_path / "gone"),
        "started_at": "2026-02-20T02:00:00+02:00",
    }
    finished = {
        "task_id": "RQ-0002",
        "workspace_path": str(tmp_path / "gone2"),
        "lifecycle": "completed",
        "started_at": "2026-02-20T01:00:00.123456789-05:00",
        "completed_at": "not a time",
        "unknown": "ignored, as there",
    }
    path.write_bytes(v3(record, finished, comments=True))
    state = load_state(path, now=NOW, target_branch="main", remote="origin", under_lock=True)
    lost, landed = state.workers
    # No lifecycle is `running` to the Rust ralph: a job v3 cannot tell is alive, so lost.
    assert (lost.lifecycle, lost.next_attempt_at, lost.started_at) == (
        Lifecycle.FAILED,
        NOW,
        datetime(2026, 2, 20, tzinfo=UTC),
    )
    assert landed.lifecycle is Lifecycle.COMPLETED
    assert landed.started_at == datetime(2026, 2, 20, 6, 0, 0, 123456, tzinfo=UTC)
    assert landed.completed_at == landed.started_at  # unreadable: it ages from its start
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # nothing quarantined


def test_a_v3_file_without_a_target_branch_takes_the_configured_one(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(v3(target=""))
    assert load_state(path, now=NOW, target_branch="trunk", remote="origin").target_branch == "trunk"


def test_a_v3_worker_whose_workspace_is_still_there_is_kept_for_a_person(tmp_path: Path) -> None:
    workspace = tmp_path / "rust-workspaces" / "RQ-0001"
    workspace.mkdir(parents=True)
    path = tmp_path / "state.json"
    path.write_bytes(
        v3(
            {
                "task_id": "RQ-0001",
                "workspace_path": str(workspace),
                "lifecycle": "running",
                "started_at": "2026-02-20T00:00:00Z",
            }
        )
    )
    (worker,) = load_state(path, now=NOW, target_branch="main", remote="origin").workers
    assert worker.lifecycle is Lifecycle.BLOCKED_PUSH  # never pruned, never deleted by a tick
    assert worker.last_error is not None and worker.last_error.startswith(
        "migrated from the Rust ralph (running when the Rust ralph stopped); "
        "its workspace may hold unlanded work"
    )
    assert "`ralph retry RQ-0001`" in worker.last_error


# --- its workers' workspaces: nothing lost ----------------------------------------------------------------


@pytest.fixture
def migrated(origin: Path, control: Path, tmp_path: Path) -> tuple[Project, Path, str]:
    """A project with RQ-0001 queued, and a Rust v3 state whose worker on it left a workspace outside
    ralph's workspace root holding a commit that never landed."""
    project = make_project(origin, control)
    task = project.add("Carried over")
    workspace = tmp_path / "rust-workspaces" / task
    git(tmp_path, "clone", "-q", str(control), str(workspace))
    (workspace / "work.txt").write_text("half done\n")
    git(workspace, "add", "work.txt")
    git(workspace, "commit", "-q", "-m", f"{task}: half done")
    head = git(workspace, "rev-parse", "HEAD")
    record = {
        "task_id": task,
        "workspace_path": str(workspace),
        "lifecycle": "running",
        "started_at": "2026-02-20T00:00:00Z",
    }
    project.paths.state.parent.mkdir(parents=True, exist_ok=True)
    project.paths.state.write_bytes(v3(record))
    return project, workspace, head


def test_retry_saves_the_commits_to_the_attic_as_it_says(migrated: tuple[Project, Path, str]) -> None:
    """`retry` promised an attic copy it never made."""
    project, workspace, head = migrated
    result = ralph(project.control, "retry", "RQ-0001")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "RQ-0001 starts over on the next tick; its earlier work is kept as refs/ralph/attic/RQ-0001-1; "
        f"{workspace} is outside the workspace root and is left in place\n"
    )
    assert git(project.control, "rev-parse", "refs/ralph/attic/RQ-0001-1") == head
    assert (workspace / "work.txt").exists()


def test_discard_keeps_the_work_and_deletes_nothing_outside_the_workspace_root(
    migrated: tuple[Project, Path, str],
) -> None:
    """`discard` deleted a directory outside the workspace root, which the tick itself refuses to do;
    and the next tick started the task again at attempt 1."""
    project, workspace, head = migrated
    result = ralph(project.control, "discard", "RQ-0001")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "RQ-0001 discarded; its work is kept as refs/ralph/attic/RQ-0001-1; its workspace "
        f"{workspace} is outside the workspace root and was left in place; parked as a draft in the "
        "queue, so no tick starts it again: `ralph task edit RQ-0001 --status todo` queues it again\n"
    )
    assert git(project.control, "rev-parse", "refs/ralph/attic/RQ-0001-1") == head
    assert workspace.is_dir()
    assert [t["status"] for t in project.origin_tasks("queue")] == ["draft"]
    project.tick()
    assert project.state().workers == []  # not started again
    assert ralph(project.control, "task", "edit", "RQ-0001", "--status", "todo").exit_code == 0
    project.tick()
    assert project.worker("RQ-0001").lifecycle is Lifecycle.RUNNING


def test_hooks_hear_the_base_branch_even_from_a_migrated_state(project: Project, tmp_path: Path) -> None:
    """on_event hooks got an empty RALPH_BASE_BRANCH when the state file (a Rust one) named none."""
    seen = tmp_path / "env.txt"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "[$RALPH_BASE_BRANCH]" > {seen}\n')
    hook.chmod(0o755)
    paths = project.paths
    paths.state.parent.mkdir(parents=True, exist_ok=True)
    paths.state.write_bytes(
        v3(
            {
                "task_id": "RQ-0001",
                "workspace_path": "",
                "lifecycle": "blocked_push",
                "started_at": "2026-02-20T00:00:00Z",
            },
            target="",
        )
    )
    ledger = Ledger.load(
        paths, now=read_clock(), target_branch=BASE, remote="origin", hooks=HooksConfig(on_event=[str(hook)])
    )
    worker = ledger.state.workers[0]
    ledger.fail(worker, "given up", retry_after=None)
    ledger.save()
    wait_until(seen.exists, message="the hook ran")
    wait_until(lambda: seen.read_text() != "", message="the hook wrote")
    assert seen.read_text() == f"[{BASE}]\n"


# --- a running Rust coordinator ---------------------------------------------------------------------------


@pytest.fixture
def project(origin: Path, control: Path) -> Project:
    return make_project(origin, control)


def rust_lock(project: Project, pid: int, since: datetime) -> Path:
    lock = project.control / ".ralph" / "lock"
    lock.mkdir()
    (lock / "owner").write_text(
        f"pid: {pid}\nstarted_at: {since.strftime('%Y-%m-%dT%H:%M:%S.%f000Z')}\n"
        "command: ralph run loop --parallel 2\nlabel: run loop\n"
    )
    return lock


def tick(project: Project) -> None:
    run_tick(open_checkout(project.control), TickOptions(allow_root=True), read_clock())


def test_a_live_rust_coordinator_is_respected(project: Project) -> None:
    """Its lock was not noticed, so its workers could be started a second time."""
    project.add("Wanted by both")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = rust_lock(project, sleeper.pid, datetime.now(UTC))
        with pytest.raises(LockBusy) as caught:
            tick(project)
        assert str(caught.value).startswith(f"the Rust ralph's lock {lock} is held by pid {sleeper.pid}")
        assert project.state().workers == []
        result = ralph(project.control, "task", "add", "Local", "--no-push")
        assert result.exit_code == 75  # the Rust coordinator would overwrite a working-tree edit
        assert "a Rust ralph is working on this queue" in result.stderr
    finally:
        sleeper.kill()
        sleeper.wait()
    # Gone: its lock is stale, as the Rust ralph itself would judge it, and the tick goes on.
    tick(project)
    assert project.worker("RQ-0001").lifecycle is Lifecycle.RUNNING


def test_a_pid_reused_by_a_younger_process_is_a_stale_lock(project: Project) -> None:
    project.add("Wanted")
    rust_lock(project, os.getpid(), datetime.now(UTC) - timedelta(days=400))  # we started after it
    tick(project)
    assert project.worker("RQ-0001").lifecycle is Lifecycle.RUNNING


def test_a_lock_nobody_can_read_stops_the_tick_with_the_fix(project: Project) -> None:
    lock = project.control / ".ralph" / "lock"
    lock.mkdir()
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with pytest.raises(
        PreflightError, match=r"exists but names no process ralph can check .* remove the directory"
    ):
        tick(project)


# --- the rest of the new user's list ----------------------------------------------------------------------


def test_a_tick_before_init_says_run_init(control: Path) -> None:
    """It gave a hint about .gitignore instead."""
    result = subprocess.run(
        [sys.executable, "-m", "ralph", "-C", str(control), "run", "--allow-root"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"ralph: error: {control} is not set up for ralph (no .ralph/config.toml and no queue file): "
        "run `ralph init` there, commit and push what it creates\n"
    )


def test_a_second_pause_keeps_the_first_reason(checkout: Path) -> None:
    assert ralph(checkout, "pause", "--reason", "release freeze").exit_code == 0
    again = ralph(checkout, "pause")
    assert "paused since " in again.stdout and ": release freeze (it was already paused)" in again.stdout
    third = ralph(checkout, "pause", "--reason", "CI is down")
    assert ": release freeze; CI is down (it was already paused)" in third.stdout


def test_explain_does_not_call_a_task_runnable_while_paused(checkout: Path) -> None:
    assert ralph(checkout, "task", "add", "Waits").exit_code == 0
    assert ralph(checkout, "pause", "--reason", "freeze").exit_code == 0
    result = ralph(checkout, "queue", "explain")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("paused since ") and lines[0].endswith(
        ": freeze; no task starts until `ralph resume`"
    )
    assert "runnable, but ralph is paused since" in lines[2]
    doc = json.loads(ralph(checkout, "queue", "explain", "--json").stdout)
    assert doc["paused"].endswith(": freeze") and doc["tasks"][0]["runnable"] is False


def test_the_documented_cron_line_logs_an_error_once(origin: Path, tmp_path: Path) -> None:
    """`--log-file X ... >>X 2>&1` wrote every error twice into the same log."""
    crontab = (Path(__file__).resolve().parent.parent / "contrib" / "cron" / "ralph.crontab").read_text()
    entry = next(line for line in crontab.splitlines() if line.startswith("* * * * *"))
    command = entry.split(None, 5)[5].replace('"$HOME/src/app"', str(tmp_path / "app"))
    command = command.replace("ralph --log-file", f"{sys.executable} -m ralph --log-file")
    checkout = tmp_path / "app"
    git(tmp_path, "clone", "-q", str(origin), str(checkout))
    project = make_project(origin, checkout)
    (checkout / ".ralph" / "queue.json").write_text("{ broken")
    project.commit_and_push("break the queue")
    done = subprocess.run(
        ["/bin/sh", "-c", command.replace(" run ", " run --allow-root ")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1  # ralph's own exit (flock -E 0 only concerns a skipped tick)
    log = (checkout / ".ralph" / "cache" / "ralph.log").read_text()
    assert log.count("not valid JSON") == 1, (log, done.stdout, done.stderr)


def test_every_queue_command_in_cli_help(checkout: Path) -> None:
    flat = " ".join(CliRunner().invoke(cli, ["task", "--help"]).stdout.split())
    for name in ("add", "edit", "rm", "done", "reject", "move"):
        assert f" {name} " in flat
    flat = " ".join(CliRunner().invoke(cli, ["queue", "--help"]).stdout.split())
    for name in ("import", "sort", "validate"):
        assert f" {name} " in flat


def test_every_document_a_message_points_to_exists() -> None:
    """Two messages pointed to documents that do not exist ("DESIGN §8", "README: 'State file'")."""
    root = Path(__file__).resolve().parent.parent
    headings = re.findall(r"^#+ (.+)$", (root / "README.md").read_text(), re.M)
    for path in sorted((root / "ralph").rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) else None
            if not isinstance(text, str) or id(node) in docstrings:
                continue
            assert "DESIGN" not in text, (path, node.lineno)  # not shipped with ralph
            for named in re.findall(r"README: '([^']+)'", text):
                assert any(named in heading for heading in headings), (path, node.lineno, named)
