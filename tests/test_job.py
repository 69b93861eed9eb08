"""Detached jobs, driven as the tick drives them: real wrappers (`python -m ralph.job`), real commands."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from harness import wait_until
from helpers import raw_state

from ralph import job, proc
from ralph.lock import TickLock
from ralph.workspace import Setup

SH = shutil.which("sh") or "/bin/sh"
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime (fields 14 and 15) of a process or zombie, from /proc, in seconds."""
    raw = (Path("/proc") / str(pid) / "stat").read_bytes()
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def base_env() -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "LC_ALL": "C.UTF-8"}


class Jobs:
    """Builds specs under tmp_path, starts wrappers with job.start, and leaves nothing running."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "jobs"
        self.work = tmp_path / "work"
        self.work.mkdir()
        self.started: list[job.StartedJob] = []
        self.count = 0

    def spec(
        self,
        argv: list[str],
        *,
        timeout_s: float = 30,
        grace_s: float = 2,
        env: dict[str, str] | None = None,
        stdin_path: Path | None = None,
        cwd: Path | None = None,
    ) -> tuple[job.JobSpec, Path]:
        self.count += 1
        stem = self.root / f"job{self.count}"
        spec = job.JobSpec(
            task_id="RQ-0001",
            kind="agent",
            argv=argv,
            cwd=str(cwd or self.work),
            env=base_env() if env is None else env,
            log_path=str(stem) + ".log",
            result_path=str(stem) + ".result.json",
            timeout_s=timeout_s,
            grace_s=grace_s,
            created_at="2026-11-21T10:00:00Z",
            stdin_path=str(stdin_path) if stdin_path else None,
        )
        return spec, Path(str(stem) + ".spec.json")

    def start(self, spec: job.JobSpec, spec_path: Path) -> job.StartedJob:
        started = job.start(spec, spec_path)
        self.started.append(started)
        return started

    def run(self, argv: list[str], **kwargs: object) -> tuple[job.StartedJob, job.JobResult]:
        """Start, confirm, and wait for the result (at most 20 s)."""
        spec, spec_path = self.spec(argv, **kwargs)  # type: ignore[arg-type]
        started = self.start(spec, spec_path)
        assert started.confirm() is True
        return started, wait_result(started)

    def cleanup(self) -> None:
        for started in self.started:
            started.abandon()
            proc.kill_group(started.identity, grace_s=0)
            started._process.wait(timeout=10)


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[Jobs]:
    manager = Jobs(tmp_path)
    try:
        yield manager
    finally:
        manager.cleanup()


def wait_result(started: job.StartedJob, timeout_s: float = 20.0) -> job.JobResult:
    """The job's result; fails at once if the wrapper died without writing one."""
    path = Path(started.spec.result_path)
    wait_until(
        lambda: path.exists() or not proc.is_alive(started.identity),
        timeout_s,
        message=f"waiting for {path} or an exit",
    )
    result = job.read_result(path)
    assert result is not None, f"the wrapper exited without a result; its log:\n{log_text(started)}"
    return result


def wait_wrapper_exit(started: job.StartedJob, timeout_s: float = 20.0) -> None:
    wait_until(
        lambda: not proc.is_alive(started.identity), timeout_s, message="waiting for the wrapper to exit"
    )


def log_text(started: job.StartedJob) -> str:
    return Path(started.spec.log_path).read_text()


def parse_z(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value.removesuffix("Z") + "+00:00")


def command_pids(started: job.StartedJob) -> list[int]:
    return [p for p in proc.group_members(started.identity.pid) if p != started.identity.pid]


# --- two-phase start ---------------------------------------------------------------------------------


