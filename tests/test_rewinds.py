"""A base someone force-pushed back past ralph's landings: every lost landing is reported, a task the
rewind put back in the queue runs again (not counted as an attempt), one still archived there is only
reported; and a verified change someone else put on the base gets its archive commit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import BASE, git
from harness import Project, all_landed, install_rewinding_hook, wait_until

from ralph.state import Lifecycle


def event_hook(project: Project, tmp_path: Path) -> Path:
    log = tmp_path / "heard.txt"
    hook = tmp_path / "on-event.sh"
    hook.write_text(f'#!/bin/sh\necho "$RALPH_EVENT $RALPH_TASK_ID $RALPH_SHA" >> {log}\n')
    hook.chmod(0o755)
    project.configure(hooks={"on_event": [str(hook)]})
    return log


def heard(log: Path, event: str) -> list[str]:
    return (
        [line for line in log.read_text().splitlines() if line.startswith(event + " ")]
        if log.exists()
        else []
    )


def force_push(origin: Path, sha: str) -> None:
    """A person's `git push --force origin <sha>:main`, done on the server."""
    git(origin, "update-ref", f"refs/heads/{BASE}", sha)


def rewound_events(project: Project) -> dict[str, str]:
    return {e["task_id"]: e["sha"] for e in project.events() if e["event"] == "rewound"}


def test_landings_removed_by_a_rewind_are_reported_and_their_tasks_run_again(
    project: Project, tmp_path: Path
) -> None:
    log = event_hook(project, tmp_path)
    first, second = project.add("First"), project.add("Second")
    before = git(project.origin, "rev-parse", BASE)  # both tasks open in the queue here
    project.run_until(all_landed(2), workers=2)
    landed = {t: project.worker(t).landed_sha for t in (first, second)}
    attempts = {t: project.worker(t).attempt for t in (first, second)}

    force_push(project.origin, before)
    report = project.tick(workers=2)
    rewound = [a for a in report.actions if a.action == "rewound"]
    assert {a.task_id for a in rewound} == {first, second}
    assert all("no longer on main (a rewind); it is open in the queue again" in a.detail for a in rewound)
    assert rewound_events(project) == landed
    for task in (first, second):
        worker = project.worker(task)
        assert worker.lifecycle is Lifecycle.RUNNING  # started again in the same tick, from scratch
        assert worker.attempt == attempts[task]  # the rerun is not counted against the task
        assert worker.landed_sha is None and worker.base_sha == before
    wait_until(lambda: len(heard(log, "rewound")) == 2, message="the hook hears both")
    assert sorted(heard(log, "rewound")) == sorted(f"rewound {t} {sha}" for t, sha in landed.items())

    project.run_until(all_landed(2), workers=2)
    subjects = project.origin_log()
    assert subjects.count(f"{first}: First") == 1 and subjects.count(f"{second}: Second") == 1
    assert {t["id"] for t in project.origin_tasks("done")} == {first, second}


def test_a_rewind_that_keeps_the_task_archived_is_only_reported_once(project: Project) -> None:
    """A person took the code out on purpose but left the task done: ralph says so, and runs nothing."""
    task = project.add("Feature")
    project.run_until(all_landed(1))
    landing = project.worker(task).landed_sha
    assert landing is not None
    # Main as it was before the landing's code, but with the queue and done files as they are now.
    other = project.control.parent / "person"
    git(project.control.parent, "clone", "-q", str(project.origin), str(other))
    queue, done = (git(other, "show", f"HEAD:.ralph/{n}.json") for n in ("queue", "done"))
    git(other, "checkout", "-q", "--detach", f"{landing}^")
    (other / ".ralph" / "queue.json").write_text(queue + "\n")
    (other / ".ralph" / "done.json").write_text(done + "\n")
    git(other, "commit", "-q", "-am", "take the feature out")
    git(other, "push", "-q", "--force", "origin", f"HEAD:{BASE}")

    report = project.tick()
    mine = [a for a in report.actions if a.task_id == task]  # (the person's tip is gated too)
    assert [a.action for a in mine] == ["rewound"]
    assert "the base still has it done, so it is only reported" in mine[0].detail
    worker = project.worker(task)
    assert worker.lifecycle is Lifecycle.COMPLETED and worker.landed_sha is None
    assert worker.last_error is not None and landing in worker.last_error
    assert [a for a in project.tick().actions if a.task_id == task] == []  # reported once, not started
    assert rewound_events(project) == {task: landing}


