"""Preflight (DESIGN §3.4, §7) through full ticks: every refusal is one line naming the fix, and a
refused tick starts nothing and writes nothing (no workspace, no run directory, no job, state.json
as it was)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import BASE, git
from harness import Project, live_wrappers, make_project

from ralph import clock
from ralph.bookkeeping import NotPublished
from ralph.checkout import open_checkout
from ralph.commands.task import add as add_task
from ralph.errors import GitError, PreflightError, QueueError, RalphError
from ralph.git import Git
from ralph.paths import Paths
from ralph.preflight import check_identity, check_workspace_root
from ralph.state import Lifecycle
from ralph.tick import TickOptions, run_tick


@pytest.fixture
def project(project: Project) -> Project:
    """conftest's project with one task queued on origin, and the control clone up to date."""
    project.add("A task that would start")
    pull(project)
    return project


def pull(project: Project) -> None:
    """`ralph task add` pushed the queue with plumbing; bring the control's branch up to date before
    committing anything else in it, as a person would."""
    git(project.control, "pull", "-q", "--ff-only", "origin", BASE)


def commit_staged(project: Project, message: str) -> None:
    """Commit only what is staged (commit_and_push would `git add -A` the files back)."""
    git(project.control, "commit", "-q", "-m", message)
    git(project.control, "push", "-q", "origin", f"HEAD:{BASE}")


def state_bytes(project: Project) -> bytes | None:
    path = project.paths.state
    return path.read_bytes() if path.exists() else None


def refused(project: Project, error: type[RalphError] = PreflightError, **options: object) -> str:
    """Tick, expect a refusal, prove nothing was started or written; return the message."""
    paths = project.paths
    before = state_bytes(project)
    workspaces_before = (
        sorted(p.name for p in paths.workspace_root.iterdir()) if paths.workspace_root.exists() else None
    )
    runs_before = sorted(p.name for p in paths.runs.iterdir()) if paths.runs.exists() else None
    with pytest.raises(error) as e:
        project.tick(**options)
    message = str(e.value)
    assert "\n" not in message
    assert state_bytes(project) == before
    after = sorted(p.name for p in paths.workspace_root.iterdir()) if paths.workspace_root.exists() else None
    assert after == workspaces_before
    runs_after = sorted(p.name for p in paths.runs.iterdir()) if paths.runs.exists() else None
    assert runs_after == runs_before
    assert live_wrappers(project.control) == {}
    return message


def test_no_origin_remote(project: Project) -> None:
    git(project.control, "remote", "remove", "origin")
    message = refused(project)
    assert message == (
        f"no remote 'origin' in {project.control}: "
        "add it with `git remote add origin <url>` (or set git.remote)"
    )
    assert not project.paths.workspace_root.exists()
    assert not project.paths.runs.exists()
    assert not project.paths.state.exists()


def test_origin_without_the_base_branch(project: Project) -> None:
    project.configure(git={"base_branch": "develop"})
    assert refused(project) == (
        "origin has no branch 'develop': push it, or set git.base_branch in .ralph/config.toml"
    )
    assert not project.paths.workspace_root.exists()


def test_agent_binary_not_on_path(project: Project) -> None:
    project.configure(agent={"runner": "claude", "binary": "ralph-test-no-such-agent"})
    assert refused(project) == (
        "agent runner 'claude': 'ralph-test-no-such-agent' is not an executable on PATH "
        f"({os.environ['PATH']}); "
        "install it, or set agent.binary to its absolute path"
    )


def test_ci_command_missing(project: Project) -> None:
    project.configure(ci={"command": ["ralph-test-no-such-ci", "--all"]})
    assert refused(project) == (
        f"the CI command: 'ralph-test-no-such-ci' is not an executable on PATH ({os.environ['PATH']}); "
        "install it, or set ci.command to its absolute path"
    )


def test_invalid_queue_on_origin(project: Project) -> None:
    queue = project.control / ".ralph" / "queue.json"
    queue.write_text('{"version": 1, "tasks": [\n  {"id": "RQ-0002",\n')
    project.commit_and_push("break the queue")
    message = refused(project, QueueError)
    assert message.startswith(f"origin/{BASE}:.ralph/queue.json: not valid JSON: line ")
    assert message.endswith("; fix the syntax")


