"""Watching main: a tip ralph did not push is gated (or asked of the team's CI); while main is red a
failure is not blamed on the task that met it, a fix task goes to the top of the queue once and to the
front of the train, and ralph returns to normal when a tip passes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from conftest import BASE, git
from harness import SCRIPTED_AGENT, Project, all_landed, wait_until
from helpers import executable, ralph

from ralph.state import Lifecycle
from ralph.watch import WATCH_ID

BROKEN = "FIX" + "ME"  # what the project's CI gate fails on (tests/harness.py)


def break_main(clone: Callable[[str], Path], *, fix: bool = False) -> str:
    """A person pushes a commit that fails the project's CI (or, with `fix`, one that mends it)."""
    person = clone("person-fix" if fix else "person")
    git(person, "pull", "-q", "origin", BASE)
    (person / "bad.txt").write_text("all good\n" if fix else f"{BROKEN}: finish this\n")
    git(person, "add", "bad.txt")
    git(person, "commit", "-q", "-m", "mend main" if fix else "a change that breaks CI")
    git(person, "push", "-q", "origin", f"HEAD:{BASE}")
    return git(person, "rev-parse", "HEAD")


def fixing_agent(project: Project, tmp_path: Path) -> None:
    """The scripted agent, but the task that asks for main to pass again mends bad.txt."""
    agent = executable(
        tmp_path / "fixing-agent",
        "#!/bin/sh\n"
        'if grep -q "pass CI again" "$1"; then\n'
        "  echo 'all good' > bad.txt && git commit -qam 'mend bad.txt' && exit 0\n"
        "fi\n"
        f'exec {SCRIPTED_AGENT} "$1"\n',
    )
    project.configure(agent={"command": [str(agent), "{prompt_file}"]})


def actions(project: Project, **options: object) -> list[tuple[str, str]]:
    return [(a.task_id, a.action) for a in project.tick(**options).actions]


def wait_for_gates(project: Project) -> None:
    """Until the workers' jobs and the gate on main have written their results."""
    project.wait_for_jobs()
    job = project.state().watch.job
    if job is not None:
        wait_until(lambda: Path(job.result_path).exists(), timeout=60, message="the gate on main")


def tick_until_red(project: Project) -> None:
    for _ in range(20):
        wait_for_gates(project)
        project.tick()
        if project.state().watch.verdict == "red":
            return
    raise AssertionError(f"main never judged red: {project.state().watch}")


def test_an_outside_push_that_turns_main_red_gets_a_fix_and_blames_no_task(
    project: Project, clone: Callable[[str], Path], tmp_path: Path
) -> None:
    fixing_agent(project, tmp_path)
    assert ralph(project.control, "pause").exit_code == 0  # nothing starts until main is judged
    project.tick()  # the base as ralph first finds it
    red = break_main(clone)
    assert (BASE, "base_gate") in actions(project)  # a tip ralph did not push: gated
    tick_until_red(project)
    assert project.paths.run_dir(WATCH_ID).is_dir()  # where the gate on main keeps its log
    watch = project.state().watch
    assert watch.red_sha == red and watch.fix_task is not None
    queue = project.origin_tasks("queue")
    assert queue[0]["id"] == watch.fix_task and queue[0]["title"].startswith("Make main pass CI again")
    assert f"{BROKEN} left in bad.txt" in queue[0]["description"]
    status = ralph(project.control, "status")
    assert "main is red since " in status.output and f"at {red[:10]}" in status.output

    task = project.add("Feature")  # it meets the red main at its gate, before the fix task starts
    assert ralph(project.control, "resume").exit_code == 0
    for _ in range(10):
        project.tick(only=task)
        wait_for_gates(project)
        train = project.state().train
        position = train.position(task) if train else None
        if position is not None and position.failed is not None:
            break
    assert position is not None and position.failed == position.commit  # failed on the red main...
    project.tick(only=task)
    assert project.worker(task).lifecycle is Lifecycle.INTEGRATING  # ...and waits, not blamed
    state = project.run_until(all_landed(2), workers=2)
    feature, fix = state.worker(task), state.worker(str(watch.fix_task))
    assert feature is not None and fix is not None
    assert feature.remediations == 0 and feature.attempt == 1  # its failure on red main was not its own
    assert state.watch.verdict == "green" and state.watch.fix_task is None
    log = project.origin_log()
    assert sum(1 for s in log if s.startswith("ralph: add") and "pass CI again" in s) == 1  # added once
    assert log.index(f"{watch.fix_task}: {queue[0]['title']}") > log.index(f"{task}: Feature")  # fix first
    assert "is red" not in ralph(project.control, "status").output


