"""Landing: verified work goes onto main by a direct push with a lease, with backoff and markers.

A second clone plays a concurrent pusher; pre-receive hooks on the bare origin play a server that
moves main under a waiting push, or one that declines pushes.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import BASE, git
from harness import (
    REPO,
    REPORT_VERDICT,
    Project,
    all_landed,
    install_declining_hook,
    install_rewinding_hook,
    install_rival_hook,
    make_project,
    record_gates,
    wait_until,
)

from ralph import bookkeeping, clock, landing, markers
from ralph.checkout import open_checkout
from ralph.cli import cli
from ralph.errors import QueueError
from ralph.landing import backoff_s
from ralph.state import Lifecycle, State
from ralph.tick import TickOptions, Waiting, run_tick

# Every CI run records the tree it judged and its verdict, so a test can check what landed.
RECORDING_CI = (
    REPORT_VERDICT
    + """
import subprocess, sys
word = "FIX" + "ME"
files = subprocess.run(["git", "ls-files", ":!.ralph"], capture_output=True, text=True).stdout.split()
bad = [f for f in files if word in open(f, errors="replace").read()]
import hashlib
listing = subprocess.run(["git", "ls-tree", "-r", "HEAD"], capture_output=True, text=True).stdout.splitlines()
code = [line for line in listing if not line.endswith((".ralph/queue.json", ".ralph/done.json"))]
tree = hashlib.sha1("\\n".join(code).encode()).hexdigest()
report(f"{tree} {'fail' if bad else 'pass'}")
for f in bad:
    print(f"ci: {word} left in {f}")
sys.exit(2 if bad else 0)
"""
)


@pytest.fixture
def project(origin: Path, control: Path) -> Project:
    return make_project(origin, control)


@pytest.fixture
def recorded(project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    recorder = record_gates(project, tmp_path / "ci-record.txt", RECORDING_CI)
    monkeypatch.setenv("CI_RECORD_URL", recorder.url)
    yield recorder.record
    recorder.close()


def passed_trees(record: Path) -> set[str]:
    return {line.split()[0] for line in record.read_text().splitlines() if line.endswith(" pass")}


def code_of(repo: Path, commit: str) -> str:
    """What the recording gate reports of a commit: its tree but for ralph's queue and done files."""
    listing = git(repo, "ls-tree", "-r", commit).splitlines()
    code = [line for line in listing if not line.endswith((".ralph/queue.json", ".ralph/done.json"))]
    return hashlib.sha1("\n".join(code).encode()).hexdigest()


def landings(project: Project) -> list[str]:
    """ralph's landing commits on origin's base, newest first: one per task, its body says so."""
    out = git(project.origin, "log", "--format=%H %(trailers)%b%x00", BASE).split("\0")
    return [entry.split()[0] for entry in out if "ralph: archive " in entry]


def assert_only_verified_trees_landed(project: Project, record: Path) -> None:
    """Every commit ralph put on main has a tree whose code passed the gate (its queue and done files
    are its own bookkeeping)."""
    passed = passed_trees(record)
    commits = landings(project)
    assert commits
    for commit in commits:
        assert code_of(project.origin, commit) in passed, f"{commit}: no CI run passed its code"


def tick_with(project: Project, waiting: Waiting, **options: Any) -> None:
    run_tick(open_checkout(project.control), TickOptions(allow_root=True, **options), clock.now(), waiting)


class FakeClock:
    """A monotonic clock that real time moves and fake sleeps push forward; the sleeps are recorded."""

    def __init__(self) -> None:
        self._real = time.monotonic
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self._real() + sum(self.slept)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def waiting(self, seed: int = 7) -> Waiting:
        return Waiting(sleep=self.sleep, monotonic=self.monotonic, rng=random.Random(seed))


def test_eight_tasks_land_each_with_its_archive(project: Project, recorded: Path) -> None:
    ids = [project.add(f"Feature {n}") for n in range(1, 9)]
    state = project.run_until(all_landed(8), workers=3, timeout=180)
    subjects = project.origin_log()
    for task_id, n in zip(ids, range(1, 9), strict=True):
        # Each task is one commit: its work and its archive together.
        assert subjects.count(f"{task_id}: Feature {n}") == 1
    assert len(landings(project)) == 8
    done = project.origin_tasks("done")
    assert sorted(t["id"] for t in done) == ids and len(done) == 8  # each exactly once
    assert all(t["status"] == "done" and t["completed_at"].endswith("Z") for t in done)
    assert project.origin_tasks("queue") == []
    assert {w.landed_sha for w in state.workers} <= set(git(project.origin, "rev-list", BASE).splitlines())
    assert_only_verified_trees_landed(project, recorded)


def conflicting_pair(project: Project) -> tuple[str, str]:
    (project.control / "shared.txt").write_text("value = 0\n")
    project.commit_and_push("a shared file")
    first = project.add("Set A", description="scripted-agent: write shared.txt value = A")
    second = project.add("Set B", description="scripted-agent: write shared.txt value = B")
    return first, second


