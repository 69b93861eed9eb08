"""The lock first, and the idle tick: `ralph run` as cron starts it, in its own process.

A tick takes its lock before anything heavy is imported; a tick that finds it held, or whose idle
stamp says nothing changed, exits without importing click, pydantic or sh.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from conftest import BASE, git
from harness import Project, all_landed, wait_until
from helpers import hold_lock, ralph, stop

from ralph import stamp
from ralph.state import Lifecycle

HEAVY = ("click", "pydantic", "sh", "filelock")
# Standard library modules the idle path and a losing tick also do without (ralph.ring, ralph.stamp,
# ralph.git at import): together they were half of the idle path's time (bench/README.md, benchmark 1).
DEAR = ("dataclasses", "inspect", "pathlib", "logging", "tempfile")


def run(project: Project, *args: str, importtime: bool = False) -> subprocess.CompletedProcess[str]:
    """`python -m ralph -C control run --allow-root`, optionally with -X importtime."""
    argv = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "ralph"]
    return subprocess.run(
        [*argv, "-C", str(project.control), "run", "--allow-root", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def imported(stderr: str) -> set[str]:
    """The top-level packages -X importtime says were imported."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def ticks(project: Project) -> list[dict[str, object]]:
    path = project.paths.parallel / "ticks.json"
    return json.loads(path.read_text())["ticks"] if path.exists() else []


def test_an_idle_tick_exits_before_any_heavy_import(project: Project) -> None:
    first = run(project)
    assert first.returncode == 0, first.stderr
    assert stamp.read(project.paths.parallel) is not None  # nothing to do: the tick left its stamp
    idle = run(project, importtime=True)
    assert idle.returncode == 0, idle.stderr
    assert imported(idle.stderr).isdisjoint(HEAVY + DEAR), sorted(imported(idle.stderr) & set(HEAVY + DEAR))
    assert [t["exit_code"] for t in ticks(project)][-2:] == [0, 0]  # both ends recorded


def test_new_work_on_the_remote_wakes_the_idle_tick(project: Project) -> None:
    assert run(project).returncode == 0
    task = project.add("Something to do")  # moves origin's base
    woke = run(project, importtime=True)
    assert woke.returncode == 0, woke.stderr
    assert "click" in imported(woke.stderr)
    assert project.worker(task).lifecycle is Lifecycle.RUNNING


@pytest.mark.parametrize("change", ["config", "pause", "state"])
def test_a_local_change_wakes_the_idle_tick(project: Project, change: str) -> None:
    assert run(project).returncode == 0
    if change == "config":
        project.configure(parallel={"workers": 2})  # a commit too: that moves the base as well
        (project.control / ".ralph" / "config.toml").write_text(
            (project.control / ".ralph" / "config.toml").read_text() + "\n"
        )
        assert run(project).returncode == 0  # the full tick, which leaves a new stamp
        (project.control / ".ralph" / "config.toml").write_text(
            (project.control / ".ralph" / "config.toml").read_text() + "\n"
        )
    elif change == "pause":
        assert ralph(project.control, "pause").exit_code == 0
    else:
        text = project.paths.state.read_text()
        project.paths.state.write_text(text.replace('"workers": []', '"workers": [] '))
    woke = run(project, importtime=True)
    assert woke.returncode == 0, woke.stderr
    assert "click" in imported(woke.stderr)


def test_a_retry_falling_due_wakes_the_idle_tick(project: Project) -> None:
    project.configure(agent={"retry_backoff_minutes": [0.05], "max_attempts": 2})  # a 3 s backoff
    task = project.add("Fails once", description="scripted-agent: fail")
    state = project.run_until(lambda s: bool(s.workers) and s.workers[0].lifecycle is Lifecycle.FAILED)
    assert state.workers[0].next_attempt_at is not None
    assert run(project).returncode == 0
    saved = stamp.read(project.paths.parallel)
    assert saved is not None and saved.wake_at is not None
    project.wait_for_jobs()
    import time

    time.sleep(3.5)
    woke = run(project)
    assert woke.returncode == 0, woke.stderr
    assert project.worker(task).attempt == 2


def lose(project: Project, since: datetime | None = None) -> tuple[subprocess.CompletedProcess[str], int]:
    """A tick (with -X importtime) while another process holds the lock (taken at `since`); and that
    process's pid."""
    holder, _ = hold_lock(project.paths.lock, since=since)
    try:
        return run(project, importtime=True), holder.pid
    finally:
        stop(holder)


