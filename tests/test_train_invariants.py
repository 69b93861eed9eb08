"""The merge train's invariants (issue 10), with real git, real jobs and the scripted agent.

Every gate run reports what it ran on (the task, the commit, its tree, the index's tree, the tree of
the commit it stands on, its verdict) to a recorder outside the repository, and a post-receive hook on
the bare origin logs every push. From those two logs, and nothing ralph says about itself:

- every commit ralph pushed is a gated tree plus ralph's own bookkeeping, on the code it was gated on;
- no task lands twice, and a failing member leaves the train while the rest land;
- a rival push during the train rebuilds it, and what lands was gated on the rival's code; ralph's
  own queue commits do not, and ci.verify_rebased "overlap"/false trust what they may;
- a tick killed in the landing path is repaired by the next one;
- a base moving faster than the gate is reported starved, a trusted outside push keeps the verdicts
  of gates that already ran, and with no gate at all an outside push does not stop the ticks.
"""

from __future__ import annotations

import itertools
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE, git
from harness import (
    REPORT_VERDICT,
    Project,
    archive_count,
    install_rival_hook,
    make_project,
    record_gates,
)

from ralph.state import Lifecycle, State
from ralph.watch import WATCH_ID

BOOKKEEPING = (".ralph/queue.json", ".ralph/done.json")
BROKEN = "FIX" + "ME"  # what the gate fails on (spelled in halves so this file passes it)

# The project's gate (fails while a tracked file holds the word), reporting what it ran on first.
RECORDING_GATE = (
    REPORT_VERDICT
    + """
import os, subprocess, sys
def git(*args):
    return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()
word = "FIX" + "ME"
files = git("ls-files", "-z", ":!.ralph").split("\\0")
bad = [f for f in files if f and word in open(f, errors="replace").read()]
parent = git("rev-parse", "--verify", "--quiet", "HEAD^^{tree}") or "-"
fields = [os.environ["RALPH_TASK_ID"], git("rev-parse", "HEAD"), git("rev-parse", "HEAD^{tree}")]
report(" ".join([*fields, git("write-tree"), parent, "fail" if bad else "pass"]))
for f in bad:
    print(f"ci: {word} left in {f}")
sys.exit(2 if bad else 0)
"""
)

PEOPLE = itertools.count()

# Appends "<old> <new> <ref>" for every ref a push updated: every push that reached the origin.
PUSH_LOG_HOOK = '#!/bin/sh\ncat >> "{log}"\n'


@dataclass(frozen=True)
class GateRun:
    task_id: str
    commit: str
    tree: str  # HEAD^{tree} in the gate's checkout
    index: str  # `git write-tree` there: what the gate's files are
    parent_tree: str  # the tree of the commit the position stands on
    passed: bool


@dataclass
class Logs:
    gates: Path
    pushes: Path

    def runs(self) -> list[GateRun]:
        """Gate runs on train positions (not ralph.watch's on the base's tip), in the order they reported."""
        runs = []
        for line in self.gates.read_text().splitlines():
            task_id, commit, tree, index, parent, verdict = line.split()
            if task_id != WATCH_ID:
                runs.append(GateRun(task_id, commit, tree, index, parent, verdict == "pass"))
        return runs

    def pushes_to_base(self) -> list[tuple[str, str]]:
        """(old, new) of every push that moved the base, oldest first."""
        out = []
        for line in self.pushes.read_text().splitlines():
            old, new, ref = line.split()
            if ref == f"refs/heads/{BASE}":
                out.append((old, new))
        return out


@pytest.fixture
def project(origin: Path, control: Path) -> Project:
    return make_project(origin, control, parallel={"workers": 3})


@pytest.fixture
def logs(project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Logs]:
    recorder = record_gates(project, tmp_path / "gate-runs.txt", RECORDING_GATE)
    monkeypatch.setenv("CI_RECORD_URL", recorder.url)
    pushes = tmp_path / "pushes.txt"
    pushes.touch()
    hook = project.origin / "hooks" / "post-receive"
    hook.write_text(PUSH_LOG_HOOK.format(log=pushes))
    hook.chmod(0o755)
    yield Logs(recorder.record, pushes)
    recorder.close()