def test_a_queue_invalid_by_schema_on_origin(project: Project) -> None:
    queue = project.control / ".ralph" / "queue.json"
    queue.write_text('{"version": 1, "tasks": [{"id": "RQ-0002", "status": "todo"}]}\n')
    project.commit_and_push("a task without a title")
    message = refused(project, QueueError)
    assert message.startswith(f"origin/{BASE}:.ralph/queue.json: ")
    assert "title" in message


@pytest.mark.parametrize("keep_file", [False, True], ids=["done-absent", "done-untracked"])
def test_queue_tracked_but_done_not(project: Project, keep_file: bool) -> None:
    git(project.control, "rm", "-q", *(["--cached"] if keep_file else []), ".ralph/done.json")
    commit_staged(project, "stop tracking done.json")
    assert (project.control / ".ralph" / "done.json").exists() is keep_file
    assert refused(project) == (
        f".ralph/queue.json is on origin/{BASE} but .ralph/done.json is not: ralph needs both tracked "
        "(commit and push .ralph/done.json) or both ignored (add both to .gitignore)"
    )


def test_queue_files_neither_pushed_nor_ignored(project: Project) -> None:
    git(project.control, "rm", "-q", "--cached", ".ralph/queue.json", ".ralph/done.json")
    commit_staged(project, "stop tracking the queue")
    assert (project.control / ".ralph" / "queue.json").exists()
    assert refused(project, NotPublished) == (
        f".ralph/queue.json and .ralph/done.json are not on origin/{BASE}: commit and push them "
        "(ralph init created them), or add both to .gitignore to keep the queue on this host only"
    )


def test_root_is_refused_without_allow_root(project: Project) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can be refused for being root; this run is not root")
    before = state_bytes(project)
    with pytest.raises(PreflightError) as e:
        run_tick(open_checkout(project.control), TickOptions(allow_root=False), clock.now())
    assert str(e.value) == (
        "running as root: agents would run as root too; run ralph as a dedicated user "
        "(or pass --allow-root inside a throwaway sandbox)"
    )
    assert state_bytes(project) == before
    assert not project.paths.workspace_root.exists()
    assert live_wrappers(project.control) == {}


def test_a_refused_tick_leaves_a_live_ledger_byte_for_byte(project: Project) -> None:
    """With a worker in flight, a refused tick neither reaps its finished job nor starts the next task."""
    project.add("A second task")
    pull(project)
    project.tick(workers=1)
    project.wait_for_jobs()
    assert [w.lifecycle for w in project.state().workers] == [Lifecycle.RUNNING]
    workspaces = sorted(p.name for p in project.paths.workspace_root.iterdir())
    project.configure(ci={"command": ["ralph-test-no-such-ci"]})
    refused(project)
    assert sorted(p.name for p in project.paths.workspace_root.iterdir()) == workspaces
    assert [w.lifecycle for w in project.state().workers] == [Lifecycle.RUNNING]


# --- the workspace root (DESIGN §7) -------------------------------------------------------------------


def check(control: Path, workspace_root: str) -> None:
    check_workspace_root(open_checkout(control).git(), Paths.for_root(control, workspace_root))


@pytest.mark.parametrize(
    ("ignore", "root"), [("build/", "build/workspaces"), (".ralph/workspaces/", ".ralph/workspaces")]
)
def test_workspace_root_inside_and_ignored(control: Path, ignore: str, root: str) -> None:
    (control / ".gitignore").write_text(f"{ignore}\n")
    before = git(control, "status", "--porcelain", "--untracked-files=all", "--ignored")
    check(control, root)  # accepted: no PreflightError
    # Read-only: the probe path it asks git about is not created.
    assert git(control, "status", "--porcelain", "--untracked-files=all", "--ignored") == before
    assert not (control / root).exists()
    # It is the ignore line that makes the root acceptable.
    (control / ".gitignore").write_text("")
    with pytest.raises(PreflightError, match="inside the repository but not gitignored"):
        check(control, root)


def test_workspace_root_inside_and_not_ignored(control: Path) -> None:
    with pytest.raises(PreflightError) as e:
        check(control, "work/trees")
    assert str(e.value) == (
        "parallel.workspace_root work/trees is inside the repository but not gitignored, so workspaces "
        "could be committed; move parallel.workspace_root outside the repository, or add `work/trees/` "
        "to .gitignore (or .git/info/exclude)"
    )