def test_two_workers_on_the_same_line_one_lands_the_other_is_remediated(
    project: Project, recorded: Path
) -> None:
    first, second = conflicting_pair(project)
    state = project.run_until(all_landed(2), workers=2, timeout=120)
    loser = next(w for w in state.workers if w.remediations == 1)
    assert loser.task_id in (first, second)
    assert sorted(project.origin_file("shared.txt").splitlines()) == ["value = A", "value = B"]
    prompts = list(project.paths.run_dir(loser.task_id).glob("agent-*-r1-*.prompt.md"))
    assert len(prompts) == 1
    text = prompts[0].read_text()
    assert text.startswith(f"# MERGE CONFLICT: resolve it (task {loser.task_id}, remediation 1 of 3)")
    assert "- `shared.txt`" in text
    # The agent only edits files: ralph made the merge, and hands it the markers.
    assert "Only edit files: do not run git rebase, merge, reset or checkout" in text
    assert "git fetch" not in text
    events = [e["event"] for e in project.events() if e["task_id"] == loser.task_id]
    assert events[:2] == ["running", "integrating"] and events[-1] == "completed"
    assert events.count("remediating") == 1
    assert events[events.index("remediating") + 1 :] == [
        "integrating",
        "checking",
        "integrating",
        "completed",
    ]
    assert_only_verified_trees_landed(project, recorded)


def test_a_conflict_without_remediations_is_blocked_with_a_marker(project: Project) -> None:
    project.configure(agent={"max_remediations": 0})
    conflicting_pair(project)
    state = project.run_until(
        lambda s: sorted(str(w.lifecycle) for w in s.workers) == ["blocked_push", "completed"], workers=2
    )
    blocked = next(w for w in state.workers if w.lifecycle is Lifecycle.BLOCKED_PUSH)
    ws = Path(blocked.workspace_path)
    assert ws.is_dir()  # kept for a person
    assert not (ws / ".git" / "rebase-merge").exists() and not (ws / ".git" / "rebase-apply").exists()
    assert git(ws, "rev-parse", "HEAD") == blocked.head_sha  # the agent's commit, untouched
    marker = markers.read_blocked_push(ws)
    assert marker is not None and marker.task_id == blocked.task_id
    assert "conflicts in shared.txt" in marker.reason and "0 remediations are used up" in marker.reason
    assert (marker.max_attempts, marker.generated_at[-1]) == (50, "Z")
    assert blocked.last_error == marker.reason


def test_a_push_that_loses_a_race_is_rebased_verified_again_and_landed(
    project: Project, recorded: Path
) -> None:
    task = project.add("Feature")
    counter = install_rival_hook(project.origin, times=1, change="rival.txt")
    state = project.run_until(all_landed(1))
    assert counter.read_text().strip() == "1"  # the race happened
    worker = state.workers[0]
    assert worker.push_attempts == 1
    # The rival's change is on main under ours: nothing was overwritten, and ours was checked again.
    subjects = project.origin_log()
    assert subjects[:2] == [f"{task}: Feature", "rival commit 0"]
    verdicts = recorded.read_text().splitlines()
    rival = code_of(project.origin, f"{BASE}^")
    ours = [v for v in verdicts if not v.startswith(rival)]  # the rival's tip is gated too (watch_base)
    assert len(ours) == 2 and all(v.endswith(" pass") for v in verdicts)
    assert_only_verified_trees_landed(project, recorded)


def test_a_race_that_only_moved_bookkeeping_lands_without_a_second_gate(
    project: Project, recorded: Path
) -> None:
    project.add("Feature")
    install_rival_hook(project.origin, times=1)  # the rival changes no file
    project.run_until(all_landed(1))
    assert len(recorded.read_text().splitlines()) == 1
    assert_only_verified_trees_landed(project, recorded)


def test_a_declining_remote_blocks_after_exactly_one_attempt(project: Project) -> None:
    task = project.add("Feature")
    install_declining_hook(project.origin, "protected branch: pushes need a review")
    state = project.run_until(lambda s: bool(s.workers) and s.workers[0].lifecycle is Lifecycle.BLOCKED_PUSH)
    worker = state.workers[0]
    assert worker.push_attempts == 1
    assert worker.last_error is not None
    assert "pre-receive hook declined" in worker.last_error
    assert "protected branch: pushes need a review" in worker.last_error
    marker = markers.read_blocked_push(Path(worker.workspace_path))
    assert marker is not None and (marker.attempt, marker.reason) == (1, worker.last_error)
    assert f"{task}: Feature" not in project.origin_log()


