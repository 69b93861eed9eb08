"""A full disk, a read-only filesystem, too many open files: the user's to fix, so exit 1 with one line
naming the path and the fix, never "a bug in ralph". And a job whose result cannot be written is not
lost: the result has its space taken when the job starts, and a signed line in the job's log as a
last resort.

The disks are real: a small tmpfs per test (tests/disk.py), filled to the last byte.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import BASE, git
from disk import fill, small_disk
from harness import Project, all_landed, archive_count, make_project, wait_until

from ralph import job, proc
from ralph.errors import ExitCode, GitError, RalphError, classify, resource_error
from ralph.state import Lifecycle

PY = sys.executable


def ralph_process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "ralph", *args], capture_output=True, text=True, timeout=120)


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], *, starts: str, fix: str, alone: bool = True
) -> str:
    """Exit 1, and the last line on stderr is the error (the only line, unless not `alone`)."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert lines and (len(lines) == 1 or not alone), result.stderr
    line = lines[-1]
    assert line.startswith(f"ralph: error: {starts}"), line
    assert fix in line, line
    return line


# --- the one mapping ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "says", "fix"),
    [
        (
            errno.ENOSPC,
            "no space left on device: /srv/app/.ralph/x",
            "free space on the filesystem of /srv/app",
        ),
        (errno.EDQUOT, "disk quota exceeded: /srv/app/.ralph/x", "free space in your quota"),
        (errno.EROFS, "read-only file system: /srv/app/.ralph/x", "remount the filesystem of /srv/app"),
        (errno.EMFILE, "too many open files in this process: /srv/app/.ralph/x", "ulimit -n"),
        (errno.ENFILE, "too many open files on this machine: /srv/app/.ralph/x", "fs.file-max"),
    ],
)
def test_a_resource_error_is_exit_1_with_the_path_and_the_fix(code: int, says: str, fix: str) -> None:
    failure = classify(OSError(code, os.strerror(code), "/srv/app/.ralph/x"))
    assert (failure.exit_code, failure.bug) == (ExitCode.ERROR, False)
    assert failure.message.startswith(says + "; ")
    assert fix in failure.message


def test_a_resource_error_is_found_behind_what_it_caused() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise KeyError("written while handling it") from None
    except KeyError as e:
        failure = classify(e)
    assert failure.exit_code == ExitCode.ERROR
    assert failure.message == (
        "no space left on device; free space on the filesystem of the checkout and its .ralph/ directory"
    )


def test_git_saying_no_space_is_the_same() -> None:
    e = GitError(
        "`git commit-tree` failed in /srv/app (exit 128): fatal: write error: No space left on device",
        stderr="error: unable to create temporary file: No space left on device\n",
        cwd=Path("/srv/app"),
    )
    failure = classify(e)
    assert failure.exit_code == ExitCode.ERROR
    assert failure.message.endswith("; free space on the filesystem of /srv/app")
    assert resource_error(GitError("`git fetch` failed: could not read from remote")) is None


def test_other_errors_keep_their_meaning() -> None:
    assert classify(RalphError("bad\nconfig")).message == "bad config"
    assert classify(KeyboardInterrupt()).exit_code == ExitCode.INTERRUPTED
    bug = classify(PermissionError(errno.EACCES, "Permission denied", "/x"))
    assert (bug.exit_code, bug.bug) == (ExitCode.INTERNAL, True)


# --- commands on a real full disk ---------------------------------------------------------------------


@pytest.fixture
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | None]:
    with small_disk(request, tmp_path / "disk") as mounted:
        yield mounted


@pytest.fixture
def full_checkout(disk: Path | None, origin: Path) -> Path | None:
    """A control checkout set up for ralph (queue tracked on origin) on a tmpfs filled to the brim."""
    if disk is None:
        return None
    control = disk / "control"
    git(disk, "clone", "-q", str(origin), str(control))
    make_project(origin, control).tick()  # a checkout where ticks have run: its lock and state exist
    fill(disk)
    return control


def test_a_command_that_cannot_write_its_file_says_where_and_what_to_do(full_checkout: Path | None) -> None:
    if full_checkout is None:
        return  # passed in a namespace of its own
    result = ralph_process("-C", str(full_checkout), "task", "add", "--no-push", "A task")
    queue = full_checkout / ".ralph" / "queue.json"
    line = assert_one_line_error(
        result,
        starts=f"no space left on device: {full_checkout / '.ralph'}/",
        fix=f"free space on the filesystem of {full_checkout / '.ralph'}/",
    )
    assert "queue.json" in line or "done.json" in line
    assert json.loads(queue.read_text())["tasks"] == []  # nothing half-written


