"""`ralph demo`: the whole loop in a sandbox, through the real CLI, with the scripted agent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import git
from harness import archive_count
from helpers import invoke

from ralph import clock
from ralph.commands.demo import BASE, SAMPLE_TASKS
from ralph.state import Lifecycle, load_state


def test_demo_lands_every_sample_task_on_the_sandbox_origin(tmp_path: Path) -> None:
    sandbox = tmp_path / "demo"
    result = invoke("demo", "--dir", str(sandbox))
    assert result.exit_code == 0, result.output
    origin, control = sandbox / "origin.git", sandbox / "control"
    assert result.stdout.startswith(f"ralph demo: sandbox in {sandbox.resolve()}\n")
    assert f"== {BASE} on origin after " in result.stdout

    state = load_state(
        control / ".ralph" / "cache" / "parallel" / "state.json",
        now=clock.now(),
        target_branch=BASE,
        remote="origin",
    )
    ids = [f"RQ-{n:04d}" for n in range(1, len(SAMPLE_TASKS) + 1)]
    assert sorted(w.task_id for w in state.workers) == ids
    assert {w.lifecycle for w in state.workers} <= {Lifecycle.COMPLETED, Lifecycle.BLOCKED_PUSH}
    landed = [w for w in state.workers if w.lifecycle is Lifecycle.COMPLETED]
    assert len(landed) == len(SAMPLE_TASKS)  # exit 0 promises every task landed

    # Each landing is one commit on origin's base branch: the task's work and its archive together.
    subjects = git(origin, "log", "--format=%s", BASE).splitlines()
    for task_id, (title, _, _) in zip(ids, SAMPLE_TASKS, strict=True):
        assert subjects.count(f"{task_id}: {title}") == 1
        assert archive_count(origin, task_id) == 1
    for worker in landed:
        assert worker.landed_sha is not None
        git(origin, "merge-base", "--is-ancestor", worker.landed_sha, BASE)  # fails unless it is
    archived = json.loads(git(origin, "show", f"{BASE}:.ralph/done.json"))["tasks"]
    assert sorted(t["id"] for t in archived) == ids
    assert json.loads(git(origin, "show", f"{BASE}:.ralph/queue.json"))["tasks"] == []


def test_demo_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine\n")
    result = invoke("demo", "--dir", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr == f"ralph: error: --dir {tmp_path} is not empty; give a new or empty directory\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_demo_runs_unboxed_on_a_machine_without_bubblewrap_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Quickstart's first command works on a fresh machine: only the demo may do without the box."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("git", "python3", "sh"):
        found = shutil.which(name)
        assert found is not None
        (bin_dir / name).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    sandbox = tmp_path / "demo"
    result = invoke("demo", "--dir", str(sandbox))
    assert result.exit_code == 0, result.output
    assert (
        "ralph demo: running jobs without a box: bwrap is not installed; install bubblewrap" in result.stderr
    )
    assert 'mode = "none"' in (sandbox / "control" / ".ralph" / "config.toml").read_text()


def test_demo_boxes_its_jobs_where_bubblewrap_works(tmp_path: Path) -> None:
    sandbox = tmp_path / "demo"
    result = invoke("demo", "--dir", str(sandbox))
    assert result.exit_code == 0, result.output
    assert "without a box" not in result.stderr
    assert 'mode = "bwrap"' in (sandbox / "control" / ".ralph" / "config.toml").read_text()
    log = (
        sandbox / "control" / ".ralph" / "cache" / "parallel" / "runs" / "RQ-0001" / "agent.log"
    ).read_text()
    assert "(in a box)" in log