def test_a_rewound_base_is_not_brought_back(
    project: Project, clone: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Someone removes a bad commit from main after ralph built on it: ralph lands without it."""
    other = clone("other")
    git(other, "pull", "-q", "origin", BASE)
    good = git(other, "rev-parse", "HEAD")
    (other / "bad.txt").write_text("a mistake\n")
    git(other, "add", "bad.txt")
    git(other, "commit", "-q", "-m", "a bad commit")
    git(other, "push", "-q", "origin", f"HEAD:{BASE}")
    task = project.add("Feature")  # committed on top of the bad commit
    project.tick()
    project.wait_for_jobs()
    project.tick()
    project.wait_for_jobs()  # CI passed on a tree with bad.txt in it
    # Rewind, as a person would: main becomes the good commit plus the queue change, minus the bad one.
    git(other, "fetch", "-q", "origin")
    queue = git(other, "show", f"origin/{BASE}:.ralph/queue.json")
    git(other, "checkout", "-q", "--detach", good)
    (other / ".ralph" / "queue.json").write_text(queue + "\n")
    git(other, "add", ".ralph/queue.json")
    git(other, "commit", "-q", "-m", "the queue, without the bad commit")
    git(other, "push", "-q", "--force", "origin", f"HEAD:{BASE}")
    state = project.run_until(all_landed(1))
    assert "a bad commit" not in project.origin_log()
    assert (
        subprocess.run(["git", "-C", str(project.origin), "cat-file", "-e", f"{BASE}:bad.txt"]).returncode
        != 0
    )
    assert state.workers[0].push_attempts == 0  # seen at the fetch, before any push
    assert f"origin/{BASE} was rewound: it no longer contains " in caplog.text
    assert project.origin_log()[:2] == [f"{task}: Feature", "the queue, without the bad commit"]


def test_a_base_rewound_while_the_push_waits_is_not_brought_back(
    project: Project, clone: Callable[[str], Path]
) -> None:
    """The rewind happens after ralph's last fetch: the lease makes the push lose, and the retry
    replays only the task's own commit onto the rewound base."""
    other = clone("other")
    git(other, "pull", "-q", "origin", BASE)
    good = git(other, "rev-parse", "HEAD")
    (other / "bad.txt").write_text("a mistake\n")
    git(other, "add", "bad.txt")
    git(other, "commit", "-q", "-m", "a bad commit")
    git(other, "push", "-q", "origin", f"HEAD:{BASE}")
    task = project.add("Feature")  # committed on top of the bad commit
    project.tick()
    project.wait_for_jobs()
    project.tick()
    project.wait_for_jobs()  # CI passed on a tree with bad.txt in it; the next tick pushes
    # The rewound main a person prepared: the good commit plus the queue, minus the bad commit.
    git(other, "fetch", "-q", "origin")
    queue = git(other, "show", f"origin/{BASE}:.ralph/queue.json")
    git(other, "checkout", "-q", "--detach", good)
    (other / ".ralph" / "queue.json").write_text(queue + "\n")
    git(other, "commit", "-q", "-am", "the queue, without the bad commit")
    git(other, "push", "-q", "origin", "HEAD:refs/heads/rewound")
    install_rewinding_hook(project.origin, to=git(other, "rev-parse", "HEAD"))
    state = project.run_until(all_landed(1))
    assert state.workers[0].push_attempts == 1  # the push that met the rewind lost
    assert "a bad commit" not in project.origin_log()
    assert project.origin_log()[:2] == [f"{task}: Feature", "the queue, without the bad commit"]


def test_work_that_rewrote_its_starting_commit_never_rewinds_the_base(
    origin: Path, control: Path, tmp_path: Path
) -> None:
    """An agent that amends the commit it started on: a push with a matching lease would replace
    main with history that lacks that commit. ralph replays the work onto main instead."""
    agent = tmp_path / "amending-agent"
    agent.write_text(
        "#!/bin/sh\necho amended > amended.txt\ngit add amended.txt\n"
        "git commit -q --amend -m 'history rewritten by the agent'\n"
    )
    agent.chmod(0o755)
    project = make_project(origin, control, agent={"command": [str(agent)]})
    task = project.add("Rewrite")
    before = set(git(origin, "rev-list", BASE).splitlines())
    state = project.run_until(all_landed(1))
    after = set(git(origin, "rev-list", BASE).splitlines())
    assert before <= after  # nothing that was on main has left it
    # Replayed as one commit (the task's message) on the base it rewrote.
    assert project.origin_log()[:2] == [f"{task}: Rewrite", f"ralph: add {task}: Rewrite"]
    assert git(origin, "show", f"{BASE}:amended.txt") == "amended"
    assert state.workers[0].landed_sha == git(origin, "rev-parse", BASE)


def test_a_base_that_moves_under_every_rebuild_is_never_pushed_onto_and_blocks_nothing(
    project: Project,
) -> None:
    """Someone pushes to main while every chain is being built: ralph builds it again a few times, then
    leaves it to the next tick. The chain it built last stands on an older base; pushing it would be
    refused as dropping commits, which blocked every task in it."""
    project.configure(ci={"command": []})  # no gate: a chain is built and pushed the tick work is reaped
    tasks = [project.add(f"Feature {n}") for n in range(1, 4)]
    project.tick()
    project.wait_for_jobs()
    rival = project.control.parent / "rival"
    git(project.control.parent, "clone", "-q", str(project.origin), str(rival))
    moves = []

    def busy_clock() -> float:
        """Each look at the clock: another commit on origin's main first (a base that never rests)."""
        git(rival, "pull", "-q", "--rebase", "origin", BASE)
        git(rival, "commit", "-q", "--allow-empty", "-m", f"rival {len(moves)}")
        git(rival, "push", "-q", "origin", f"HEAD:{BASE}")
        moves.append(1)
        return time.monotonic()

    tick_with(project, Waiting(sleep=lambda s: None, monotonic=busy_clock, rng=random.Random(3)))
    state = project.state()
    assert len(moves) > landing.MAX_QUICK_REDOS  # it met a moved base more often than it rebuilds at once
    assert {w.lifecycle for w in state.workers} == {Lifecycle.INTEGRATING}, [
        w.last_error for w in state.workers
    ]
    landed = {f"{t}: Feature {n}" for n, t in enumerate(tasks, 1)}
    assert landed.isdisjoint(project.origin_log())
    # The base at rest again: the next tick lands all three.
    state = project.run_until(all_landed(3))
    assert {w.lifecycle for w in state.workers} == {Lifecycle.COMPLETED}


def test_a_push_that_would_drop_commits_is_refused_even_with_a_matching_lease(project: Project) -> None:
    """--force-with-lease is a forced push when the lease matches: push_with_lease refuses a commit
    that does not build on the base before anything is sent."""
    from ralph.git import PushStatus, push_with_lease

    g = open_checkout(project.control).git()
    g.run("fetch", "-q", "origin")
    tip = g.run("rev-parse", f"origin/{BASE}").out
    sideways = g.run("commit-tree", "-p", f"{tip}~1", "-m", "not on top of the tip", f"{tip}^{{tree}}").out
    result = push_with_lease(g, remote="origin", commit=sideways, branch=BASE, expected=tip, timeout=30)
    assert result.status is PushStatus.PERMANENT
    assert f"does not build on {tip[:10]}" in result.message
    assert git(project.origin, "rev-parse", BASE) == tip


def test_the_lease_refuses_a_base_that_moved_since_the_fetch(
    project: Project, clone: Callable[[str], Path]
) -> None:
    """A push with a stale expectation is refused and changes nothing, even when it would fast-forward."""
    from ralph.git import PushStatus, push_with_lease

    checkout = open_checkout(project.control)
    g = checkout.git()
    g.run("fetch", "-q", "origin")
    expected = g.run("rev-parse", f"origin/{BASE}").out
    other = clone("other")
    git(other, "commit", "-q", "--allow-empty", "-m", "moved")
    git(other, "push", "-q", "origin", f"HEAD:{BASE}")
    moved = git(project.origin, "rev-parse", BASE)
    git(project.control, "fetch", "-q", "origin")  # we now have its objects, but still expect the old tip
    ours = git(project.control, "commit-tree", "-p", moved, "-m", "ours", f"{moved}^{{tree}}")
    result = push_with_lease(g, remote="origin", commit=ours, branch=BASE, expected=expected, timeout=30)
    assert result.status is PushStatus.RACE
    assert "stale info" in result.message
    assert git(project.origin, "rev-parse", BASE) == moved


def test_a_crash_after_the_push_lands_once(project: Project) -> None:
    task = project.add("Feature")
    project.tick()
    project.wait_for_jobs()
    project.tick()
    project.wait_for_jobs()  # CI passed; the next tick lands
    result = project.tick_process(env={"RALPH_CRASHPOINT": "after-push-before-save"})
    assert result.returncode == 137, result.stderr
    assert f"{task}: Feature" in project.origin_log()
    assert project.worker(task).lifecycle is Lifecycle.INTEGRATING  # the landing was never recorded
    before = git(project.origin, "rev-parse", BASE)
    project.tick()
    worker = project.worker(task)
    assert worker.lifecycle is Lifecycle.COMPLETED
    assert worker.landed_sha == before
    assert git(project.origin, "rev-parse", BASE) == before  # no second push
    assert project.origin_log().count(f"{task}: Feature") == 1
    assert [t["id"] for t in project.origin_tasks("done")] == [task]


def test_backoff_follows_the_schedule_with_jitter() -> None:
    rng = random.Random(1)
    schedule = [500, 2000, 5000, 10000]
    waits = [backoff_s(schedule, n, rng) for n in range(1, 8)]
    for wait, base in zip(waits, [0.5, 2, 5, 10, 10, 10, 10], strict=True):
        assert base * 0.75 <= wait <= base * 1.25
    assert len({round(w, 6) for w in waits[3:]}) > 1  # jittered, not identical


def test_races_retry_within_the_tick_budget_then_on_later_ticks(project: Project) -> None:
    project.configure(parallel={"tick_budget_s": 12})
    task = project.add("Feature")
    project.tick()
    project.wait_for_jobs()
    project.tick()
    project.wait_for_jobs()
    install_rival_hook(project.origin, times=1000)  # every push loses
    fake = FakeClock()
    tick_with(project, fake.waiting())
    worker = project.worker(task)
    # Within the budget: attempts 1-3 waited ~0.5, ~2 and ~5 s; after attempt 4 the ~10 s wait did not fit.
    assert worker.push_attempts == 4
    assert len(fake.slept) == 3
    for wait, base in zip(fake.slept, [0.5, 2, 5], strict=True):
        assert base * 0.75 <= wait <= base * 1.25
    train = project.state().train
    assert worker.lifecycle is Lifecycle.INTEGRATING
    assert train is not None and train.next_attempt_at is not None
    # The landing push is atomic (the base and the task's claim in one transaction): a compare-and-swap
    # lost inside it, git's receive-pack names the ref and both values.
    assert worker.last_error is not None and "cannot lock ref 'refs/heads/main'" in worker.last_error
    # Not before next_attempt_at: a tick now leaves it alone.
    tick_with(project, FakeClock().waiting())
    assert project.worker(task).push_attempts == 4


def test_a_broken_queue_on_the_base_holds_verified_work_instead_of_failing_it(
    project: Project, clone: Callable[[str], Path]
) -> None:
    """Someone pushes a queue ralph cannot read while a landing is under way: ticks refuse, saying which
    file, and the work that passed the gate waits (neither failed nor thrown away) until it is fixed."""
    task = project.add("Feature")
    project.tick()
    project.wait_for_jobs()
    project.tick()
    project.wait_for_jobs()  # CI passed; the next tick lands
    install_rival_hook(project.origin, times=1, change=".ralph/queue.json")  # a queue of digits
    with pytest.raises(QueueError, match=r"\.ralph/queue\.json"):
        tick_with(project, FakeClock().waiting())
    worker = project.worker(task)
    assert (worker.lifecycle, worker.attempt) == (Lifecycle.INTEGRATING, 1)
    with pytest.raises(QueueError):
        project.tick()
    # Someone repairs the queue; the work that passed the gate lands (on top of the repair).
    (project.origin / "hooks" / "pre-receive").unlink()
    other = clone("other")
    git(other, "checkout", "-q", f"origin/{BASE}~1", "--", ".ralph/queue.json")
    git(other, "commit", "-qm", "repair the queue")
    git(other, "push", "-q", "origin", f"HEAD:{BASE}")
    state = project.run_until(all_landed(1))
    assert state.workers[0].attempt == 1
    assert project.origin_log()[:2] == [f"{task}: Feature", "repair the queue"]


def test_push_attempts_run_out_into_blocked_push(project: Project) -> None:
    project.configure(parallel={"max_push_attempts": 3})
    task = project.add("Feature")
    project.tick()
    project.wait_for_jobs()
    project.tick()
    project.wait_for_jobs()
    install_rival_hook(project.origin, times=1000)
    fake = FakeClock()
    tick_with(project, fake.waiting())
    worker = project.worker(task)
    assert (worker.lifecycle, worker.push_attempts) == (Lifecycle.BLOCKED_PUSH, 3)
    assert worker.last_error is not None and worker.last_error.startswith("push attempts used up (3/3)")
    marker = markers.read_blocked_push(Path(worker.workspace_path))
    assert marker is not None and (marker.attempt, marker.max_attempts) == (3, 3)


def test_a_task_closed_elsewhere_ends_and_its_work_is_kept(
    project: Project, clone: Callable[[str], Path]
) -> None:
    task = project.add("Slow", description="scripted-agent: write work.txt done\nscripted-agent: sleep 2")
    project.tick()
    project.wait_for_jobs()  # the agent committed its work
    # A person rejects the task on main while ralph works on it.
    other = clone("other")
    path = other / ".ralph" / "queue.json"
    doc = json.loads(path.read_text())
    doc["tasks"][0].update(status="rejected", completed_at=doc["tasks"][0]["updated_at"])
    path.write_text(json.dumps(doc, indent=2) + "\n")
    git(other, "commit", "-qam", "reject it")
    git(other, "push", "-q", "origin", f"HEAD:{BASE}")
    report = project.tick()
    worker = project.worker(task)
    assert worker.lifecycle is Lifecycle.FAILED
    assert worker.last_error == f"closed elsewhere: {task} is rejected on origin/{BASE}"
    assert worker.next_attempt_at is None
    [closed] = [a for a in report.actions if a.action == "closed_elsewhere"]
    assert closed.detail.endswith(f"; its work is kept as refs/ralph/attic/{task}-1")
    head = git(Path(worker.workspace_path), "rev-parse", "HEAD")
    assert git(project.control, "rev-parse", f"refs/ralph/attic/{task}-1") == head
    assert git(project.control, "log", "-1", "--format=%s", head) == f"{task}: Slow"
    project.tick()
    assert project.worker(task).attempt == 1  # not started again


def test_follow_up_tasks_are_added_in_the_same_bookkeeping_commit(project: Project) -> None:
    proposal = {
        "version": 1,
        "source_task_id": "RQ-0001",
        "tasks": [
            {"key": "docs", "title": "Document the flag", "priority": "low"},
            {"key": "test", "title": "Test the docs", "depends_on_keys": ["docs"], "tags": ["tests"]},
        ],
    }
    description = (
        f"scripted-agent: write .ralph/cache/followups/RQ-0001.json {json.dumps(proposal)}\n"
        "scripted-agent: write flag.txt on"
    )
    task = project.add("Add a flag", description=description)
    assert task == "RQ-0001"
    project.run_until(lambda s: bool(s.workers) and s.workers[0].lifecycle is Lifecycle.COMPLETED)
    assert project.origin_log()[0] == "RQ-0001: Add a flag"
    assert "ralph: archive RQ-0001 (+2 follow-ups)" in git(project.origin, "log", "-1", "--format=%b", BASE)
    queued = project.origin_tasks("queue")
    assert [(t["id"], t["title"], t.get("depends_on", [])) for t in queued] == [
        ("RQ-0002", "Document the flag", []),
        ("RQ-0003", "Test the docs", ["RQ-0002"]),
    ]
    assert queued[0]["priority"] == "low" and queued[1]["tags"] == ["tests"]


def test_an_invalid_follow_up_proposal_blocks_with_the_reason(project: Project) -> None:
    bad = {"version": 1, "source_task_id": "RQ-0001", "tasks": [{"key": "x", "title": ""}]}
    task = project.add(
        "Add a flag",
        description=f"scripted-agent: write .ralph/cache/followups/RQ-0001.json {json.dumps(bad)}\n"
        "scripted-agent: write flag.txt on",
    )
    state = project.run_until(lambda s: bool(s.workers) and s.workers[0].lifecycle is Lifecycle.BLOCKED_PUSH)
    reason = state.workers[0].last_error or ""
    assert reason.startswith(
        f"follow-up proposal {project.paths.workspace(task)}/.ralph/cache/followups/RQ-0001.json:"
    )
    assert "tasks[0].title" in reason
    assert f"{task}: Add a flag" not in project.origin_log()


def test_untracked_mode_lands_and_updates_only_this_task_locally(origin: Path, control: Path) -> None:
    project = make_project(origin, control)
    (control / ".gitignore").write_text(
        ".ralph/cache/\n.ralph/workspaces/\n.ralph/queue.json\n.ralph/done.json\n"
    )
    git(control, "rm", "-q", "--cached", ".ralph/queue.json", ".ralph/done.json")
    project.commit_and_push("keep the queue on this host")
    for title in ("First", "Second"):
        result = CliRunner().invoke(cli, ["-C", str(control), "task", "add", title])
        assert result.exit_code == 0, result.output
    state = project.run_until(all_landed(2))
    queue = json.loads((control / ".ralph" / "queue.json").read_text())
    done = json.loads((control / ".ralph" / "done.json").read_text())
    assert queue["tasks"] == []
    assert sorted(t["id"] for t in done["tasks"]) == ["RQ-0001", "RQ-0002"]
    # The landed commits are the agents' own: no archive commit in untracked mode.
    assert {w.landed_sha for w in state.workers} <= set(git(origin, "rev-list", BASE).splitlines())
    assert not [s for s in project.origin_log() if s.startswith("ralph: archive")]


def test_the_event_hook_hears_landed_failed_and_blocked(project: Project, tmp_path: Path) -> None:
    log = tmp_path / "events.txt"
    hook = tmp_path / "on-event.sh"
    hook.write_text(
        "#!/bin/sh\n"
        f'echo "$RALPH_EVENT $RALPH_TASK_ID $RALPH_SHA $RALPH_BASE_BRANCH [$RALPH_REASON]" >> {log}\n'
    )
    hook.chmod(0o755)
    project.configure(hooks={"on_event": [str(hook)]}, agent={"max_attempts": 1})
    good = project.add("Lands")
    bad = project.add("Fails", description="scripted-agent: fail")
    proposal = {"version": 1, "source_task_id": "RQ-0003", "tasks": [{"key": "x", "title": ""}]}
    stuck = project.add(
        "Blocks",
        description=f"scripted-agent: write .ralph/cache/followups/RQ-0003.json {json.dumps(proposal)}\n"
        "scripted-agent: write flag.txt on",
    )
    state = project.run_until(
        lambda s: len(s.workers) == 3 and all(w.lifecycle in Lifecycle.terminal() for w in s.workers),
        workers=3,
    )
    # The hook runs detached, after the save: wait for its three lines.
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) == 3, message="hook lines")
    lines = log.read_text().splitlines()
    landed, blocked = state.worker(good), state.worker(stuck)
    assert landed is not None and blocked is not None
    sha = str(landed.landed_sha)
    assert f"landed {good} {sha} {BASE} [landed {sha[:10]} on {BASE}]" in lines
    assert any(line.startswith(f"failed {bad}  {BASE} [agent failed (exit 1)") for line in lines)
    assert any(
        line.startswith(f"blocked_push {stuck} {blocked.head_sha} {BASE} [follow-up proposal ")
        for line in lines
    )
    # `ralph retry` of a failed task is bookkeeping, not another ending: no hook run for it.
    hook_runs = project.paths.run_dir(bad).glob("hook-*.spec.json")
    before = len(list(hook_runs))
    assert CliRunner().invoke(cli, ["-C", str(project.control), "retry", bad]).exit_code == 0
    assert len(list(project.paths.run_dir(bad).glob("hook-*.spec.json"))) == before == 1