# --- what landed, read from the origin ---------------------------------------------------------------


def archive_of(repo: Path, commit: str) -> str | None:
    """The task a commit says it lands ("ralph: archive <id>" in its message), or None."""
    found = re.search(r"^ralph: archive (\S+)", git(repo, "log", "-1", "--format=%B", commit), re.M)
    return found.group(1) if found else None


def code(repo: Path, treeish: str) -> list[str]:
    """A tree's entries (mode, blob, path), recursively, but for ralph's queue and done files."""
    listing = git(repo, "ls-tree", "-r", "--full-tree", treeish).splitlines()
    return [line for line in listing if line.split("\t", 1)[1] not in BOOKKEEPING]


def ralph_pushes(project: Project, logs: Logs) -> list[list[str]]:
    """The pushes that carried ralph's landings: each its new commits, oldest first.

    A push that carries any landing carries nothing else: squashed, every commit on it is a task's
    landing commit (none of the agent's ungated commits in between)."""
    out = []
    for old, new in logs.pushes_to_base():
        commits = git(project.origin, "rev-list", "--reverse", f"{old}..{new}").split()
        tasks = [archive_of(project.origin, c) for c in commits]
        if any(tasks):
            assert all(tasks), f"push {old[:10]}..{new[:10]} mixes landings and other commits: {tasks}"
            out.append(commits)
    return out


def assert_every_push_gated(project: Project, logs: Logs) -> list[str]:
    """Every commit ralph pushed to the base is, exactly, a tree its task's gate passed with ralph's
    queue and done files changed (ralph.landing: `commit_files(tree_from=position, files=queue/done)`),
    and its parent has the code the gated commit stood on: the gate judged it on the base it went onto.
    Returns the commits, oldest first."""
    passed = [r for r in logs.runs() if r.passed]
    pushed = [c for push in ralph_pushes(project, logs) for c in push]
    for commit in pushed:
        task = archive_of(project.origin, commit)
        parents = git(project.origin, "rev-list", "--parents", "-n", "1", commit).split()[1:]
        assert len(parents) == 1, f"{commit}: {len(parents)} parents"
        landed_code, base_code = code(project.origin, commit), code(project.origin, parents[0])
        files = {line.split("\t", 1)[1] for line in git(project.origin, "ls-tree", "-r", commit).splitlines()}
        assert set(BOOKKEEPING) <= files, f"{commit}: no bookkeeping"
        gated = [
            r
            for r in passed
            if r.task_id == task
            and r.index == r.tree  # the gate's files were its commit's, nothing else
            and code(project.control, r.tree) == landed_code
            and r.parent_tree != "-"
            and code(project.control, r.parent_tree) == base_code
        ]
        assert gated, (
            f"{commit} ({task}): no gate passed its code on its parent's code; "
            f"passed runs of {task}: {[r for r in passed if r.task_id == task]}"
        )
    return pushed


def assert_landed_once(project: Project, logs: Logs, tasks: list[str]) -> dict[str, str]:
    """Each task landed exactly once, in the done archive and on the base, and is out of the queue.
    Returns each task's landing commit."""
    done = [t["id"] for t in project.origin_tasks("done") if t.get("status", "done") == "done"]
    assert Counter(done) == Counter(tasks), done
    assert not set(tasks) & {t["id"] for t in project.origin_tasks("queue")}
    pushed = [c for push in ralph_pushes(project, logs) for c in push]
    by_task = Counter(archive_of(project.origin, c) for c in pushed)
    assert by_task == Counter(tasks), by_task
    for task in tasks:
        assert archive_count(project.origin, task) == 1
    landed = {str(archive_of(project.origin, c)): c for c in pushed}
    state = project.state()
    for task in tasks:
        worker = state.worker(task)
        assert worker is not None and worker.lifecycle is Lifecycle.COMPLETED
        assert worker.landed_sha == landed[task]
    events = Counter(e["task_id"] for e in project.events() if e["event"] == "completed")
    assert all(events[t] == 1 for t in tasks), events
    return landed


