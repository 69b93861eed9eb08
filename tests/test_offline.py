"""An unreachable remote stops only what needs it: finished jobs are reaped, committed and gated, new
tasks start from the base as last fetched, and landing waits until the remote answers again."""

from __future__ import annotations

from pathlib import Path

from conftest import git
from harness import Project, all_landed

from ralph import health
from ralph.state import Lifecycle


def unplug(project: Project) -> Path:
    """The remote stops answering (a server down, the network gone): its directory is moved away."""
    away = project.origin.with_name(project.origin.name + ".away")
    project.origin.rename(away)
    return away


def plug_back(project: Project, away: Path) -> None:
    away.rename(project.origin)


def passed(project: Project, task_id: str) -> bool:
    train = project.state().train
    position = train.position(task_id) if train else None
    return position is not None and position.passed is not None


def test_jobs_are_reaped_gated_and_started_offline_and_land_once_the_remote_is_back(project: Project) -> None:
    first = project.add("First")
    second = project.add("Second")
    project.tick(workers=1)  # First's agent starts; Second waits for a slot
    project.wait_for_jobs()
    origin_before = project.origin_log()
    away = unplug(project)

    offline = project.tick_process("--workers", "2")
    assert offline.returncode == 0, offline.stderr  # it did work: exit 0
    warnings = [line for line in offline.stderr.splitlines() if "not landing" in line]
    assert len(warnings) == 1 and "cannot fetch origin main" in warnings[0], offline.stderr
    assert "Traceback" not in offline.stderr
    assert project.worker(first).lifecycle is Lifecycle.CHECKING  # committed and its gate started
    assert project.worker(second).lifecycle is Lifecycle.RUNNING  # started from the base last fetched
    assert health.load(project.control).verdict == "offline"  # exit 0, yet the ticks are not healthy

    for _ in range(6):  # gates and the second agent finish; nothing needs the remote until landing
        project.wait_for_jobs()
        if passed(project, first) and passed(project, second):
            break
        assert project.tick_process("--workers", "2").returncode == 0
    assert passed(project, first) and passed(project, second)
    assert {project.worker(t).lifecycle for t in (first, second)} == {Lifecycle.INTEGRATING}

    idle = project.tick_process("--workers", "2")
    assert idle.returncode == 1, idle.stderr  # offline with nothing at all to do: the fetch's error
    assert "cannot fetch origin main" in idle.stderr.splitlines()[-1] and "Traceback" not in idle.stderr

    plug_back(project, away)
    assert project.origin_log() == origin_before  # nothing landed while the remote was away
    project.run_until(all_landed(2))
    assert project.origin_log()[:2] == [f"{second}: Second", f"{first}: First"]
    assert project.tick_process().returncode == 0
    assert health.load(project.control).verdict == "ok"


def test_offline_spawn_false_starts_nothing_from_an_old_base(project: Project) -> None:
    project.configure(run={"offline_spawn": False})
    task = project.add("Feature")
    away = unplug(project)
    ended = project.tick_process()
    assert ended.returncode == 1, ended.stderr
    assert project.state().worker(task) is None
    plug_back(project, away)
    assert project.tick_process().returncode == 0
    assert project.worker(task).lifecycle is Lifecycle.RUNNING


def test_a_remote_never_fetched_is_a_clear_error(project: Project) -> None:
    project.add("Feature")
    git(project.control, "update-ref", "-d", "refs/remotes/origin/main")
    unplug(project)
    ended = project.tick_process()
    assert ended.returncode == 1, ended.stderr
    said = ended.stderr.strip().splitlines()[-1]
    assert said.startswith("ralph: error: cannot fetch origin main") and "does not appear to be a git" in said