def test_a_slow_event_hook_neither_holds_the_tick_nor_outlives_its_timeout(
    project: Project, tmp_path: Path
) -> None:
    hook = tmp_path / "slow-hook.sh"
    hook.write_text("#!/bin/sh\nsleep 60\n")
    hook.chmod(0o755)
    project.configure(hooks={"on_event": [str(hook)], "timeout_seconds": 5})
    task = project.add("Feature")
    project.run_until(all_landed(1))
    results = project.paths.run_dir(task)
    # The tick that landed it has returned, while the hook it started still sleeps.
    assert list(results.glob("hook-landed-*.spec.json"))
    assert not list(results.glob("hook-landed-*.result.json"))
    wait_until(lambda: bool(list(results.glob("hook-landed-*.result.json"))), timeout=30)
    [result] = [json.loads(p.read_text()) for p in results.glob("hook-landed-*.result.json")]
    assert result["timed_out"] is True


def test_retry_after_a_block_lands_the_same_verified_commit(project: Project) -> None:
    task = project.add("Feature")
    hook = project.origin / "hooks" / "pre-receive"
    install_declining_hook(project.origin, "frozen")
    state = project.run_until(lambda s: bool(s.workers) and s.workers[0].lifecycle is Lifecycle.BLOCKED_PUSH)
    verified = state.workers[0].verified_sha
    hook.unlink()  # the freeze is over
    result = CliRunner().invoke(cli, ["-C", str(project.control), "retry", task])
    assert result.exit_code == 0, result.output
    # Its attempt and its block were recorded on the remote: the retry clears them for every host.
    assert result.stdout == (
        f"{task} goes back to landing {str(verified)[:10]} on the next tick; "
        "its record on origin (1 attempt, blocked) is cleared for every host\n"
    )
    worker = project.worker(task)
    assert (worker.lifecycle, worker.push_attempts) == (Lifecycle.INTEGRATING, 0)
    assert markers.read_blocked_push(Path(worker.workspace_path)) is None
    project.run_until(all_landed(1))  # back in the train: gated again on the base as it is now
    worker = project.worker(task)
    assert (worker.lifecycle, worker.attempt) == (Lifecycle.COMPLETED, 1)
    assert project.origin_log()[:2] == [f"{task}: Feature", f"ralph: add {task}: Feature"]


