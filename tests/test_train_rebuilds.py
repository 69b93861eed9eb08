"""The merge train when the base moves under it: without a gate, while its gates run, and what a
rebuild costs in git commands."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest
from conftest import BASE, bump_submodule, commit_ignored_submodule, git
from harness import Project, all_landed, install_rival_hook, make_project, wait_until

from ralph.git import Git
from ralph.state import Lifecycle, State, Train
from ralph.train import Conductor, Effects, Rules

NOW = datetime(2026, 12, 5, tzinfo=UTC)
SLOW_GATE = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def project(origin: Path, control: Path) -> Project:
    return make_project(origin, control)


def _push_outside(other: Path, name: str) -> None:
    """Someone else lands code on the base (a file no task touches)."""
    git(other, "pull", "-q", "--rebase", "origin", BASE)
    (other / name).write_text(f"{name}\n")
    git(other, "add", name)
    git(other, "commit", "-q", "-m", f"outside: {name}")
    git(other, "push", "-q", "origin", f"HEAD:{BASE}")


def test_without_a_gate_an_outside_push_under_the_train_does_not_wedge_it(project: Project) -> None:
    """ci.command = [] and the base's code moves between the train's build and its push: the positions
    are stacked again, pass again (there is no gate to ask), and land. (A dropped verdict used to send
    the next tick to start a gate with an empty command: exit 3 on every tick after.)"""
    project.configure(ci={"command": [], "verify_rebased": True})
    tasks = [project.add(f"Task {n}", description=f"scripted-agent: write t{n}.txt {n}") for n in range(2)]
    project.tick(workers=2)
    project.wait_for_jobs()
    rivals = install_rival_hook(project.origin, times=1, change="outside.txt")
    state = project.run_until(all_landed(2), timeout=60)
    assert rivals.read_text().strip() == "1"  # the rival did move the code under the first push
    assert {w.task_id for w in state.workers if w.lifecycle is Lifecycle.COMPLETED} == set(tasks)
    assert [project.origin_file(f"t{n}.txt") for n in range(2)] == ["0", "1"]
    assert state.train is not None and state.train.positions == []


def test_a_train_saved_with_a_gate_lands_once_the_gate_is_turned_off(project: Project) -> None:
    """Positions still undecided when a person empties ci.command: nothing waits for a gate that is gone."""
    project.configure(ci={"command": SLOW_GATE})
    task = project.add("Task", description="scripted-agent: write t.txt x")
    project.tick()
    project.wait_for_jobs()
    project.tick()  # joined the train, its gate started
    assert project.worker(task).lifecycle is Lifecycle.CHECKING
    project.configure(ci={"command": []})
    state = project.run_until(all_landed(1), timeout=60)
    assert state.workers[0].lifecycle is Lifecycle.COMPLETED
    assert project.origin_file("t.txt") == "x"


def test_outside_pushes_that_keep_stopping_the_gates_report_a_starved_train(
    project: Project, clone: Callable[[str], Path]
) -> None:
    """Each outside push stops the gates in flight and starts them again: that is a rebuild, and after
    landing.max_rebuilds of them the tick says so, once."""
    project.configure(ci={"command": SLOW_GATE}, landing={"max_rebuilds": 2})
    other = clone("other")
    task = project.add("Task", description="scripted-agent: write t.txt x")
    project.tick()
    project.wait_for_jobs()
    project.tick()  # joined the train, its gate started
    assert project.worker(task).lifecycle is Lifecycle.CHECKING
    starved = []
    for n in range(3):
        _push_outside(other, f"outside-{n}.txt")
        report = project.tick()
        starved += [a for a in report.actions if a.action == "starved"]
        assert project.worker(task).lifecycle is Lifecycle.CHECKING  # a new gate, on the new base
    state = project.state()
    assert state.train is not None and state.train.rebuilds == 3
    assert len(starved) == 1, starved
    assert "stacked again 2 times by outside pushes" in starved[0].detail
    events = [e for e in project.events() if e["event"] == "starved"]
    assert [e["task_id"] for e in events] == [task] and events[0]["detail"] == starved[0].detail


def logged_tick(project: Project, tmp_path: Path) -> list[str]:
    """A tick in its own process (--workers 4) with every git command it runs logged; the commands."""
    log = tmp_path / "git-calls.log"
    log.unlink(missing_ok=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "git"
    path = os.environ["PATH"]
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nPATH="{path}" exec git "$@"\n')
    wrapper.chmod(0o755)
    done = project.tick_process("--workers", "4", env={"PATH": f"{bin_dir}:{path}"})
    assert done.returncode == 0, done.stderr
    return log.read_text().splitlines()


def test_an_outside_push_stacks_the_train_again_in_one_fast_import(
    project: Project, clone: Callable[[str], Path], tmp_path: Path
) -> None:
    """Four positions whose tasks each add a file of their own, and someone lands another file: the
    tick stacks all four on the new base with neither a merge-tree nor a commit-tree, and each position
    is the new base plus the files of the positions up to it."""
    project.configure(ci={"command": SLOW_GATE})
    for n in range(4):
        project.add(f"Task {n}", description=f"scripted-agent: write t{n}.txt {n}")
    project.tick(workers=4)
    project.wait_for_jobs()
    project.tick(workers=4)  # all four joined, their gates started
    _push_outside(clone("other"), "outside.txt")
    calls = logged_tick(project, tmp_path)
    assert not [c for c in calls if c.startswith(("merge-tree", "commit-tree"))], calls
    state = project.state()
    assert state.train is not None and len(state.train.positions) == 4
    assert state.train.base_sha == git(project.origin, "rev-parse", BASE)
    onto = state.train.base_sha
    on_base = set(git(project.control, "ls-tree", "--name-only", onto).split())
    assert "outside.txt" in on_base
    files = set(on_base)
    for position in state.train.positions:
        assert position.onto == onto
        assert git(project.control, "rev-parse", f"{position.commit}^") == onto
        listed = set(git(project.control, "ls-tree", "--name-only", position.commit).split())
        added = listed - files
        assert len(added) == 1, listed
        files |= added
        onto = position.commit
    assert files - on_base == {f"t{n}.txt" for n in range(4)}


def test_a_tick_asks_git_its_version_once_however_many_positions_it_stacks(
    project: Project, tmp_path: Path
) -> None:
    """Every replay needs to know whether git has `merge-tree --write-tree`; git is asked once. (Each
    task deletes README.md, which every other deletes too: a clean merge, but not one the train can
    foresee, so each goes through merge-tree.)"""
    project.configure(ci={"command": SLOW_GATE})
    for n in range(4):
        project.add(
            f"Task {n}", description=f"scripted-agent: run rm README.md\nscripted-agent: write t{n}.txt {n}"
        )
    project.tick(workers=4)
    project.wait_for_jobs()
    calls = logged_tick(project, tmp_path)
    state = project.state()
    assert state.train is not None and len(state.train.positions) == 4  # three of them replayed
    assert sum(1 for c in calls if c in ("version", "--version")) == 1, calls
    assert sum(1 for c in calls if c.startswith("merge-tree")) == 3, calls


def test_positions_behind_a_landing_move_onto_it_without_replaying_and_keep_their_gates(
    project: Project, tmp_path: Path
) -> None:
    """The landed tip is the last landed position plus ralph's bookkeeping: the positions behind it get
    the tip's queue and done files and the tip as parent in one fast-import; their gates run on."""
    gate = (
        "import os, time, runpy\n"
        "if os.path.exists('t1.txt'): time.sleep(60)\n"  # positions 2 and 3 hold t1.txt: slow gates
        "runpy.run_path('.ci-check.py')\n"
    )
    project.configure(ci={"command": [sys.executable, "-c", gate]})
    for n in range(3):
        project.add(f"Task {n}", description=f"scripted-agent: write t{n}.txt {n}")
    project.tick(workers=3)
    project.wait_for_jobs()
    project.tick(workers=3)  # all three join; three gates start; only the first ends soon
    state = project.state()
    assert state.train is not None and [p.task_id for p in state.train.positions] == [
        "RQ-0001",
        "RQ-0002",
        "RQ-0003",
    ]
    gates = {w.task_id: w.job.pid for w in state.workers if w.job is not None and w.task_id != "RQ-0001"}
    first = state.worker("RQ-0001")
    assert first is not None and first.job is not None
    result = Path(first.job.result_path)
    wait_until(result.exists, timeout=60, message="the first position's gate")
    log = tmp_path / "git-calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    path = os.environ["PATH"]
    (bin_dir / "git").write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nPATH="{path}" exec git "$@"\n')
    (bin_dir / "git").chmod(0o755)
    done = project.tick_process("--workers", "3", env={"PATH": f"{bin_dir}:{path}"})
    assert done.returncode == 0, done.stderr
    state = project.state()
    tip = git(project.origin, "rev-parse", BASE)
    assert project.worker("RQ-0001").lifecycle is Lifecycle.COMPLETED
    assert state.train is not None
    second, third = state.train.positions
    assert (second.onto, third.onto) == (tip, second.commit)
    assert git(project.control, "rev-parse", f"{second.commit}^") == tip
    for position in (second, third):
        assert git(project.control, "rev-parse", f"{position.commit}:.ralph/queue.json") == git(
            project.origin, "rev-parse", f"{BASE}:.ralph/queue.json"
        )
    assert git(project.control, "show", f"{third.commit}:t2.txt") == "2"
    assert git(project.control, "show", f"{third.commit}:t0.txt") == "0"
    # The gates in flight go on: the code they judge did not change.
    assert {
        w.task_id: w.job.pid for w in state.workers if w.job is not None and w.task_id != "RQ-0001"
    } == gates
    calls = log.read_text().splitlines()
    # Nothing replayed: neither merge-tree nor, on git before 2.38, a scratch clone.
    assert not [c for c in calls if c.startswith("merge-tree") or "replay-" in c], calls