def test_a_losing_tick_exits_75_before_any_heavy_import(project: Project) -> None:
    lost, pid = lose(project)
    assert lost.returncode == 75
    messages = [line for line in lost.stderr.splitlines() if not line.startswith("import time:")]
    assert messages == [
        f"ralph: another ralph tick holds {project.paths.lock} (pid {pid} since "
        + messages[0].split(" since ", 1)[1]
    ]
    assert messages[0].endswith("; nothing was changed, the next tick will run")
    assert imported(lost.stderr).isdisjoint({"click", "pydantic", "sh"})
    assert ticks(project)[-1]["exit_code"] == 75


def test_a_losing_tick_records_its_end_with_the_standard_library_s_smallest_pieces(project: Project) -> None:
    assert run(project).returncode == 0  # the ring exists: a lock-out is appended to it by ralph.ring
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    lost, pid = lose(project, since)
    assert lost.returncode == 75
    assert imported(lost.stderr).isdisjoint(HEAVY + DEAR), sorted(imported(lost.stderr) & set(HEAVY + DEAR))
    assert [t["exit_code"] for t in ticks(project)] == [0, 75]
    recorded = ticks(project)[-1]["holder"]
    assert isinstance(recorded, dict) and recorded["pid"] == pid
    assert datetime.fromisoformat(recorded["since"]) == since  # the holder's own time, as it wrote it


def test_an_idle_tick_that_ends_an_alert_is_judged_and_the_hook_hears_the_recovery(project: Project) -> None:
    heard = project.control.parent / "heard.txt"
    hook = project.control.parent / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$RALPH_EVENT" >> "{heard}"\n')
    hook.chmod(0o755)
    project.configure(hooks={"on_event": [str(hook)]})
    assert run(project).returncode == 0  # remembers the hook, leaves the idle stamp
    assert stamp.read(project.paths.parallel) is not None
    hung_since = datetime.now(UTC) - timedelta(hours=1)
    holder, _ = hold_lock(project.paths.lock, since=hung_since)
    try:
        assert run(project).returncode == 75  # held for an hour: hung, and the hook is told at once
    finally:
        stop(holder)
    wait_until(lambda: heard.exists() and heard.read_text() == "ticks_failing\n", message="no alert")
    idle = run(project, importtime=True)  # the stamp still holds: the idle path, which must not
    assert idle.returncode == 0, idle.stderr  # append quietly past the alert
    assert "click" not in imported(idle.stderr)
    wait_until(lambda: heard.read_text() == "ticks_failing\nticks_recovered\n", message="no recovery heard")
    assert [t["exit_code"] for t in ticks(project)] == [0, 75, 0]
    assert json.loads((project.paths.parallel / "ticks.json").read_text())["alerted"] is None


def test_the_full_tick_uses_the_lock_the_entry_took(project: Project) -> None:
    """One flock per tick: the tick runs under the lock the entry took (no second flock on another
    descriptor of the same file, which would wait on itself), and leaves it free."""
    task = project.add("Work")
    result = run(project)
    assert result.returncode == 0, result.stderr
    assert project.worker(task).lifecycle is Lifecycle.RUNNING
    holder, _ = hold_lock(project.paths.lock)  # free again once the tick exited
    stop(holder)
    state = project.run_until(all_landed(1))
    assert state.workers[0].landed_sha == git(project.origin, "rev-parse", BASE)


def test_options_it_cannot_read_go_to_the_full_command_line(project: Project) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ralph", "-C", str(project.control), "run", "--allow-root", "--bogus"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "No such option '--bogus'" in result.stderr
    dry = run(project, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert stamp.read(project.paths.parallel) is None  # a dry run takes no lock and leaves no stamp


def test_eight_ticks_at_once_on_a_loaded_machine_start_each_task_once(project: Project) -> None:
    """Both cores busy with loops, eight ticks started together, three times: every tick ends 0 or 75,
    the losers before any heavy import, and no task's agent is started twice."""
    tasks = [project.add(f"Task {n}", description=f"scripted-agent: write t{n}.txt {n}") for n in range(3)]
    loops = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(max(2, os.cpu_count() or 2))
    ]
    try:
        for _ in range(3):
            argv = [sys.executable, "-X", "importtime", "-m", "ralph", "-C", str(project.control)]
            started = [
                subprocess.Popen(
                    [*argv, "run", "--allow-root", "--workers", "3"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(8)
            ]
            ended = [(p.wait(timeout=120), p.communicate()[1]) for p in started]
            codes = sorted(code for code, _ in ended)
            assert set(codes) <= {0, 75} and 0 in codes, ended
            for code, stderr in ended:
                assert "Traceback" not in stderr
                if code == 75:
                    assert "another ralph tick holds" in stderr
                    assert imported(stderr).isdisjoint(HEAVY)
            project.wait_for_jobs()
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    state = project.state()
    for task in tasks:
        log = (project.paths.run_dir(task) / "agent.log").read_text()
        worker = state.worker(task)
        assert worker is not None
        assert log.count(f"started agent for {task}") == worker.attempt == 1, log