def test_retry_of_a_failed_task_starts_over_and_keeps_the_old_commits(project: Project) -> None:
    project.configure(agent={"max_attempts": 1, "max_remediations": 0})
    task = project.add("Leave a note", description="scripted-agent: write notes.md FIXME")
    state = project.run_until(lambda s: bool(s.workers) and s.workers[0].lifecycle is Lifecycle.FAILED)
    old_head = state.workers[0].head_sha
    runner = CliRunner()
    result = runner.invoke(cli, ["-C", str(project.control), "retry", task])
    assert result.exit_code == 0, result.output
    project.tick()
    worker = project.worker(task)
    assert (worker.lifecycle, worker.attempt) == (Lifecycle.RUNNING, 1)
    attic = git(project.control, "for-each-ref", "--format=%(refname) %(objectname)", "refs/ralph/attic/")
    assert attic == f"refs/ralph/attic/{task}-1 {old_head}"
    blocked = runner.invoke(cli, ["-C", str(project.control), "retry", task])
    assert blocked.exit_code == 1 and "only failed or blocked_push tasks can be retried" in blocked.stderr


def test_discard_keeps_the_work_and_reject_stops_the_task_for_good(project: Project) -> None:
    project.configure(agent={"max_attempts": 1, "max_remediations": 0})
    task = project.add("Leave a note", description="scripted-agent: write notes.md FIXME")
    state = project.run_until(lambda s: bool(s.workers) and s.workers[0].lifecycle is Lifecycle.FAILED)
    head = state.workers[0].head_sha
    ws = Path(state.workers[0].workspace_path)
    result = CliRunner().invoke(cli, ["-C", str(project.control), "discard", task, "--reject"])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"{task} discarded; its work is kept as refs/ralph/attic/{task}-1; "
        # Its attempt was counted on the remote when it started: the discard clears that record.
        "rejected: moved to the done archive; its record on origin (1 attempt) is cleared for every host\n"
    )
    assert not ws.exists()
    assert git(project.control, "rev-parse", f"refs/ralph/attic/{task}-1") == head
    assert project.state().worker(task) is None
    assert project.origin_tasks("queue") == []  # moved to the archive at once, not left for a landing
    assert [(t["id"], t["status"]) for t in project.origin_tasks("done")] == [(task, "rejected")]
    project.tick()
    assert project.state().worker(task) is None  # rejected: never started again


