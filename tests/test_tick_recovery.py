"""A tick survives being killed at any step, overlapping ticks, hung and lost jobs, and reused pids."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import BASE, git
from harness import Project, all_landed, live_wrappers, wait_until
from helpers import hold_lock, pids_running, ralph, stop

from ralph import clock, proc
from ralph.crash import CRASHPOINTS
from ralph.state import Job, JobKind, Lifecycle, State, Worker, new_state, save_state
from ralph.watch import WATCH_ID


def recorded_job(state: State, task_id: str) -> Job | None:
    """The job state.json records for `task_id`'s run directory: a worker's, or the gate on main's."""
    if task_id == WATCH_ID:
        return state.watch.job
    worker = state.worker(task_id)
    if worker is None or worker.lifecycle not in Lifecycle.active():
        return None
    return worker.job


def assert_consistent(project: Project) -> State:
    """The state parses, and every live job of this checkout is recorded: at most one per task."""
    state = project.state()  # parses and validates: one record per task
    for task_id, pids in live_wrappers(project.control).items():
        assert len(pids) == 1, f"{task_id} has {len(pids)} live jobs: {pids}"
        job = recorded_job(state, task_id)
        assert job is not None, f"{task_id}: live job {pids} is not recorded"
        assert job.pid == pids[0], f"{task_id}: live job {pids[0]} is not the recorded {job.pid}"
    return state


def no_unrecorded_jobs(project: Project) -> bool:
    state = project.state()
    for task_id, pids in live_wrappers(project.control).items():
        job = recorded_job(state, task_id)
        if job is None or pids != [job.pid]:
            return False
    return True


def crash(project: Project, point: str) -> None:
    result = project.tick_process(env={"RALPH_CRASHPOINT": point})
    assert result.returncode == 137, (point, result.returncode, result.stderr)


def agent_starts(project: Project, task_id: str) -> int:
    log = project.paths.run_dir(task_id) / "agent.log"
    return log.read_text().count(f"started agent for {task_id}") if log.exists() else 0


# The test that kills a tick at each crash point and checks the next tick repairs what it left.
HERE, STARTING = "test_tick_recovery.py", "test_a_crash_while_starting_leaves_no_forgotten_or_duplicate_job"
RECOVERY_TESTS = {
    "after-load": (HERE, STARTING),
    "after-spawn-before-save": (HERE, STARTING),
    "after-save": (HERE, STARTING),
    "mid-prune": (HERE, "test_a_crash_in_the_middle_of_pruning"),
    "mid-commit": ("test_repair.py", "test_a_crash_inside_a_git_step_is_repaired_by_the_next_tick"),
    "mid-import": ("test_repair.py", "test_a_crash_inside_a_git_step_is_repaired_by_the_next_tick"),
    "mid-bookkeeping": ("test_repair.py", "test_a_crash_inside_a_git_step_is_repaired_by_the_next_tick"),
    "mid-replay": ("test_repair.py", "test_a_crash_inside_a_scratch_replay_is_repaired"),
    "after-reap-before-save": (HERE, "test_a_crash_after_reaping_before_saving_starts_ci_once"),
    "before-push": (
        "test_train_invariants.py",
        "test_a_tick_killed_while_landing_a_prefix_is_repaired_by_the_next",
    ),
    "after-push-before-save": ("test_landing.py", "test_a_crash_after_the_push_lands_once"),
}


def test_every_crash_point_has_a_recovery_test() -> None:
    assert set(RECOVERY_TESTS) == set(CRASHPOINTS)


@pytest.mark.parametrize("point", CRASHPOINTS)
def test_each_recovery_test_exists_and_crashes_at_its_point(point: str) -> None:
    file, name = RECOVERY_TESTS[point]
    tree = ast.parse((Path(__file__).parent / file).read_text())
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    assert found, f"{file} has no {name}"
    # The point's name as a literal in the test or its parametrize decorator: the test sets it.
    literals = {n.value for n in ast.walk(found[0]) if isinstance(n, ast.Constant)}
    assert point in literals, f"{file}::{name} never crashes at {point}"