def test_nothing_runs_before_confirm_and_the_command_runs_after(jobs: Jobs, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    spec, spec_path = jobs.spec([SH, "-c", f'echo ran > "{marker}"'])
    before = datetime.now(UTC)
    started = jobs.start(spec, spec_path)
    assert started.identity == proc.identify(started.identity.pid)
    assert started.identity.pid == started._process.pid
    stat = proc.read_stat(started.identity.pid)
    assert stat is not None
    assert stat.pgrp == started.identity.pid  # its own session and group
    assert stat.start_ticks == started.identity.start_ticks
    time.sleep(1.0)  # time enough to misbehave
    assert not marker.exists()
    assert not Path(spec.result_path).exists()
    assert proc.is_alive(started.identity)
    assert command_pids(started) == []
    outcome = job.check(
        started.identity, Path(spec.result_path), deadline=before + timedelta(hours=1), grace_s=2, now=before
    )
    assert outcome == (job.Outcome.RUNNING, None)

    assert started.confirm() is True
    result = wait_result(started)
    assert marker.read_text() == "ran\n"
    assert result == job.JobResult(
        exit_code=0,
        signal=None,
        timed_out=False,
        started_at=result.started_at,
        finished_at=result.finished_at,
        error=None,
    )
    assert result.succeeded and result.describe() == "exit 0"
    assert before <= parse_z(result.started_at) <= parse_z(result.finished_at) <= datetime.now(UTC)
    wait_wrapper_exit(started)
    log = log_text(started)
    assert "started agent for RQ-0001" in log
    assert "finished agent for RQ-0001: exit 0" in log
    outcome = job.check(
        started.identity, Path(spec.result_path), deadline=before + timedelta(hours=1), grace_s=2, now=before
    )
    assert outcome == (job.Outcome.FINISHED, result)


def test_abandon_exits_the_wrapper_without_running_anything(jobs: Jobs, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    spec, spec_path = jobs.spec([SH, "-c", f'echo ran > "{marker}"'])
    started = jobs.start(spec, spec_path)
    started.abandon()
    assert started._process.wait(timeout=20) == 0
    assert not marker.exists()
    assert not Path(spec.result_path).exists()
    assert "not started" in log_text(started)
    assert "started agent" not in log_text(started)
    now = datetime.now(UTC)
    assert job.check(started.identity, Path(spec.result_path), deadline=now, grace_s=2, now=now) == (
        job.Outcome.LOST,
        None,
    )


TICK_THAT_DIES = """
import json, os, sys
from pathlib import Path
from ralph import job
spec = job.JobSpec(**json.loads(sys.argv[1]))
started = job.start(spec, Path(sys.argv[2]))
print(started.identity.pid, started.identity.start_ticks, started.identity.boot_id, flush=True)
os._exit(1)  # killed between start and confirm: neither confirm() nor abandon() is ever called
"""


def test_a_tick_that_dies_before_confirming_leaves_nothing_running(jobs: Jobs, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    spec, spec_path = jobs.spec([SH, "-c", f'echo ran > "{marker}"'])
    env = dict(os.environ, PYTHONPATH=str(Path(job.__file__).resolve().parent.parent))
    tick = subprocess.run(
        [PY, "-c", TICK_THAT_DIES, json.dumps(asdict(spec)), str(spec_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert tick.returncode == 1, tick.stderr
    pid, ticks, boot = tick.stdout.split()
    identity = proc.Identity(int(pid), int(ticks), boot)
    wait_until(lambda: not proc.is_alive(identity), 20, message="waiting for the orphaned wrapper to exit")
    time.sleep(0.3)
    assert not marker.exists()
    assert not Path(spec.result_path).exists()
    assert "not started" in Path(spec.log_path).read_text()


# --- results -----------------------------------------------------------------------------------------


def test_a_non_zero_exit_is_recorded(jobs: Jobs) -> None:
    _, result = jobs.run([SH, "-c", "echo some output; exit 3"])
    assert (result.exit_code, result.signal, result.timed_out, result.error) == (3, None, False, None)
    assert not result.succeeded
    assert result.describe() == "exit 3"


def test_a_command_killed_by_a_signal(jobs: Jobs) -> None:
    started, result = jobs.run([SH, "-c", "kill -KILL $$"])
    assert (result.exit_code, result.signal, result.timed_out, result.error) == (None, 9, False, None)
    assert result.describe() == "killed by signal 9"
    assert "killed by signal 9" in log_text(started)


def test_a_command_that_does_not_exist(jobs: Jobs, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-agent")
    started, result = jobs.run([missing, "--flag"])
    assert result.exit_code is None and result.signal is None and result.timed_out is False
    assert result.error == f"could not start {missing}: No such file or directory"
    assert not result.succeeded
    assert started._process.wait(timeout=20) == 0  # the wrapper itself did not crash
    assert "Traceback" not in log_text(started)


def test_a_missing_stdin_file_is_an_error_result_not_a_lost_job(jobs: Jobs, tmp_path: Path) -> None:
    missing = tmp_path / "prompt.md"
    started, result = jobs.run([SH, "-c", "cat"], stdin_path=missing)
    assert result.exit_code is None and result.signal is None
    assert result.error is not None and str(missing) in result.error
    assert started._process.wait(timeout=20) == 0
    assert "Traceback" not in log_text(started)


def test_an_argv_the_kernel_cannot_take_is_an_error_result(jobs: Jobs) -> None:
    started, result = jobs.run([SH, "-c", "echo a\x00b"])
    assert result.exit_code is None and result.signal is None
    assert result.error is not None and result.error.startswith(f"could not start {SH}")
    assert started._process.wait(timeout=20) == 0


# --- the deadline ------------------------------------------------------------------------------------


def test_the_deadline_stops_the_command(jobs: Jobs) -> None:
    began = time.monotonic()
    started, result = jobs.run([SH, "-c", "exec sleep 100"], timeout_s=1, grace_s=1)
    elapsed = time.monotonic() - began
    assert result.timed_out is True
    assert (result.exit_code, result.signal) == (None, signal.SIGTERM)
    assert not result.succeeded and result.describe() == "timed out"
    assert 1 <= elapsed < 1 + 1 + 15
    assert command_pids(started) == []
    assert "deadline of 1s passed" in log_text(started)


def test_the_deadline_kills_a_term_ignoring_command_and_its_grandchild(jobs: Jobs, tmp_path: Path) -> None:
    gc_file = tmp_path / "gc"
    spec, spec_path = jobs.spec(
        [SH, "-c", f"trap '' TERM; sleep 100 & echo $! > \"{gc_file}\"; sleep 100"], timeout_s=1, grace_s=1
    )
    began = time.monotonic()
    started = jobs.start(spec, spec_path)
    assert started.confirm()
    wait_until(
        lambda: gc_file.exists() and gc_file.read_text().strip() != "",
        message="waiting for the grandchild pid",
    )
    grandchild = proc.identify(int(gc_file.read_text()))
    assert grandchild is not None and proc.is_alive(grandchild)
    assert proc.read_stat(grandchild.pid).pgrp == started.identity.pid  # type: ignore[union-attr]

    result = wait_result(started)
    elapsed = time.monotonic() - began
    assert result.timed_out is True
    assert (result.exit_code, result.signal) == (None, signal.SIGKILL)  # TERM was ignored
    assert 1 + 1 <= elapsed < 1 + 1 + 15  # timeout, then the whole grace, then KILL
    assert not proc.is_alive(grandchild)
    assert command_pids(started) == []
    wait_wrapper_exit(started)
    assert proc.group_members(started.identity.pid) == []
    assert proc.is_gone(started.identity)


def test_a_leftover_background_grandchild_is_cleaned_up_after_a_normal_exit(
    jobs: Jobs, tmp_path: Path
) -> None:
    gc_file = tmp_path / "gc"
    started, result = jobs.run([SH, "-c", f'sleep 100 & echo $! > "{gc_file}"; exit 0'])
    assert (result.exit_code, result.timed_out) == (0, False)
    gc_pid = int(gc_file.read_text())
    # The result is written only after the group was emptied.
    assert raw_state(gc_pid) in (None, "Z")
    assert command_pids(started) == []


def test_waiting_out_the_grace_for_a_stubborn_leftover_does_not_spin(jobs: Jobs, tmp_path: Path) -> None:
    """After the command has exited, the wrapper waits the grace for its leftovers by sleeping, not by
    scanning /proc in a tight loop (which burned a whole core for the grace period)."""
    gc_file = tmp_path / "gc"
    grace = 3.0
    began = time.monotonic()
    started, result = jobs.run(
        [SH, "-c", f"trap '' TERM; sleep 100 & echo $! > \"{gc_file}\"; exit 0"], grace_s=grace
    )
    elapsed = time.monotonic() - began
    assert (result.exit_code, result.timed_out) == (0, False)
    assert elapsed >= grace  # the leftover ignored TERM, so the grace was waited out
    assert raw_state(int(gc_file.read_text())) in (None, "Z")
    used = cpu_seconds(started.identity.pid)
    assert used < grace / 3, f"the wrapper used {used:.2f}s of CPU during a {grace}s grace"


# --- what the command gets -------------------------------------------------------------------------


def test_the_command_reads_stdin_from_the_file_verbatim(jobs: Jobs, tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.md"
    canary = tmp_path / "canary"
    content = (
        "Fix the \"quoted\" thing and it's 'single' too.\n"
        f"$(touch {canary}) `touch {canary}` ; rm -rf ~ \\n\n"
        "--dangerously-skip-permissions\n\n  trailing spaces  \n"
    ).encode() + b"\xff\x00binary\n"
    prompt.write_bytes(content)
    out = tmp_path / "got"
    _, result = jobs.run(
        [PY, "-c", "import sys; open(sys.argv[1], 'wb').write(sys.stdin.buffer.read())", str(out)],
        stdin_path=prompt,
    )
    assert result.exit_code == 0
    assert out.read_bytes() == content
    assert not canary.exists()


def test_without_stdin_path_the_command_reads_nothing(jobs: Jobs, tmp_path: Path) -> None:
    out = tmp_path / "got"
    _, result = jobs.run(
        [PY, "-c", "import sys; open(sys.argv[1], 'wb').write(sys.stdin.buffer.read())", str(out)]
    )
    assert result.exit_code == 0
    assert out.read_bytes() == b""  # /dev/null, not the wrapper's pipe from the tick


def test_the_command_gets_exactly_spec_env(
    jobs: Jobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONLY_IN_THE_TICK", "secret-token")
    out = tmp_path / "environ"
    env = {**base_env(), "ONLY_IN_SPEC": "yes", "HOME": str(tmp_path / "scratch-home")}
    _, result = jobs.run(
        # /proc/self/environ is the block execve received, before Python adjusts anything.
        [PY, "-c", "import shutil, sys; shutil.copy('/proc/self/environ', sys.argv[1])", str(out)],
        env=env,
    )
    assert result.exit_code == 0
    received = dict(item.split("=", 1) for item in out.read_text().split("\0") if item)
    assert received == env


def test_the_command_runs_in_spec_cwd(jobs: Jobs, tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    _, result = jobs.run([SH, "-c", "pwd > where"], cwd=workspace)
    assert result.exit_code == 0
    assert (workspace / "where").read_text() == f"{workspace}\n"


def test_the_spec_file_is_private(jobs: Jobs) -> None:
    spec, spec_path = jobs.spec([SH, "-c", "exit 0"], env={**base_env(), "API_KEY": "s3cret"})
    started = jobs.start(spec, spec_path)
    assert stat.S_IMODE(spec_path.stat().st_mode) == 0o600
    assert json.loads(spec_path.read_text())["env"]["API_KEY"] == "s3cret"
    started.abandon()


def test_a_spec_file_that_already_exists_world_readable_is_made_private(jobs: Jobs) -> None:
    spec, spec_path = jobs.spec([SH, "-c", "exit 0"], env={**base_env(), "API_KEY": "s3cret"})
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text("{}")
    spec_path.chmod(0o644)
    started = jobs.start(spec, spec_path)
    assert stat.S_IMODE(spec_path.stat().st_mode) == 0o600
    assert json.loads(spec_path.read_text())["env"]["API_KEY"] == "s3cret"
    started.abandon()


LIST_FDS = """
import json, os, sys, time
targets = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        targets[fd] = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump(targets, f)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(30)
"""


def fd_targets(pid: int) -> list[str]:
    fd_dir = Path("/proc") / str(pid) / "fd"
    targets = []
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            targets.append(os.readlink(fd))
    return targets


def test_no_job_inherits_the_tick_lock(jobs: Jobs, tmp_path: Path) -> None:
    lock_path = tmp_path / "state" / "state.json.lock"
    out = tmp_path / "fds.json"
    lock = TickLock(lock_path, now=datetime.now(UTC))
    lock.acquire()
    try:
        assert str(lock_path) in fd_targets(os.getpid())  # the check below can see a lock fd
        spec, spec_path = jobs.spec([PY, "-c", LIST_FDS, str(out)])
        started = jobs.start(spec, spec_path)
        assert started.confirm()
        wait_until(out.exists, message="waiting for the command to list its descriptors")
    finally:
        lock.release()
    in_command = json.loads(out.read_text())
    assert str(lock_path) not in in_command.values()
    assert in_command["1"] == spec.log_path  # and it did see its real descriptors
    assert str(lock_path) not in fd_targets(started.identity.pid)  # nor does the wrapper hold it
    # While the job lives on, the next tick gets the lock at once.
    assert command_pids(started)
    second = TickLock(lock_path, now=datetime.now(UTC), wait_s=0)
    second.acquire()
    second.release()


@pytest.mark.parametrize("planted", ["json.py", "ralph/__init__.py", "ralph/job.py"])
def test_modules_in_the_workspace_are_never_imported_by_the_wrapper(
    jobs: Jobs, tmp_path: Path, planted: str
) -> None:
    """The workspace is the agent's: a module it plants must not run in the wrapper, whose environment
    is the tick's (with credentials the agent is not given)."""
    workspace = tmp_path / "workspace"
    canary = tmp_path / "canary"
    module = workspace / planted
    module.parent.mkdir(parents=True)
    if planted.startswith("ralph/"):
        (workspace / "ralph" / "__init__.py").write_text("")
    module.write_text(f"open({str(canary)!r}, 'w').write('imported')\n")
    _, result = jobs.run([SH, "-c", "echo ok > out"], cwd=workspace)
    assert not canary.exists()
    assert result.exit_code == 0
    assert (workspace / "out").read_text() == "ok\n"


def test_an_empty_entry_in_the_tick_pythonpath_does_not_import_from_the_workspace(
    jobs: Jobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `export PYTHONPATH=$PYTHONPATH:/x` with PYTHONPATH unset gives ":/x"; the empty entry is the cwd.
    monkeypatch.setenv("PYTHONPATH", f":{tmp_path / 'elsewhere'}")
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    canary = tmp_path / "canary"
    (workspace / "json.py").write_text(f"open({str(canary)!r}, 'w').write('imported')\n")
    _, result = jobs.run([SH, "-c", "exit 0"], cwd=workspace)
    assert not canary.exists()
    assert result.exit_code == 0


# --- check() -----------------------------------------------------------------------------------------


def test_check_running_overdue_and_lost(jobs: Jobs) -> None:
    spec, spec_path = jobs.spec([SH, "-c", "exec sleep 100"], timeout_s=60, grace_s=2)
    started = jobs.start(spec, spec_path)
    assert started.confirm()
    wait_until(lambda: len(command_pids(started)) == 1, message="waiting for the command to start")
    result_path = Path(spec.result_path)
    now = datetime.now(UTC)

    def look(deadline: datetime) -> tuple[job.Outcome, job.JobResult | None]:
        return job.check(started.identity, result_path, deadline=deadline, grace_s=2, now=now)

    assert look(now + timedelta(seconds=60)) == (job.Outcome.RUNNING, None)
    assert look(now - timedelta(seconds=2 + 29)) == (job.Outcome.RUNNING, None)  # within grace + 30 s
    assert look(now - timedelta(seconds=2 + 31)) == (job.Outcome.OVERDUE, None)
    assert look(now - timedelta(hours=5)) == (job.Outcome.OVERDUE, None)

    # The wrapper dies without a result (OOM killer, kill -9): lost, and its command lives on ...
    os.kill(started.identity.pid, signal.SIGKILL)
    wait_until(lambda: not proc.is_alive(started.identity), message="waiting for the wrapper to die")
    assert look(now + timedelta(seconds=60)) == (job.Outcome.LOST, None)
    assert not result_path.exists()
    orphans = command_pids(started)
    assert len(orphans) == 1
    # ... until the tick's kill of the group, by the dead wrapper's identity, stops it.
    assert proc.kill_group(started.identity, grace_s=2) is True
    assert command_pids(started) == []


def test_check_reads_a_bad_result_of_a_dead_wrapper_as_lost(jobs: Jobs) -> None:
    spec, spec_path = jobs.spec([SH, "-c", "exit 0"])
    started = jobs.start(spec, spec_path)
    started.abandon()
    wait_wrapper_exit(started)
    Path(spec.result_path).write_text("{not json")
    now = datetime.now(UTC)
    assert job.check(started.identity, Path(spec.result_path), deadline=now, grace_s=2, now=now) == (
        job.Outcome.LOST,
        None,
    )


def test_sigterm_to_the_wrapper_is_passed_on_and_a_result_is_still_written(jobs: Jobs) -> None:
    spec, spec_path = jobs.spec([SH, "-c", "exec sleep 100"], timeout_s=60, grace_s=5)
    started = jobs.start(spec, spec_path)
    assert started.confirm()
    wait_until(lambda: len(command_pids(started)) == 1, message="waiting for the command to start")
    began = time.monotonic()
    os.kill(started.identity.pid, signal.SIGTERM)  # the wrapper only, as a person or `kill` would
    result = wait_result(started)
    assert time.monotonic() - began < 5  # the command obeyed the forwarded TERM; no grace needed
    assert (result.exit_code, result.signal, result.timed_out, result.error) == (None, 15, False, None)
    wait_wrapper_exit(started)
    assert started._process.wait(timeout=5) == 0
    assert proc.group_members(started.identity.pid) == []
    assert "stopped from outside (SIGTERM)" in log_text(started)


def test_sigterm_before_the_command_starts_means_it_never_runs(jobs: Jobs, tmp_path: Path) -> None:
    """A TERM that lands after `go` but before the command exists must not be lost: the command would
    otherwise run to its deadline. A FIFO as stdin_path holds the wrapper in exactly that window."""
    fifo = tmp_path / "prompt.fifo"
    os.mkfifo(fifo)
    marker = tmp_path / "ran"
    spec, spec_path = jobs.spec(
        [SH, "-c", f'touch "{marker}"; exec sleep 100'], timeout_s=60, grace_s=2, stdin_path=fifo
    )
    started = jobs.start(spec, spec_path)
    assert started.confirm()
    wait_until(
        lambda: "started agent" in log_text(started), message="waiting for the wrapper to reach the command"
    )
    time.sleep(0.2)  # it is now blocked opening the FIFO
    os.kill(started.identity.pid, signal.SIGTERM)
    time.sleep(0.2)
    writer = os.open(fifo, os.O_WRONLY)  # lets the wrapper's open() return
    with contextlib.suppress(BrokenPipeError):  # it may close its end without reading
        os.write(writer, b"prompt\n")
    os.close(writer)
    result = wait_result(started, timeout_s=10)
    assert result.exit_code is None and result.timed_out is False
    assert result.error == "stopped (SIGTERM) before the command started"
    assert not marker.exists()
    wait_wrapper_exit(started)
    assert proc.group_members(started.identity.pid) == []


# --- read_result -------------------------------------------------------------------------------------


def test_read_result(tmp_path: Path) -> None:
    path = tmp_path / "r.result.json"
    assert job.read_result(path) is None
    for garbage in ["", "{not json", "[1, 2]", '"text"', "null", '{"exit_code": 0}', "\xff"]:
        path.write_text(garbage, errors="surrogateescape")
        assert job.read_result(path) is None, garbage
    path.write_bytes(b"\xff\xfe{")
    assert job.read_result(path) is None
    good = {
        "exit_code": 2,
        "signal": None,
        "timed_out": False,
        "started_at": "2026-11-21T10:00:00.000000Z",
        "finished_at": "2026-11-21T10:00:01.000000Z",
        "error": None,
    }
    path.write_text(json.dumps(good))
    assert job.read_result(path) == job.JobResult(**good)


def test_describe() -> None:
    stamp = "2026-11-21T10:00:00Z"
    assert job.JobResult(None, None, False, stamp, stamp, error="could not start x").describe() == (
        "could not start x"
    )
    assert job.JobResult(None, 9, True, stamp, stamp).describe() == "timed out"
    assert job.JobResult(None, 9, False, stamp, stamp).describe() == "killed by signal 9"
    assert job.JobResult(0, None, True, stamp, stamp).succeeded is False
    assert job.JobResult(0, None, False, stamp, stamp).succeeded is True


def test_the_wrapper_refuses_to_run_by_hand() -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(job.__file__).resolve().parent.parent))
    done = subprocess.run([PY, "-m", "ralph.job"], capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 2
    assert "usage: python -m ralph.job SPEC.json" in done.stderr


def test_a_job_makes_its_checkout_from_the_commit_before_the_command_runs(jobs: Jobs, repo: Path) -> None:
    """The CI gate judges exactly the commit it was given, in a checkout made from the commit object."""
    (repo / "judged.txt").write_text("first\n")
    subprocess.run(["git", "add", "judged.txt"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "first"], cwd=repo, check=True)
    first = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    (repo / "judged.txt").write_text("second\n")
    subprocess.run(["git", "commit", "-qam", "second"], cwd=repo, check=True)
    (repo / "judged.txt").write_text("an uncommitted edit\n")
    seen = jobs.work / "seen.txt"
    checkout = jobs.work / "gate"
    copy = f"import shutil; shutil.copy('judged.txt', {str(seen)!r})"
    spec, spec_path = jobs.spec([sys.executable, "-c", copy], cwd=checkout)
    setup = Setup(control=repo, base_branch="main")
    spec = dataclasses.replace(spec, prepare={"setup": setup.as_dict(), "commit": first, "base_sha": first})
    started = jobs.start(spec, spec_path)
    assert started.confirm() is True
    result = wait_result(started)
    assert result.exit_code == 0, result
    assert seen.read_text() == "first\n"
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True
    ).stdout.strip()
    assert head == first
    assert (repo / "judged.txt").read_text() == "an uncommitted edit\n"  # the repository is untouched


def test_a_commit_that_cannot_be_checked_out_is_an_error_result(jobs: Jobs, repo: Path) -> None:
    checkout = jobs.work / "gate"
    spec, spec_path = jobs.spec([sys.executable, "-c", "raise SystemExit(0)"], cwd=checkout)
    setup = Setup(control=repo, base_branch="main")
    spec = dataclasses.replace(
        spec, prepare={"setup": setup.as_dict(), "commit": "0" * 40, "base_sha": "0" * 40}
    )
    started = jobs.start(spec, spec_path)
    assert started.confirm() is True
    result = wait_result(started)
    assert result.exit_code is None and result.error is not None
    assert result.error.startswith(f"could not make the checkout {checkout}:")
    assert not checkout.exists()  # a half-made checkout is removed


def test_after_create_runs_in_the_new_checkout_before_the_command(jobs: Jobs, repo: Path) -> None:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    checkout = jobs.work / "ws"
    spec, spec_path = jobs.spec([sys.executable, "-c", "print(open('prepared').read())"], cwd=checkout)
    setup = Setup(control=repo, base_branch="main")
    spec = dataclasses.replace(
        spec,
        prepare={"setup": setup.as_dict(), "commit": head, "base_sha": head},
        after_create=["/bin/sh", "-c", "echo ready > prepared"],
        setup_timeout_s=30,
    )
    started = jobs.start(spec, spec_path)
    assert started.confirm() is True
    result = wait_result(started)
    assert result.exit_code == 0, result
    assert "ready" in Path(spec.log_path).read_text()


def test_a_failing_after_create_is_an_error_result_with_its_output(jobs: Jobs, repo: Path) -> None:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    marker = jobs.work / "command-ran"
    spec, spec_path = jobs.spec(["/bin/sh", "-c", f"touch {marker}"], cwd=jobs.work / "ws")
    spec = dataclasses.replace(
        spec,
        prepare={
            "setup": Setup(control=repo, base_branch="main").as_dict(),
            "commit": head,
            "base_sha": head,
        },
        after_create=["/bin/sh", "-c", "echo npm ERR! missing; exit 3"],
        setup_timeout_s=30,
    )
    started = jobs.start(spec, spec_path)
    assert started.confirm() is True
    result = wait_result(started)
    assert result.error == "hooks.after_create exited 3: npm ERR! missing"
    assert not marker.exists()


def test_after_create_past_its_timeout_is_killed_with_its_children(jobs: Jobs, repo: Path) -> None:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    pidfile = jobs.work / "grandchild.pid"
    spec, spec_path = jobs.spec(["/bin/true"], cwd=jobs.work / "ws")
    spec = dataclasses.replace(
        spec,
        prepare={
            "setup": Setup(control=repo, base_branch="main").as_dict(),
            "commit": head,
            "base_sha": head,
        },
        after_create=["/bin/sh", "-c", f"echo preparing; sleep 60 & echo $! > {pidfile}; wait"],
        setup_timeout_s=1,
    )
    started = jobs.start(spec, spec_path)
    assert started.confirm() is True
    result = wait_result(started)
    assert result.error == "hooks.after_create timed out after 1s and was killed: preparing"
    pid = int(pidfile.read_text())
    state = raw_state(pid)
    assert state in (None, "Z"), f"the hook's child {pid} outlived the timeout ({state})"