def is_ancestor(repo: Path, ancestor: str, commit: str) -> bool:
    return subprocess.run(["git", "merge-base", "--is-ancestor", ancestor, commit], cwd=repo).returncode == 0


def gate_starts(project: Project) -> Counter[str]:
    """How many gate jobs ralph started per task (its own log of transitions)."""
    return Counter(e["task_id"] for e in project.events() if e["event"] == "checking")


# --- driving ticks --------------------------------------------------------------------------------------


def tick_settled(
    project: Project,
    done: Callable[[State], bool],
    *,
    ticks: int = 30,
    every: Callable[[State], None] | None = None,
    **options: Any,
) -> State:
    """Tick once every job has written its result (each tick sees all that finished): deterministic."""
    for _ in range(ticks):
        project.wait_for_jobs()
        project.tick(**options)
        state = project.state()
        if every is not None:
            every(state)
        if done(state):
            return state
    raise AssertionError(f"not done after {ticks} ticks: {[(w.task_id, w.lifecycle) for w in state.workers]}")


def all_completed(tasks: list[str]) -> Callable[[State], bool]:
    def check(state: State) -> bool:
        workers = [state.worker(t) for t in tasks]
        return all(w is not None and w.lifecycle is Lifecycle.COMPLETED for w in workers)

    return check


def gating_all(project: Project, tasks: list[str]) -> None:
    """Tick until the agents of `tasks` are done and every one of them holds a train position."""
    project.tick()
    project.wait_for_jobs()
    project.tick()
    state = project.state()
    assert state.train is not None
    assert [p.task_id for p in state.train.positions] == tasks
    assert all(w.lifecycle is Lifecycle.CHECKING for w in state.workers)


def features(project: Project, n: int) -> list[str]:
    return [project.add(f"Feature {k}", description=f"scripted-agent: write f{k}.txt {k}") for k in range(n)]


def person_pushes(clone: Callable[[str], Path], path: str, text: str) -> str:
    """A person's commit changing `path`, pushed to the base from a clone of their own."""
    person = clone(f"person-{next(PEOPLE)}")
    (person / path).write_text(text)
    git(person, "add", path)
    git(person, "commit", "-qm", f"a person changes {path}")
    git(person, "push", "-q", "origin", f"HEAD:{BASE}")
    return git(person, "rev-parse", "HEAD")


# --- the invariants -------------------------------------------------------------------------------------


def test_every_pushed_tree_is_a_gated_tree_plus_the_bookkeeping_and_the_check_catches_one_that_is_not(
    project: Project, logs: Logs, clone: Callable[[str], Path]
) -> None:
    tasks = features(project, 3)
    gating_all(project, tasks)
    tick_settled(project, all_completed(tasks))
    pushed = assert_every_push_gated(project, logs)
    assert_landed_once(project, logs, tasks)
    assert len(pushed) == 3
    assert len(ralph_pushes(project, logs)) == 1  # the three positions passed together: one push
    assert gate_starts(project) == Counter(tasks)  # a task's first gate run is its train position
    assert len(logs.runs()) == 3
    # The check is not vacuous: a landing-like commit whose code no gate passed is caught.
    person = clone("person")
    (person / "f0.txt").write_text("changed after the gate\n")
    git(person, "commit", "-qam", f"{tasks[0]}: Feature 0\n\nralph: archive {tasks[0]}")
    git(person, "push", "-q", "origin", f"HEAD:{BASE}")
    with pytest.raises(AssertionError, match="no gate passed its code"):
        assert_every_push_gated(project, logs)