def test_a_landing_overwritten_while_the_next_one_is_pushed_runs_again(
    project: Project, clone: Callable[[str], Path]
) -> None:
    """The rewind meets a push: the push loses its lease and lands on the rewound base, and the earlier
    landing the rewind removed is noticed and worked again."""
    first = project.add("First")
    before = git(project.origin, "rev-parse", BASE)
    project.run_until(all_landed(1))
    lost = project.worker(first).landed_sha
    second = project.add("Second")
    # What the person force-pushes: the base before First landed, with Second added to its queue.
    other = clone("person")
    git(other, "fetch", "-q", "origin")
    queue = json.loads(git(other, "show", f"origin/{BASE}:.ralph/queue.json"))
    git(other, "checkout", "-q", "--detach", before)
    old = json.loads((other / ".ralph" / "queue.json").read_text())
    old["tasks"] = [t for t in queue["tasks"] if t["id"] == second] + [
        t for t in old["tasks"] if t["id"] == first
    ]
    (other / ".ralph" / "queue.json").write_text(json.dumps(old, indent=2) + "\n")
    git(other, "commit", "-q", "-am", "rewind: First goes again")
    git(other, "push", "-q", "origin", "HEAD:refs/heads/rewound")
    rewound_tip = git(other, "rev-parse", "HEAD")
    project.tick()  # Second's agent
    project.wait_for_jobs()
    project.tick()  # Second committed, its gate started
    project.wait_for_jobs()
    install_rewinding_hook(project.origin, to=rewound_tip)
    state = project.run_until(
        lambda s: all(w.lifecycle is Lifecycle.COMPLETED and w.landed_sha for w in s.workers), workers=2
    )
    assert rewound_events(project) == {first: lost}
    assert state.worker(second) is not None and state.worker(second).push_attempts >= 1  # type: ignore[union-attr]
    subjects = project.origin_log()
    assert subjects.count(f"{first}: First") == 1 and subjects.count(f"{second}: Second") == 1
    assert git(project.origin, "merge-base", "--is-ancestor", rewound_tip, BASE) == ""
    assert {t["id"] for t in project.origin_tasks("done")} == {first, second}


def test_a_verified_change_a_person_landed_gets_its_archive_commit(
    project: Project, clone: Callable[[str], Path]
) -> None:
    task = project.add("Feature")
    project.tick()
    project.wait_for_jobs()
    project.tick()  # committed; the gate starts
    project.wait_for_jobs()
    head = project.worker(task).head_sha
    assert head is not None
    # A person lands the same work by hand before ralph does (their own cherry-pick of the commit).
    other = clone("person")
    git(other, "fetch", "-q", str(project.control), head)
    git(other, "pull", "-q", "origin", BASE)
    git(other, "cherry-pick", head)
    git(other, "push", "-q", "origin", f"HEAD:{BASE}")
    by_hand = git(other, "rev-parse", "HEAD")

    state = project.run_until(all_landed(1))
    worker = state.worker(task)
    assert worker is not None and worker.landed_sha is not None
    assert git(project.origin, "rev-parse", f"{worker.landed_sha}^") == by_hand  # on top of theirs
    changed = git(project.origin, "diff", "--name-only", by_hand, worker.landed_sha).split()
    assert sorted(changed) == [".ralph/done.json", ".ralph/queue.json"]  # only the archive
    assert [t["id"] for t in project.origin_tasks("done")] == [task]
    assert project.origin_log()[0] == f"{task}: Feature"