@pytest.mark.parametrize("point", ["after-load", "after-spawn-before-save", "after-save"])
def test_a_crash_while_starting_leaves_no_forgotten_or_duplicate_job(project: Project, point: str) -> None:
    first = project.add("Slow one", description="scripted-agent: sleep 1")
    second = project.add("Another")
    crash(project, point)
    # A job started but never recorded was told nothing; it exits without running its command.
    wait_until(lambda: no_unrecorded_jobs(project), timeout=10, message="an unrecorded job kept running")
    assert_consistent(project)
    state = project.run_until(all_landed(2), every=lambda s: assert_consistent(project))
    assert {w.task_id for w in state.workers} == {first, second}
    # Each agent ran exactly once: the job of the crashed tick never ran its command.
    assert agent_starts(project, first) == 1
    assert agent_starts(project, second) == 1
    if point == "after-spawn-before-save":
        log = (project.paths.run_dir(first) / "agent.log").read_text()
        assert "not started: the tick that created this job did not confirm it" in log


def test_a_crash_after_reaping_before_saving_starts_ci_once(project: Project) -> None:
    task = project.add("One task")
    project.tick()
    project.wait_for_jobs()
    crash(project, "after-reap-before-save")  # the agent's result was read and its work committed
    assert project.worker(task).lifecycle is Lifecycle.RUNNING  # that transition was never saved
    wait_until(lambda: no_unrecorded_jobs(project), timeout=10)
    state = project.run_until(all_landed(1), every=lambda s: assert_consistent(project))
    runs = project.paths.run_dir(task)
    assert len(list(runs.glob("ci-*.result.json"))) == 1  # exactly one CI run, not one per tick
    assert project.origin_log()[0] == f"{task}: One task"
    assert state.workers[0].landed_sha == git(project.origin, "rev-parse", BASE)


def test_a_crash_in_the_middle_of_pruning(project: Project) -> None:
    """Two failed records expire; the tick dies after removing one workspace; the next one finishes."""
    project.configure(agent={"max_attempts": 1}, parallel={"terminal_worker_ttl_hours": 0.0003})  # ~1 s
    a = project.add("Fails", description="scripted-agent: fail")
    b = project.add("Fails too", description="scripted-agent: fail")
    project.run_until(
        lambda s: len(s.workers) == 2 and all(w.lifecycle is Lifecycle.FAILED for w in s.workers)
    )
    workspaces = [project.paths.workspace(t) for t in (a, b)]
    assert all(ws.is_dir() for ws in workspaces)
    # Reject both on the base, so that the clean tick below does not start them afresh once their
    # records are gone (an expired failure gets a new set of attempts).
    reject_all(project)
    time.sleep(1.2)
    crash(project, "mid-prune")
    assert len(project.state().workers) == 2  # the prune was not saved
    assert sum(ws.exists() for ws in workspaces) == 1  # one workspace went before the crash
    project.tick()
    state = assert_consistent(project)
    assert state.workers == []
    assert not any(ws.exists() for ws in workspaces)


def reject_all(project: Project) -> None:
    git(project.control, "pull", "-q", "--ff-only", "origin", BASE)
    path = project.control / ".ralph" / "queue.json"
    doc = json.loads(path.read_text())
    for task in doc["tasks"]:
        task.update(status="rejected", completed_at=task["updated_at"])
    path.write_text(json.dumps(doc, indent=2) + "\n")
    project.commit_and_push("reject them all")


def test_an_overlapping_tick_exits_75_at_once_and_changes_nothing(project: Project) -> None:
    project.add("Something")
    holder, _ = hold_lock(project.paths.lock)
    try:
        started = time.monotonic()
        result = project.tick_process()
        elapsed = time.monotonic() - started
    finally:
        stop(holder)
    assert result.returncode == 75
    assert "another ralph tick holds" in result.stderr and f"pid {holder.pid}" in result.stderr
    assert elapsed < 1.0, f"a busy tick took {elapsed:.2f}s"
    assert not project.paths.state.exists()
    assert not project.paths.workspace_root.exists()
    assert live_wrappers(project.control) == {}


