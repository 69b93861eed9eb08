"""Self-healing git state: whatever a killed tick left, the next tick repairs first, with no network.

Each test leaves what a SIGKILL at one instruction leaves (a crash point, a hand-made wedge, or a kill
at a random moment) and proves the next tick repairs it before anything fails on it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BASE, git
from harness import Project, all_landed, archive_count

from ralph import repair


def tick_process(
    project: Project, *, env: dict[str, str] | None = None, scratch_replay: bool = False
) -> subprocess.CompletedProcess[str]:
    """`ralph run` in its own process; `scratch_replay` makes it replay the way git < 2.38 must."""
    prelude = "import ralph.replay as r; r._FORCE_SCRATCH = True; " if scratch_replay else ""
    code = prelude + "import sys; from ralph.entry import main; main()"
    argv = [sys.executable, "-c", code, "-C", str(project.control), "run", "--allow-root"]
    return subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120
    )


def leftovers(project: Project) -> list[str]:
    """ralph's own git state a tick must not leave behind once it finished."""
    found = [str(p) for p in project.paths.scratch.iterdir()] if project.paths.scratch.exists() else []
    found += git(project.control, "for-each-ref", "--format=%(refname)", "refs/ralph/incoming/").split()
    return found


def test_a_wedged_rebase_worktree_is_repaired_before_the_fetch(project: Project) -> None:
    """The wedge a kill inside `git worktree add` left under older ralph: a locked entry whose HEAD is
    forty zeros, which made every fetch fail and which `git worktree prune` skips."""
    task = project.add("Work")
    scratch = project.control / ".ralph" / "cache" / "rebase" / task
    scratch.parent.mkdir(parents=True)
    git(project.control, "worktree", "add", "-q", "--detach", str(scratch), "HEAD")
    entry = project.control / ".git" / "worktrees" / task
    (entry / "locked").write_text("initializing\n")
    (entry / "HEAD").write_text("0" * 40 + "\n")
    wedged = subprocess.run(["git", "fetch", "origin"], cwd=project.control, capture_output=True, text=True)
    assert "did not send all necessary objects" in wedged.stderr  # the wedge is real
    state = project.run_until(all_landed(1))
    assert not entry.exists() and not scratch.exists()
    assert state.workers[0].landed_sha == git(project.origin, "rev-parse", BASE)


def test_a_persons_own_worktree_is_left_alone(project: Project, tmp_path: Path) -> None:
    mine = tmp_path / "my-worktree"
    git(project.control, "worktree", "add", "-q", "--detach", str(mine), "HEAD")
    assert repair.repair(project.paths) == []
    assert mine.is_dir() and (project.control / ".git" / "worktrees" / "my-worktree").is_dir()


@pytest.mark.parametrize("point", ["mid-commit", "mid-import", "mid-bookkeeping"])
def test_a_crash_inside_a_git_step_is_repaired_by_the_next_tick(project: Project, point: str) -> None:
    if point == "mid-bookkeeping":
        # A squashed chain is one fast-import; a commit at a time (and its temporary index) is this.
        project.configure(landing={"squash": False})
    task = project.add("Work", description="scripted-agent: write a.txt a\nscripted-agent: uncommitted")
    crashed = False
    deadline = time.monotonic() + 90
    while not crashed:
        result = tick_process(project, env={"RALPH_CRASHPOINT": point})
        crashed = result.returncode == 137
        assert result.returncode in (0, 137), result.stderr
        project.wait_for_jobs()
        assert time.monotonic() < deadline, f"the tick never reached {point}"
    assert leftovers(project)  # the kill left something of ralph's in place
    state = project.run_until(all_landed(1))
    assert leftovers(project) == []
    assert state.workers[0].landed_sha == git(project.origin, "rev-parse", BASE)
    assert f"{task}: Work" in project.origin_log()


def test_a_crash_inside_a_scratch_replay_is_repaired(project: Project) -> None:
    """git older than 2.38 replays in a scratch clone; a kill there leaves it for the next tick. (The
    second task deletes a file: a merge the train cannot foresee, so it replays.)"""
    first = project.add("First", description="scripted-agent: write a.txt a")
    second = project.add(
        "Second", description="scripted-agent: run rm README.md\nscripted-agent: write b.txt b"
    )
    deadline = time.monotonic() + 120
    while True:  # until the second landing's replay meets the crash point
        result = tick_process(project, env={"RALPH_CRASHPOINT": "mid-replay"}, scratch_replay=True)
        assert result.returncode in (0, 137), result.stderr
        if result.returncode == 137:
            break
        project.wait_for_jobs()
        assert time.monotonic() < deadline, "no replay happened"
    assert [p.name.split("-", 1)[1] for p in project.paths.scratch.iterdir()][0].startswith("replay-")
    while not all_landed(2)(project.state()):
        result = tick_process(project, scratch_replay=True)
        assert result.returncode == 0, result.stderr
        project.wait_for_jobs()
        assert time.monotonic() < deadline + 60, "did not land"
    assert leftovers(project) == []
    assert {f"{first}: First", f"{second}: Second"} <= set(project.origin_log())


def test_stale_lock_files_are_removed_and_live_ones_kept(project: Project) -> None:
    dot_git = project.control / ".git"
    ours = dot_git / "refs" / "ralph" / "attic" / "RQ-0001-1.lock"
    ours.parent.mkdir(parents=True)
    ours.write_text("")  # fresh, but under refs/ralph/: only ralph, under the tick lock, makes these
    old = dot_git / "index.lock"
    old.write_text("")
    os.utime(old, (time.time() - 600, time.time() - 600))
    fresh = dot_git / "refs" / "remotes" / "origin" / "main.lock"
    fresh.write_text("")  # a person's `git fetch` may hold this one right now
    done = repair.repair(project.paths)
    assert not ours.exists() and not old.exists() and fresh.exists()
    assert len(done) == 2


def test_packed_incoming_refs_are_cut_out(project: Project) -> None:
    head = git(project.control, "rev-parse", "HEAD")
    git(project.control, "update-ref", "refs/ralph/incoming/RQ-0001", head)
    git(project.control, "update-ref", "refs/ralph/attic/RQ-0001-1", head)
    git(project.control, "pack-refs", "--all")
    repair.repair(project.paths)
    refs = git(project.control, "for-each-ref", "--format=%(refname)", "refs/ralph/").split()
    assert refs == ["refs/ralph/attic/RQ-0001-1"]


def test_ticks_killed_at_random_moments_never_wedge_and_lose_nothing(project: Project) -> None:
    """Kill `ralph run` at random instants, again and again, while three tasks go through; then let
    ticks run: all land, once each, and nothing of ralph's is left behind."""
    tasks = [project.add(f"Task {n}", description=f"scripted-agent: write t{n}.txt {n}") for n in range(3)]
    rng = random.Random(20261204)
    kills = 0
    for _ in range(25):
        argv = [sys.executable, "-m", "ralph", "-C", str(project.control), "run", "--allow-root"]
        tick = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 0.6))
        if tick.poll() is None:
            tick.send_signal(signal.SIGKILL)
            kills += 1
        tick.wait()
    assert kills >= 10
    project.wait_for_jobs()
    state = project.run_until(all_landed(3), timeout=150)
    assert leftovers(project) == []
    for task in tasks:
        assert archive_count(project.origin, task) == 1
    assert {w.task_id for w in state.workers} == set(tasks)