@pytest.mark.parametrize("hidden_by", ["gitmodules", "config"])
def test_a_submodule_bump_is_code_to_the_train_though_diffs_are_told_to_ignore_it(
    tmp_path: Path, hidden_by: str
) -> None:
    """A verdict carries over only to the same code: a position that differs from the judged one by a
    submodule's commit alone is other code, even where `ignore = all` (in .gitmodules or the config)
    tells `git diff` to look away; an outside bump is an outside change."""
    repo = tmp_path / "repo"
    git(tmp_path, "init", "-q", "-b", BASE, str(repo))
    git(repo, "commit", "-q", "--allow-empty", "-m", "first")
    judged = commit_ignored_submodule(repo, "mod", hidden_by=hidden_by)
    bumped = bump_submodule(repo, "mod", judged)
    state = State(
        schema_version=5,
        target_branch=BASE,
        remote="origin",
        started_at=NOW,
        updated_at=NOW,
        train=Train(base_sha=judged),
    )
    rules = Rules(
        gate=True, max_parallel=1, verify_rebased="overlap", max_rebuilds=3, ignore=(".ralph/queue.json",)
    )
    conductor = Conductor(state, Git(repo), cast(Effects, None), rules, scratch=tmp_path / "scratch", now=NOW)
    assert not conductor.code_same(judged, bumped)
    assert conductor._changed_paths(judged, bumped) == {"mod"}
