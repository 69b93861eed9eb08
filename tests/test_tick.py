"""The tick end to end: real origin and control clone, real detached jobs, the scripted agent."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import BASE, git
from harness import Project, all_landed, make_project, same_code

import ralph.crew as crew_module
from ralph.cli import cli
from ralph.commands.task import add as add_task
from ralph.state import Lifecycle, State


@pytest.fixture
def project(origin: Path, control: Path) -> Project:
    return make_project(origin, control)


def test_six_tasks_three_workers_land_verified_commits(project: Project) -> None:
    """Ticks from a loop take independent tasks to CI-verified commits on main: at most 3 agents and 3
    gates at once (ci.max_parallel defaults to --workers), each task one commit with its bookkeeping."""
    ids = [project.add(f"Task number {n}") for n in range(1, 7)]
    most_agents = 0

    def capped(state: State) -> None:
        nonlocal most_agents
        agents = [w.task_id for w in state.workers if w.lifecycle in Lifecycle.agents()]
        gates = [w.task_id for w in state.workers if w.lifecycle is Lifecycle.CHECKING]
        most_agents = max(most_agents, len(agents))
        assert len(agents) <= 3, agents
        assert len(gates) <= 3, gates

    state = project.run_until(all_landed(6), every=capped, workers=3)
    assert most_agents == 3  # the cap was reached, not just respected by starting little
    for worker in state.workers:
        assert worker.landed_sha is not None and worker.verified_sha is not None
        # What landed is the gated tree plus the task's own queue/done change, as one commit.
        assert same_code(project, worker.verified_sha, worker.landed_sha)
        message = git(project.origin, "log", "-1", "--format=%B", worker.landed_sha)
        assert message.splitlines()[0] == f"{worker.task_id}: Task number {int(worker.task_id[-1])}"
        assert f"ralph: archive {worker.task_id}" in message
        assert project.origin_file(f"tasks/{worker.task_id}.md") == f"# Task number {int(worker.task_id[-1])}"
        assert not Path(worker.workspace_path).exists()  # landed: the workspace is gone
    # Queue order: the first three started first, in order; the rest as slots freed.
    started = [e["task_id"] for e in project.events() if e["event"] == "running"]
    assert started == ids
    assert project.origin_tasks("queue") == []
    assert sorted(t["id"] for t in project.origin_tasks("done")) == ids
    assert len(project.origin_log()) == 1 + 6 + 1 + 6  # seed, 6 task adds, configure, 6 landings


def test_a_dependent_task_waits_until_its_dependency_landed(project: Project) -> None:
    first = project.add("Base work")
    second = project.add("Builds on it", depends_on=[first])
    project.run_until(all_landed(2))
    events = [(e["task_id"], e["event"]) for e in project.events()]
    assert events.index((second, "running")) > events.index((first, "completed"))
    # The dependent task started from a base that already had the first task's work.
    second_worker = project.worker(second)
    assert (
        git(
            project.origin,
            "merge-base",
            "--is-ancestor",
            project.worker(first).landed_sha or "",
            second_worker.base_sha or "",
        )
        == ""
    )


def add(project: Project, title: str, description: str | None = None) -> None:
    """`ralph task add` without the harness's look at origin (which assumes the remote's name)."""
    add_task(start=project.control, title=title, description=description, depends_on=[], priority="medium")


def test_a_remote_not_named_origin_lands_and_keeps_unlanded_work(project: Project) -> None:
    project.configure(git={"remote": "upstream"}, agent={"max_attempts": 1, "max_remediations": 0})
    git(project.control, "remote", "rename", "origin", "upstream")
    add(project, "Leave a note", "scripted-agent: write notes.md FIXME")  # fails the CI gate
    add(project, "Lands")
    state = project.run_until(
        lambda s: len(s.workers) == 2 and all(w.lifecycle in Lifecycle.terminal() for w in s.workers)
    )
    failed, landed = state.worker("RQ-0001"), state.worker("RQ-0002")
    assert failed is not None and landed is not None
    assert (failed.lifecycle, landed.lifecycle) == (Lifecycle.FAILED, Lifecycle.COMPLETED)
    assert git(project.origin, "rev-parse", BASE) == landed.landed_sha
    result = CliRunner().invoke(cli, ["-C", str(project.control), "discard", "RQ-0001"])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "RQ-0001 discarded; its work is kept as refs/ralph/attic/RQ-0001-1; parked as a draft in the queue, "
        "so no tick starts it again: `ralph task edit RQ-0001 --status todo` queues it again; "
        # Its attempt was counted on the remote when it started: the discard clears that record.
        "its record on upstream (1 attempt) is cleared for every host\n"
    )
    assert git(project.control, "rev-parse", "refs/ralph/attic/RQ-0001-1") == failed.head_sha


def test_commits_are_by_the_identity_the_control_repository_configures(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Set only in the control repository's own config, as `git config user.email` without --global does."""
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.delenv(f"GIT_{role}_NAME")
        monkeypatch.delenv(f"GIT_{role}_EMAIL")
    (Path(os.environ["HOME"]) / ".gitconfig").write_text("[commit]\n\tgpgsign = false\n")
    git(project.control, "config", "user.name", "Repo Local")
    git(project.control, "config", "user.email", "local@example.com")
    add(project, "Leave it to ralph", "scripted-agent: write notes.md hello\nscripted-agent: uncommitted")
    state = project.run_until(all_landed(1))
    landed = state.workers[0].landed_sha or ""
    who = git(project.origin, "log", "-1", "--format=%an <%ae>|%cn <%ce>", landed)
    assert who == "Repo Local <local@example.com>|Repo Local <local@example.com>"


def test_a_missing_identity_fails_the_tick_before_any_agent_starts(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As under cron with a HOME that has no ~/.gitconfig: refused at preflight, every attempt kept."""
    task = add(project, "Anything")
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.delenv(f"GIT_{role}_NAME")
        monkeypatch.delenv(f"GIT_{role}_EMAIL")
    (Path(os.environ["HOME"]) / ".gitconfig").write_text("[user]\n\tuseConfigOnly = true\n")
    result = project.tick_process()
    assert result.returncode == 1
    assert "git has no author identity for ralph's commits" in result.stderr
    assert "git config user.name" in result.stderr
    assert project.state().worker(task) is None  # nothing started, no attempt spent


def test_a_tick_reads_the_queue_at_the_sha_it_fetched(
    project: Project, clone: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ralph task add` fetches into the control repository without the tick lock. When it moved the
    remote-tracking ref between the tick's fetch and its read of the queue, the tick read a queue newer
    than the base it works on: here it started a task that base does not have."""
    first = project.add("On the base the tick fetched")
    other = clone("other")
    real_fetch = crew_module.fetch_base

    def fetch_then_the_ref_moves(*args: Any, **kwargs: Any) -> str:
        fetched = real_fetch(*args, **kwargs)
        # Another fetch moves the ref to a commit whose queue has one more task (made on another clone
        # and not pushed, so that the remote, which the tick asks again before it starts anything, has
        # not moved: only the ref did).
        added = CliRunner().invoke(cli, ["-C", str(other), "task", "add", "--no-push", "Added meanwhile"])
        assert added.exit_code == 0, added.output
        git(other, "commit", "-q", "-am", "a task added meanwhile")
        git(project.control, "fetch", "-q", str(other), "HEAD")
        git(project.control, "update-ref", f"refs/remotes/origin/{BASE}", "FETCH_HEAD")
        return fetched

    monkeypatch.setattr(crew_module, "fetch_base", fetch_then_the_ref_moves)
    project.tick()
    assert [w.task_id for w in project.state().workers] == [first]