def test_ralph_never_forces_a_ref_update() -> None:
    """No --force and no + refspec anywhere in ralph: on a push either silently disables the lease,
    and on a fetch it would hide a rewind (fetch_base notices those instead)."""
    force = re.compile(r"--force(?!-with-lease)")
    plus_refspec = re.compile(
        r"""["']\+(refs/|\{|[A-Za-z_]\w*:)"""
    )  # "+refs/heads/x:...", f"+{src}:{dst}", "+HEAD:x"
    assert plus_refspec.search('f"+{source}:{tracking}"') and plus_refspec.search('"+refs/heads/main"')
    pushes = 0
    for path in (REPO / "ralph").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path}:{n}: {line.strip()}"
            assert not force.search(line), where
            assert not plus_refspec.search(line), where
            if '"push"' in line:
                pushes += 1
                assert "--force-with-lease=" in line, where
    # One place pushes: git.push_refs (the landing, claims, shared facts, the fenced atomic landing),
    # each ref under its own lease; push_with_lease and push_atomic go through it.
    assert pushes == 1


def test_a_workspace_is_removed_once_landed_and_kept_when_blocked(project: Project) -> None:
    project.add("Feature")
    state = project.run_until(all_landed(1))
    assert not Path(state.workers[0].workspace_path).exists()
    assert git(project.control, "for-each-ref", "refs/ralph/") == ""  # nothing unlanded to keep