@pytest.mark.parametrize("broken", [0, 1])
def test_a_failing_member_leaves_the_train_alone_and_the_rest_land(
    project: Project, logs: Logs, broken: int
) -> None:
    """Four ready tasks, one fails its gate: it leaves for good (no remediation, no retry), the other
    three land, and the train ran at most N + ci.max_parallel gates (issue 10). At the front, the
    positions behind it fail too (they hold its change) but only it is blamed."""
    project.configure(ci={"max_parallel": 2}, agent={"max_remediations": 0, "max_attempts": 1})
    tasks = []
    for n in range(4):
        what = f"broken.txt {BROKEN}: later" if n == broken else f"f{n}.txt {n}"
        tasks.append(project.add(f"Feature {n}", description=f"scripted-agent: write {what}"))
    bad, good = tasks[broken], [t for t in tasks if t != tasks[broken]]
    project.tick(workers=4)
    project.wait_for_jobs()
    project.tick(workers=4)
    train = project.state().train
    assert train is not None and [p.task_id for p in train.positions] == tasks  # one train of four

    def settled(state: State) -> bool:
        worker = state.worker(bad)
        return all_completed(good)(state) and worker is not None and worker.lifecycle is Lifecycle.FAILED

    tick_settled(project, settled, workers=4)
    assert_every_push_gated(project, logs)
    assert_landed_once(project, logs, good)
    assert git(project.origin, "grep", "-l", BROKEN, BASE, "--", ":!.ralph", check=False) == ""
    assert "broken.txt" not in git(project.origin, "ls-tree", "-r", "--name-only", BASE)
    runs = logs.runs()
    assert [r.passed for r in runs if r.task_id == bad] == [False]  # judged once, and blamed
    blamed = [
        e["task_id"] for e in project.events() if e["event"] in ("remediating", "failed", "blocked_push")
    ]
    assert blamed == [bad]  # the positions that failed behind it were not blamed
    # Measured: 4 runs with it second (nothing wasted), 5 with it first (the one behind it, run again).
    assert len(runs) <= len(tasks) + 2, [(r.task_id, r.passed) for r in runs]
    assert sum(gate_starts(project).values()) == len(runs)


def test_a_rival_push_while_the_train_is_gated_rebuilds_it_on_the_rival(
    project: Project, logs: Logs, clone: Callable[[str], Path]
) -> None:
    tasks = features(project, 2)
    gating_all(project, tasks)
    rival = person_pushes(clone, "rival.txt", "someone else's work\n")
    tick_settled(project, all_completed(tasks))
    pushed = assert_every_push_gated(project, logs)  # each gated on code that holds the rival's
    assert_landed_once(project, logs, tasks)
    assert all(is_ancestor(project.origin, rival, commit) for commit in pushed)
    assert git(project.origin, "show", f"{BASE}:rival.txt") == "someone else's work"
    assert gate_starts(project) == Counter({t: 2 for t in tasks})  # all gated again, once


def test_a_push_that_loses_to_a_rival_rebuilds_the_whole_prefix_and_gates_it_once_more(
    project: Project, logs: Logs
) -> None:
    tasks = features(project, 2)
    gating_all(project, tasks)
    counter = install_rival_hook(project.origin, times=1, change="rival.txt")
    tick_settled(project, all_completed(tasks))
    assert counter.read_text().strip() == "1"  # the race happened
    assert_every_push_gated(project, logs)
    assert_landed_once(project, logs, tasks)
    assert gate_starts(project) == Counter({t: 2 for t in tasks})  # once before the race, once after
    assert [len(p) for p in ralph_pushes(project, logs)] == [2]
    rival = git(project.origin, "rev-list", "--grep", "^rival commit 0", BASE)
    assert git(project.origin, "rev-parse", f"{BASE}~2") == rival


def test_queue_commits_under_the_train_neither_rebuild_it_nor_gate_it_again(
    project: Project, logs: Logs
) -> None:
    """`ralph task add` moves the base with ralph's queue file only: the train is the same for the gate."""
    tasks = features(project, 2)
    gating_all(project, tasks)
    later = project.add("Later", description="scripted-agent: write later.txt later")
    tick_settled(project, all_completed([*tasks, later]))
    assert_every_push_gated(project, logs)
    assert_landed_once(project, logs, [*tasks, later])
    assert gate_starts(project) == Counter([*tasks, later])


SHARED = "".join(f"line {n}\n" for n in range(20))


def two_tasks_one_on_a_shared_file(project: Project, verify: bool | str) -> list[str]:
    """shared.txt (twenty lines) on the base; one task appends to it, the other writes its own file."""
    (project.control / "shared.txt").write_text(SHARED)
    project.configure(ci={"verify_rebased": verify})
    return [
        project.add("Append", description="scripted-agent: append shared.txt appended by a task"),
        project.add("Other", description="scripted-agent: write other.txt other"),
    ]