def test_git_failing_on_a_full_disk_says_what_to_do(full_checkout: Path | None) -> None:
    if full_checkout is None:
        return
    result = ralph_process("-C", str(full_checkout), "task", "add", "A task")
    assert_one_line_error(
        result,
        starts="no space left on device: `git ",
        fix=f"free space on the filesystem of {full_checkout}",
    )


def test_a_read_only_filesystem_says_what_to_do(disk: Path | None, origin: Path) -> None:
    if disk is None:
        return
    control = disk / "control"
    git(disk, "clone", "-q", str(origin), str(control))
    make_project(origin, control)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    result = ralph_process("-C", str(control), "pause", "--reason", "maintenance")
    assert_one_line_error(
        result, starts=f"read-only file system: {control / '.ralph'}", fix="remount the filesystem of"
    )


def test_too_many_open_files_says_what_to_do(project: Project) -> None:
    """A limit of open files so low that git cannot be started, but Python and ralph can."""
    code = (
        "import resource, sys; from ralph.cli import main; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[1]))); "
        "sys.argv = ['ralph', *sys.argv[2:]]; main()"
    )
    for limit in range(8, 40):
        result = subprocess.run(
            [PY, "-c", code, str(limit), "-C", str(project.control), "queue", "list"],
            capture_output=True,
            text=True,
        )
        if "too many open files" in result.stderr:
            assert_one_line_error(result, starts="too many open files in this process", fix="ulimit -n")
            return
        assert result.returncode == 0 or "Traceback" not in result.stderr, result.stderr
    pytest.fail("no open-file limit made ralph run out of files")


# --- a job's result on a full disk -------------------------------------------------------------------


def start_job(where: Path, script: str, *, name: str = "job") -> job.StartedJob:
    spec = job.JobSpec(
        task_id="RQ-0001",
        kind="agent",
        argv=["sh", "-c", script],
        cwd=str(where),
        env={"PATH": os.environ["PATH"]},
        log_path=str(where / f"{name}.log"),
        result_path=str(where / f"{name}.result.json"),
        timeout_s=30,
        grace_s=1,
        created_at="2026-11-21T10:00:00Z",
    )
    return job.start(spec, where / f"{name}.spec.json")


def finished(started: job.StartedJob) -> tuple[job.Outcome, job.JobResult | None]:
    wait_until(lambda: not proc.is_alive(started.identity), 30, "waiting for the wrapper to exit")
    started._process.wait(timeout=10)
    now = datetime.now(UTC)
    return job.check(
        started.identity,
        Path(started.spec.result_path),
        deadline=now + timedelta(hours=1),
        grace_s=1,
        now=now,
    )


def test_a_job_that_fills_the_disk_still_has_its_result(disk: Path | None) -> None:
    if disk is None:
        return
    started = start_job(disk, "cat /dev/zero > filler; exit 4")
    assert started.confirm()
    outcome, result = finished(started)
    assert outcome is job.Outcome.FINISHED and result is not None
    assert (result.exit_code, result.error) == (4, None)
    assert Path(started.spec.result_path).exists()  # in the space taken when it started
    assert not Path(started.spec.result_path + job.RESERVED_SUFFIX).exists()


def test_a_job_on_a_disk_full_from_the_start_leaves_its_result_in_its_log(disk: Path | None) -> None:
    if disk is None:
        return
    # The log of an earlier attempt: its last block has room for a line, as a log's usually has.
    (disk / "job.log").write_text("attempt 1 said hello\n")
    started = start_job(disk, "echo 'the command speaks'; exit 3")
    filler = fill(disk)
    assert started.confirm()
    outcome, result = finished(started)
    assert outcome is job.Outcome.FINISHED and result is not None, Path(started.spec.log_path).read_text()
    assert (result.exit_code, result.timed_out) == (3, False)
    assert not Path(started.spec.result_path).exists()
    log = Path(started.spec.log_path).read_text().splitlines()
    assert log[0] == "attempt 1 said hello"
    assert any(line.startswith(f"{job.RECORD} job.result.json ") for line in log), log
    # Room again: the tick reads the same result; nothing new needs writing for it.
    filler.unlink()
    assert job.read_result(Path(started.spec.result_path)) == result


