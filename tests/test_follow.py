"""Ticks that follow the jobs: a job that ends asks for a tick at once, so work moves on without the
timer, and a request that meets a running tick is not lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from conftest import BASE, git
from harness import Project, all_landed, wait_until

from ralph import wake
from ralph.state import Lifecycle


def tick_process(project: Project, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "ralph", "-C", str(project.control), "run", "--allow-root", *args]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )


def test_jobs_ask_for_the_next_tick_and_a_task_lands_from_one_timer_tick(project: Project) -> None:
    """One tick from 'cron' starts the agent; every later step (commit, gate, landing) is a tick the
    ending jobs asked for."""
    project.configure(run={"follow_jobs": True})
    task = project.add("Feature")
    first = tick_process(project)
    assert first.wait(timeout=60) == 0, first.stderr.read() if first.stderr else ""
    invocation = json.loads((project.paths.parallel / wake.INVOCATION).read_text())
    assert (
        invocation["how"] == "command"
        and invocation["argv"][-4:] == ["-C", str(project.control), "run", "--allow-root"][-4:]
    )
    wait_until(
        lambda: project.worker(task).lifecycle is Lifecycle.COMPLETED,
        timeout=90,
        message="landed without the timer",
    )
    assert git(project.origin, "log", "-1", "--format=%s", BASE) == f"{task}: Feature"
    followed = (project.paths.parallel / wake.FOLLOWED_LOG).read_text()
    assert f"{task} landed " in followed  # the landing was a tick a job asked for


def test_a_request_that_meets_a_running_tick_makes_it_pass_again(project: Project) -> None:
    """The job ends while the timer's tick holds the lock: the tick it asks for exits 75, and the timer's
    tick, once done, sees the request and makes one more pass: the job is reaped without another tick."""
    project.configure(run={"follow_jobs": True})
    task = project.add("Feature", description="scripted-agent: sleep 2")
    first = tick_process(project)
    assert first.wait(timeout=60) == 0
    # The timer's tick: it holds the lock (stalled after its save) while the agent's job ends.
    os.unlink(project.paths.parallel / wake.INVOCATION)  # no job-started tick: only the timer's passes
    timer = tick_process(project, env={"RALPH_STALL": "after-save:5"})
    wait_until(lambda: wake.requested_at(project.paths.parallel) > 0, timeout=30, message="the job's request")
    assert project.worker(task).lifecycle is Lifecycle.RUNNING  # the timer's first pass saw it running
    assert timer.wait(timeout=90) == 0, timer.stderr.read() if timer.stderr else ""
    # Reaped by a later pass of the same tick: nobody else ticked.
    worker = project.worker(task)
    assert worker.lifecycle is not Lifecycle.RUNNING and worker.head_sha is not None


def test_follow_jobs_false_leaves_it_to_the_timer(project: Project) -> None:
    task = project.add("Feature")
    first = tick_process(project)
    assert first.wait(timeout=60) == 0
    project.wait_for_jobs()
    time.sleep(1)
    assert project.worker(task).lifecycle is Lifecycle.RUNNING  # nobody ticked
    assert not (project.paths.parallel / wake.INVOCATION).exists()
    project.run_until(all_landed(1))


def test_a_dry_run_or_a_one_task_run_does_not_replace_the_timers_command_line(project: Project) -> None:
    """Jobs start the next tick the way the timer started the last: a person's `--dry-run` (which
    promises to change nothing) or `--only T` must not become what every ending job runs."""
    project.configure(run={"follow_jobs": True})
    assert not (project.paths.parallel / wake.INVOCATION).exists()
    task = project.add("Feature", description="scripted-agent: sleep 30")
    for args in (("--dry-run",), ("--only", task)):
        run = tick_process(project, *args)
        assert run.wait(timeout=60) == 0, run.stderr.read() if run.stderr else ""
        assert not (project.paths.parallel / wake.INVOCATION).exists(), args
    project.tick()  # stops nothing; the agent of --only is still running