def assert_gated_plus_outside(project: Project, logs: Logs, outside: str, path: str) -> None:
    """A trusted outside change: every landing is a tree its task's gate passed, with the outside
    commit's change to `path` and ralph's bookkeeping, and nothing else, on top of the outside commit."""
    passed = {r.task_id: r for r in logs.runs() if r.passed}
    for commit in [c for push in ralph_pushes(project, logs) for c in push]:
        assert is_ancestor(project.origin, outside, commit)
        gated = passed[str(archive_of(project.origin, commit))]
        changed = git(project.control, "diff", "--name-only", gated.tree, f"{commit}^{{tree}}").split()
        assert set(changed) - set(BOOKKEEPING) == {path}, changed
        if git(project.control, "ls-tree", gated.tree, "--", path) == "":  # the train never had it
            assert git(project.origin, "rev-parse", f"{commit}:{path}") == git(
                project.origin, "rev-parse", f"{outside}:{path}"
            )


@pytest.mark.parametrize("verify", ["overlap", False])
def test_a_trusted_outside_push_met_by_the_push_lands_the_passed_prefix_without_gating_it_again(
    project: Project, logs: Logs, verify: bool | str
) -> None:
    """ci.verify_rebased "overlap" (the outside commit touches none of the train's files) or false: the
    push that lost the race to it lands the same verdicts on top of it, in the same tick."""
    tasks = two_tasks_one_on_a_shared_file(project, verify)
    gating_all(project, tasks)
    counter = install_rival_hook(project.origin, times=1, change="rival.txt")
    project.wait_for_jobs()
    project.tick()
    assert all_completed(tasks)(project.state())
    assert counter.read_text().strip() == "1"
    assert gate_starts(project) == Counter(tasks)
    assert_landed_once(project, logs, tasks)
    assert [len(p) for p in ralph_pushes(project, logs)] == [2]
    rival = git(project.origin, "rev-list", "--grep", "^rival commit 0", BASE)
    assert_gated_plus_outside(project, logs, rival, "rival.txt")


def test_under_overlap_an_outside_push_to_a_file_of_the_train_gates_it_again(
    project: Project, logs: Logs, clone: Callable[[str], Path]
) -> None:
    tasks = two_tasks_one_on_a_shared_file(project, "overlap")
    gating_all(project, tasks)
    outside = person_pushes(clone, "shared.txt", SHARED.replace("line 0\n", "line zero\n"))
    tick_settled(project, all_completed(tasks))
    assert gate_starts(project) == Counter({t: 2 for t in tasks})  # the whole train, once more
    assert_every_push_gated(project, logs)
    assert_landed_once(project, logs, tasks)
    assert all(is_ancestor(project.origin, outside, c) for push in ralph_pushes(project, logs) for c in push)
    assert project.origin_file("shared.txt") == SHARED.replace("line 0", "line zero") + "appended by a task"


def test_a_trusted_outside_push_keeps_the_verdict_of_a_gate_that_already_ran(
    project: Project, logs: Logs, clone: Callable[[str], Path]
) -> None:
    """The gates finished (passed) before the outside push; the tick that reads them also sees the push."""
    tasks = two_tasks_one_on_a_shared_file(project, "overlap")
    gating_all(project, tasks)
    project.wait_for_jobs()
    outside = person_pushes(clone, "rival.txt", "someone else's\n")
    tick_settled(project, all_completed(tasks))
    assert gate_starts(project) == Counter(tasks)
    assert_landed_once(project, logs, tasks)
    assert_gated_plus_outside(project, logs, outside, "rival.txt")


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(
            "between ticks",
        ),
        pytest.param(
            "during the push",
        ),
    ],
)
def test_a_base_that_moves_faster_than_the_gate_is_reported_starved(
    project: Project, logs: Logs, clone: Callable[[str], Path], where: str
) -> None:
    """landing.max_rebuilds = 2: the second outside push that makes the train gate again reports it
    starved (an action, `starved_at` in the state) before anything lands; it still lands afterwards."""
    project.configure(landing={"max_rebuilds": 2})
    tasks = features(project, 1)
    gating_all(project, tasks)
    actions: list[tuple[str, str]] = []
    starved = None
    if where == "during the push":
        install_rival_hook(project.origin, times=2, change="rival.txt")
    for n in range(12):
        project.wait_for_jobs()
        if where == "between ticks" and n < 2:
            person_pushes(clone, "rival.txt", f"rival {n}\n")
        actions += [(a.task_id, a.action) for a in project.tick().actions]
        state = project.state()
        assert state.train is not None
        starved = starved or state.train.starved_at
        if all_completed(tasks)(state):
            break
    assert all_completed(tasks)(project.state())
    assert ("train", "starved") in actions
    assert actions.index(("train", "starved")) < actions.index((tasks[0], "landed"))
    assert starved is not None
    assert_every_push_gated(project, logs)