def test_a_person_mending_main_ends_the_red_spell(project: Project, clone: Callable[[str], Path]) -> None:
    assert ralph(project.control, "pause").exit_code == 0
    project.tick()
    break_main(clone)
    actions(project)
    tick_until_red(project)
    fixed = break_main(clone, fix=True)
    project.tick()  # the person's tip is gated
    wait_for_gates(project)
    assert (BASE, "base_green") in actions(project)
    watch = project.state().watch
    assert (watch.verdict, watch.sha, watch.red_since) == ("green", fixed, None)


def test_ralph_landings_and_queue_edits_are_not_gated_again(project: Project) -> None:
    project.add("Feature")
    project.run_until(all_landed(1))
    assert project.state().watch.verdict == "green"  # what ralph landed passed its gate
    assert ralph(project.control, "pause").exit_code == 0
    project.add("Another")  # a queue-only push on top of the landing
    assert (BASE, "base_gate") not in actions(project)
    assert project.state().watch.sha == git(project.origin, "rev-parse", BASE)
    assert not project.paths.run_dir(WATCH_ID).exists()  # no gate on main ever ran


def test_a_queue_edit_on_a_base_seen_but_never_judged_is_not_gated(project: Project) -> None:
    """The first tick adopts the base without gating it; a `task add` on top changes only ralph's files,
    so the same holds: no gate on main, the verdict still unknown."""
    assert ralph(project.control, "pause").exit_code == 0
    project.tick()
    assert project.state().watch.verdict == "unknown"
    project.add("Another")
    project.tick()
    watch = project.state().watch
    assert (watch.sha, watch.job, watch.verdict) == (git(project.origin, "rev-parse", BASE), None, "unknown")


def test_the_gate_on_main_takes_one_of_the_gate_slots(project: Project, clone: Callable[[str], Path]) -> None:
    """ci.max_parallel = 1: while the gate on main runs, a task's position waits for the slot."""
    slow = (
        "import os, time, runpy\n"
        "if os.path.exists('slow.txt'): time.sleep(60)\n"
        "runpy.run_path('.ci-check.py')\n"
    )
    project.configure(ci={"command": [sys.executable, "-c", slow], "max_parallel": 1})
    project.tick()  # the base as ralph first finds it
    person = clone("person")
    git(person, "pull", "-q", "origin", BASE)
    (person / "slow.txt").write_text("slow\n")
    git(person, "add", "slow.txt")
    git(person, "commit", "-q", "-m", "a change that slows the gate")
    git(person, "push", "-q", "origin", f"HEAD:{BASE}")
    task = project.add("Feature")
    project.tick()  # the gate on main starts, and the task's agent
    assert project.state().watch.job is not None
    project.wait_for_jobs()
    project.tick()  # the agent is done: its position joins the train, but no slot is free
    worker = project.worker(task)
    assert worker.lifecycle is Lifecycle.INTEGRATING and project.state().watch.job is not None


def test_the_team_ci_is_asked_instead_when_configured(project: Project, clone: Callable[[str], Path]) -> None:
    verdicts = project.control.parent / "verdicts"
    verdicts.mkdir()
    status = executable(
        project.control.parent / "ci-status",
        f"#!{sys.executable}\n"
        "import sys, pathlib\n"
        f"p = pathlib.Path({str(verdicts)!r}) / sys.argv[1]\n"
        "said = p.read_text() if p.exists() else 'pending'\n"
        "print('build 42:', said)\n"
        "sys.exit({'green': 0, 'red': 1}.get(said, 2))\n",
    )
    project.configure(ci={"base_status_command": [str(status), "{sha}"]})
    assert ralph(project.control, "pause").exit_code == 0
    project.tick()
    red = break_main(clone)
    project.tick()
    assert project.state().watch.verdict == "unknown"  # pending: asked again next tick
    (verdicts / red).write_text("red")
    project.tick()
    watch = project.state().watch
    assert watch.verdict == "red" and watch.reason is not None and "build 42: red" in watch.reason
    assert watch.fix_task is not None
    assert not project.paths.run_dir(WATCH_ID).exists()  # the team's CI judged; ralph gated nothing
    fixed = break_main(clone, fix=True)
    (verdicts / fixed).write_text("green")
    project.tick()
    assert project.state().watch.verdict == "green"
    assert project.state().watch.fix_task is None