def test_python_m_ralph_run_lands_from_a_plain_loop(project: Project) -> None:
    """The cron path: `python -m ralph run` in its own process, again and again."""
    task = project.add("Feature")
    said = ""
    for _ in range(40):
        result = project.tick_process()
        assert result.returncode == 0, result.stderr
        said += result.stderr
        state: State = project.state()
        if state.workers and state.workers[0].lifecycle is Lifecycle.COMPLETED:
            break
        time.sleep(0.3)
    worker = project.worker(task)
    assert worker.lifecycle is Lifecycle.COMPLETED
    # One line per action on stderr, as cron would mail or log them.
    assert f"{task} attempt 1/3 on " in said
    assert f"{task} landed {str(worker.landed_sha)[:10]} on {BASE}" in said


def test_a_train_lands_in_order_with_one_gate_at_a_time_and_no_gate_run_twice(project: Project) -> None:
    """Three verified tasks, one gate slot: each position is gated once, stacked on the one ahead, and
    what lands after a landing keeps its verdict (its code did not change)."""
    ids = [project.add(f"Feature {n}") for n in range(3)]
    install_declining_hook(project.origin, "frozen while the test sets up")
    blocked = {Lifecycle.BLOCKED_PUSH}
    project.run_until(
        lambda s: len(s.workers) == 3 and {w.lifecycle for w in s.workers} == blocked, workers=3
    )
    (project.origin / "hooks" / "pre-receive").unlink()
    for task in ids:
        assert CliRunner().invoke(cli, ["-C", str(project.control), "retry", task]).exit_code == 0
    before = len([e for e in project.events() if e["event"] == "checking"])

    def one_gate_at_most(state: State) -> None:
        gates = [w.task_id for w in state.workers if w.lifecycle is Lifecycle.CHECKING]
        assert len(gates) <= 1, gates

    project.run_until(all_landed(3), every=one_gate_at_most, workers=1)
    gates = [e["task_id"] for e in project.events() if e["event"] == "checking"][before:]
    assert sorted(gates) == sorted(ids)  # one gate run each, not one per landing ahead of it


def test_a_landing_tick_reads_the_queue_files_from_git_once(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue changed since the last tick, so this one parses it; its chain, built on the same base,
    read the same two files from git again (megabytes, for a queue of thousands)."""
    project.configure(ci={"command": []})
    task = project.add("Lands")
    project.tick()
    project.wait_for_jobs()
    project.add("Queued meanwhile")  # new blob ids: the tick reads and parses the files
    reads: list[tuple[str, ...]] = []
    real = bookkeeping.cat_blobs
    monkeypatch.setattr(
        bookkeeping, "cat_blobs", lambda git, specs, **k: reads.append(tuple(specs)) or real(git, specs, **k)
    )
    project.tick()
    assert project.worker(task).lifecycle is Lifecycle.COMPLETED
    assert len(reads) == 1, reads