@pytest.mark.parametrize(
    ("point", "moved"),
    [("mid-bookkeeping", False), ("before-push", False), ("after-push-before-save", True)],
)
def test_a_tick_killed_while_landing_a_prefix_is_repaired_by_the_next(
    project: Project, logs: Logs, clone: Callable[[str], Path], point: str, moved: bool
) -> None:
    """Two passed positions land in one push; the tick dies at `point`. With `moved`, a person pushes
    on top of the landing before the next tick. Nothing is lost, nothing lands twice or ungated."""
    if point == "mid-bookkeeping":
        project.configure(landing={"squash": False})  # a squashed chain is one fast-import, no index
    tasks = features(project, 2)
    gating_all(project, tasks)
    project.wait_for_jobs()
    before = git(project.origin, "rev-parse", BASE)
    result = project.tick_process(env={"RALPH_CRASHPOINT": point})
    assert result.returncode == 137, result.stderr
    state = project.state()
    assert all(w.lifecycle is Lifecycle.INTEGRATING for w in state.workers)  # verdicts saved, no landing
    assert state.train is not None
    if point == "mid-bookkeeping":
        assert git(project.origin, "rev-parse", BASE) == before
        assert any("index-" in p.name for p in project.paths.scratch.iterdir())  # left by the kill
        assert state.train.pushing == {}
    elif point == "before-push":  # the chain saved as being pushed, the push never made
        assert git(project.origin, "rev-parse", BASE) == before
        assert list(state.train.pushing) == tasks
    else:
        landed = git(project.origin, "rev-list", "--reverse", f"{before}..{BASE}").split()
        assert list(state.train.pushing) == tasks and list(state.train.pushing.values()) == landed
    if moved:
        person_pushes(clone, "later.txt", "pushed on top of the landing\n")
    tip = git(project.origin, "rev-parse", BASE)
    state = tick_settled(project, all_completed(tasks), ticks=3)
    assert state.train is not None and state.train.pushing == {}
    if point == "after-push-before-save":
        assert git(project.origin, "rev-parse", BASE) == tip  # recorded, not pushed again
    assert project.paths.scratch.exists() is False or list(project.paths.scratch.iterdir()) == []
    assert_every_push_gated(project, logs)
    assert_landed_once(project, logs, tasks)
    assert [len(p) for p in ralph_pushes(project, logs)] == [2]
    assert gate_starts(project) == Counter(tasks)  # the verdicts survived the kill


def test_without_a_gate_an_outside_push_under_waiting_positions_does_not_crash_the_ticks(
    project: Project,
) -> None:
    project.configure(ci={"command": [], "verify_rebased": True})
    tasks = features(project, 2)
    counter = install_rival_hook(project.origin, times=1, change="rival.txt")
    for _ in range(8):
        result = project.tick_process()
        assert result.returncode == 0, result.stderr[-2000:]
        project.wait_for_jobs()
        if all_completed(tasks)(project.state()):
            break
    assert counter.read_text().strip() == "1"  # the positions waited through an outside push
    assert all_completed(tasks)(project.state())
    assert git(project.origin, "show", f"{BASE}:rival.txt")