def test_a_hung_agent_is_killed_with_its_group_at_its_deadline(project: Project) -> None:
    project.configure(agent={"timeout_minutes": 0.05, "max_attempts": 1})  # a 3 s deadline
    task = project.add(
        "Hangs", description="scripted-agent: ignore-term\nscripted-agent: grandchild\nscripted-agent: hang"
    )
    project.tick()
    worker = project.worker(task)
    assert worker.job is not None
    pid_file = Path(worker.workspace_path) / ".ralph" / "cache" / "grandchild.pid"
    wait_until(pid_file.exists, timeout=10)
    wait_until(lambda: bool(pids_running(["sleep", "1000"])), timeout=10)
    (grandchild,) = [p for p in pids_running(["sleep", "1000"]) if p in proc.group_members(worker.job.pid)]
    project.wait_for_jobs(timeout=30)  # the wrapper enforces the deadline: TERM, grace, KILL
    project.tick()
    worker = project.worker(task)
    assert worker.lifecycle is Lifecycle.FAILED
    assert worker.last_error is not None and "timed out" in worker.last_error
    assert proc.group_members(worker.job.pid) == []  # type: ignore[union-attr]
    stat = proc.read_stat(grandchild)
    assert stat is None or stat.state == "Z"


def test_a_lost_job_is_never_success(project: Project) -> None:
    project.configure(agent={"max_attempts": 1})
    task = project.add("Slow", description="scripted-agent: sleep 30")
    project.tick()
    job = project.worker(task).job
    assert job is not None
    wait_until(lambda: len(proc.group_members(job.pid)) >= 2, timeout=10)  # the agent runs under the wrapper
    os.kill(job.pid, signal.SIGKILL)  # the wrapper dies: no result will ever be written
    wait_until(
        lambda: not proc.is_alive(proc.Identity(job.pid, job.pid_start_ticks, job.boot_id)), timeout=10
    )
    project.tick()
    worker = project.worker(task)
    assert worker.lifecycle is Lifecycle.FAILED
    assert worker.last_error is not None and worker.last_error.startswith("agent job lost")
    assert worker.verified_sha is None
    # The agent the wrapper left behind was stopped too, before any retry could reset its workspace.
    wait_until(lambda: proc.group_members(job.pid) == [], timeout=10)


def test_a_reused_pid_is_dead_and_never_signalled(project: Project) -> None:
    """The recorded pid now belongs to an unrelated process: the job is lost, that process untouched."""
    project.configure(agent={"max_attempts": 1})
    task = project.add("Whatever")
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        identity = proc.identify(stranger.pid)
        assert identity is not None
        now = clock.now()
        state = new_state(target_branch="main", remote="origin", now=now)
        runs = project.paths.run_dir(task)
        state.workers = [
            Worker(
                task_id=task,
                lifecycle=Lifecycle.RUNNING,
                workspace_path=str(project.paths.workspace(task)),
                started_at=now,
                updated_at=now,
                job=Job(
                    kind=JobKind.AGENT,
                    pid=stranger.pid,
                    pid_start_ticks=identity.start_ticks - 1,
                    boot_id=identity.boot_id,
                    started_at=now - timedelta(hours=2),
                    deadline=now - timedelta(hours=1),
                    log_path=str(runs / "agent.log"),
                    result_path=str(runs / "gone.result.json"),
                ),
            )
        ]
        save_state(project.paths.state, state, now=now)
        project.tick()
        worker = project.worker(task)
        assert worker.lifecycle is Lifecycle.FAILED
        assert worker.last_error is not None and "job lost" in worker.last_error
        assert stranger.poll() is None, "an unrelated process with a reused pid was signalled"
    finally:
        stranger.kill()
        stranger.wait()


def test_cancel_stops_the_group_and_the_task_is_not_retried_on_its_own(project: Project) -> None:
    task = project.add("Long", description="scripted-agent: ignore-term\nscripted-agent: hang")
    project.tick()
    job = project.worker(task).job
    assert job is not None
    result = ralph(project.control, "cancel", task)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{task} cancelled; no host starts it again until `ralph retry {task}`\n"
    assert proc.group_members(job.pid) == []
    worker = project.worker(task)
    assert (worker.lifecycle, worker.last_error, worker.next_attempt_at) == (
        Lifecycle.FAILED,
        "cancelled by `ralph cancel`",
        None,
    )
    report = project.tick()
    assert [a for a in report.actions if a.task_id == task] == []
    assert project.worker(task).attempt == 1
    events = [e for e in project.events() if e["task_id"] == task]
    assert [e["event"] for e in events] == ["running", "failed"]
    assert events[-1]["detail"] == "cancelled by `ralph cancel`"