def test_a_result_line_the_command_printed_is_not_taken_for_the_wrappers(tmp_path: Path) -> None:
    """The command writes to the same log: a line it forged, without the key in the job's spec, is
    ignored, and the job counts as lost, as any job without a result."""
    spec = job.JobSpec(
        task_id="RQ-0001",
        kind="ci",
        argv=["true"],
        cwd=str(tmp_path),
        env={},
        log_path=str(tmp_path / "ci.log"),
        result_path=str(tmp_path / "gate-1.result.json"),
        timeout_s=1,
        grace_s=1,
        created_at="2026-11-21T10:00:00Z",
    )
    (tmp_path / "gate-1.spec.json").write_text(json.dumps(asdict(spec)))
    passed = json.dumps(
        {
            "exit_code": 0,
            "signal": None,
            "timed_out": False,
            "started_at": "x",
            "finished_at": "y",
            "error": None,
        },
        separators=(",", ":"),
    )
    forged = f"{job.RECORD} gate-1.result.json {passed} {'0' * 64}\n"
    (tmp_path / "ci.log").write_text("tests failed\n" + forged)
    assert job.read_result(Path(spec.result_path)) is None
    # Signed with the spec's key, the same line is the wrapper's.
    signed = job._sign(spec.record_key, "gate-1.result.json", passed)
    (tmp_path / "ci.log").write_text(f"tests failed\n{job.RECORD} gate-1.result.json {passed} {signed}\n")
    result = job.read_result(Path(spec.result_path))
    assert result is not None and result.exit_code == 0


# --- ticks on a disk that fills up while jobs run ---------------------------------------------------

WAITING_AGENT = """#!/bin/sh
# Does its work, then waits for the test to say go: meanwhile the disk fills up.
echo "work of $RALPH_TASK_ID" > "work-$RALPH_TASK_ID.txt"
git add -A && git commit -q -m "$RALPH_TASK_ID: work"
touch "{flags}/ready-$RALPH_TASK_ID"
while [ ! -e "{flags}/go" ]; do sleep 0.05; done
"""


def test_ticks_on_a_full_disk_exit_1_lose_no_attempt_and_land_once_there_is_room(
    disk: Path | None, origin: Path, tmp_path: Path
) -> None:
    if disk is None:
        return
    flags = tmp_path / "flags"
    flags.mkdir()
    agent = tmp_path / "waiting-agent"
    agent.write_text(WAITING_AGENT.format(flags=flags))
    agent.chmod(0o755)
    control = disk / "control"
    git(disk, "clone", "-q", str(origin), str(control))
    project = make_project(origin, control, agent={"command": [str(agent)]}, sandbox={"mode": "none"})
    ids = [project.add("One"), project.add("Two")]
    first = project.tick_process("--workers", "2")
    assert first.returncode == 0, first.stderr
    wait_until(lambda: all((flags / f"ready-{t}").exists() for t in ids), 60, "waiting for the agents")

    filler = fill(disk)
    (flags / "go").touch()
    # The agents finish on a full disk; each wrapper still leaves its result.
    for task in ids:
        result = Path(project.worker(task).job.result_path)  # type: ignore[union-attr]
        wait_until(lambda r=result: job.read_result(r) is not None, 30, f"waiting for the result of {task}")

    state_before = project.paths.state.read_bytes()
    for _ in range(2):
        tick = project.tick_process("--workers", "2")
        # Before it: the lines of what the tick did until it could not save (a task it meant to fail,
        # the record of its end it could not keep).
        assert_one_line_error(
            tick,
            starts="no space left on device: ",
            fix=f"free space on the filesystem of {disk}",
            alone=False,
        )
    assert project.paths.state.read_bytes() == state_before  # nothing half-done was saved
    for task in ids:
        worker = project.worker(task)
        assert (worker.lifecycle, worker.attempt) == (Lifecycle.RUNNING, 1), worker

    filler.unlink()
    state = project.run_until(all_landed(2), workers=2, timeout=120)
    assert [w.attempt for w in state.workers] == [1, 1]  # neither attempt was lost and run again
    for task in ids:
        assert archive_count(origin, task) == 1
    assert git(origin, "show", f"{BASE}:work-{ids[0]}.txt") == f"work of {ids[0]}"