def test_workspace_root_outside_the_repository(control: Path, tmp_path: Path) -> None:
    # Nothing ignores it, and nothing needs to: git never sees a directory outside the repository.
    assert not (control / ".gitignore").exists()
    elsewhere = tmp_path / "elsewhere" / "workspaces"
    check(control, str(elsewhere))  # accepted: no PreflightError
    assert not elsewhere.parent.exists()  # checked, not created
    # The same directory name inside the repository is refused.
    with pytest.raises(PreflightError, match="inside the repository but not gitignored"):
        check(control, "elsewhere/workspaces")


def test_workspace_root_equal_to_or_above_the_repository_root(control: Path) -> None:
    (control / ".gitignore").write_text("*\n")  # even with everything ignored
    for spelling, resolved in (
        (".", control),
        (str(control), control),
        ("sub/..", control),
        ("..", control.parent),
    ):
        with pytest.raises(PreflightError) as e:
            check(control, spelling)
        message = str(e.value)
        assert message == (
            f"parallel.workspace_root {resolved.resolve()} is the repository or contains it; "
            "use a directory of its own, outside the repository or in an ignored subdirectory such as "
            ".ralph/workspaces"
        )


def test_workspace_root_ignored_only_through_info_exclude(control: Path) -> None:
    with pytest.raises(PreflightError):
        check(control, "trees")
    with open(control / ".git" / "info" / "exclude", "a") as f:
        f.write("trees/\n")
    check(control, "trees")


def test_a_tick_refuses_a_workspace_root_that_is_not_ignored(project: Project) -> None:
    project.configure(parallel={"workspace_root": "work/trees"})
    message = refused(project)
    assert message.startswith(
        "parallel.workspace_root work/trees is inside the repository but not gitignored"
    )
    assert not (project.control / "work").exists()


def test_a_tick_uses_a_workspace_root_ignored_through_info_exclude(project: Project) -> None:
    project.configure(parallel={"workspace_root": "work/trees"})
    with open(project.control / ".git" / "info" / "exclude", "a") as f:
        f.write("work/trees/\n")
    project.tick()
    project.wait_for_jobs()  # the job makes the workspace, then the agent works in it
    (worker,) = project.state().workers
    assert worker.lifecycle is Lifecycle.RUNNING
    assert worker.workspace_path == str(project.control / "work" / "trees" / worker.task_id)
    assert git(Path(worker.workspace_path), "rev-parse", f"origin/{BASE}") == git(
        project.control, "rev-parse", f"origin/{BASE}"
    )
    assert git(project.control, "status", "--porcelain") == ""


def test_a_tick_uses_a_workspace_root_outside_the_repository(project: Project, tmp_path: Path) -> None:
    outside = tmp_path / "trees"
    project.configure(parallel={"workspace_root": str(outside)})
    project.tick()
    (worker,) = project.state().workers
    assert worker.lifecycle is Lifecycle.RUNNING
    assert worker.workspace_path == str(outside / worker.task_id)


# --- untracked mode --------------------------------------------------------------------------------


def test_untracked_mode_reads_the_working_tree_and_starts_the_task(origin: Path, control: Path) -> None:
    project = make_project(origin, control)
    git(control, "rm", "-q", "--cached", ".ralph/queue.json", ".ralph/done.json")
    with open(control / ".gitignore", "a") as f:
        f.write(".ralph/queue.json\n.ralph/done.json\n")
    project.commit_and_push("keep the queue on this host")
    add_task(start=control, title="Local task", description=None, depends_on=[], priority="medium")
    assert git(control, "ls-tree", "--name-only", f"origin/{BASE}", ".ralph/") == ".ralph/config.toml"
    assert "Local task" in (control / ".ralph" / "queue.json").read_text()

    project.tick()
    project.wait_for_jobs()

    (worker,) = project.state().workers
    assert worker.task_id == "RQ-0001"
    assert worker.lifecycle is Lifecycle.RUNNING
    assert Path(worker.workspace_path).is_dir()
    assert "Local task" in (project.paths.run_dir("RQ-0001") / "prompt.md").read_text()


def test_a_git_that_fails_otherwise_is_not_called_a_missing_identity(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only git's "no identity" (exit 128) is reported as one; any other failure of `git var` is git's
    own trouble, told as it is."""
    real = shutil.which("git")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fail_var = '[ "$1" = var ] && { echo "fatal: out of memory" >&2; exit 1; }'
    (bin_dir / "git").write_text(f'#!/bin/sh\n{fail_var}\nexec {real} "$@"\n')
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with pytest.raises(GitError, match="out of memory") as raised:
        check_identity(Git(repo))
    assert not isinstance(raised.value, PreflightError)
