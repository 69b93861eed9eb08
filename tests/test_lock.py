"""The tick lock, with real processes: it never blocks, dies with its holder, and no job inherits it."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from harness import wait_until
from helpers import hold_lock, stop

from ralph.errors import ExitCode, LockBusy, PreflightError
from ralph.lock import TickLock

NOW = datetime(2026, 11, 21, 10, 5, tzinfo=UTC)
HELD_SINCE = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)  # what a holder's note says

# A detached job: reports where its descriptors point, then lives on until killed.
JOB = """
import os, sys, time
fds = sorted(os.listdir("/proc/self/fd"), key=int)
targets = []
for fd in fds:
    try:
        targets.append(fd + " " + os.readlink("/proc/self/fd/" + fd))
    except OSError:
        pass
with open(sys.argv[1] + ".part", "w") as f:
    f.write("\\n".join(targets) + "\\n")
os.rename(sys.argv[1] + ".part", sys.argv[1])
time.sleep(120)
"""

CONTENDER = """
import sys
from datetime import datetime, UTC
from pathlib import Path
from ralph.errors import LockBusy
from ralph.lock import TickLock

lock = TickLock(Path(sys.argv[1]), now=datetime(2026, 11, 21, 10, 9, tzinfo=UTC))
try:
    lock.acquire()
except LockBusy as e:
    print("busy:", e)
else:
    lock.release()
    print("acquired")
"""


@pytest.fixture
def scripts(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, text in (("job", JOB), ("contender", CONTENDER)):
        out[name] = tmp_path / f"{name}.py"
        out[name].write_text(text)
    return out


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "parallel" / "state.json.lock"


class Procs:
    """Processes a test starts; whatever is still alive at the end is killed."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []
        self.pids: list[int] = []

    def holder(
        self, lock_path: Path, *, spawn: Sequence[str] = ()
    ) -> tuple[subprocess.Popen[str], list[str]]:
        proc, line = hold_lock(lock_path, since=HELD_SINCE, spawn=spawn)
        self.started.append(proc)
        return proc, line

    def adopt(self, pid: int) -> None:
        self.pids.append(pid)

    def cleanup(self) -> None:
        for proc in self.started:
            stop(proc)
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    yield p
    p.cleanup()


def contend(scripts: dict[str, Path], lock_path: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(scripts["contender"]), str(lock_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def fd_targets(report: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in report.read_text().splitlines() if line]


def test_a_held_lock_fails_at_once_naming_the_holder(
    scripts: dict[str, Path], lock_path: Path, procs: Procs
) -> None:
    holder, _ = procs.holder(lock_path)
    owner_line = lock_path.read_bytes()
    assert owner_line == f"pid {holder.pid} since 2026-11-21T10:00:00Z\n".encode()

    start = time.monotonic()
    with pytest.raises(LockBusy) as info:
        TickLock(lock_path, now=NOW).acquire()
    assert time.monotonic() - start < 1.0  # a tick that finds the lock held never waits

    assert str(info.value) == (
        f"another ralph tick holds {lock_path} (pid {holder.pid} since 2026-11-21T10:00:00Z); "
        "nothing was changed, the next tick will run"
    )
    assert info.value.exit_code == ExitCode.LOCKED == 75
    assert lock_path.read_bytes() == owner_line  # the loser did not truncate the holder's note
    assert contend(scripts, lock_path).startswith(
        f"busy: another ralph tick holds {lock_path} (pid {holder.pid} "
    )


def test_the_lock_is_free_at_once_after_its_holder_is_killed(
    scripts: dict[str, Path], lock_path: Path, procs: Procs
) -> None:
    holder, _ = procs.holder(lock_path)
    with pytest.raises(LockBusy):
        TickLock(lock_path, now=NOW).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_path.exists()  # a dead holder's file stays; it is not a stale lock

    lock = TickLock(lock_path, now=NOW)
    start = time.monotonic()
    lock.acquire()
    assert time.monotonic() - start < 1.0
    assert lock_path.read_text() == f"pid {os.getpid()} since 2026-11-21T10:05:00Z\n"
    lock.release()
    assert lock_path.exists()


def test_release_keeps_the_lock_file_and_frees_the_lock(
    scripts: dict[str, Path], lock_path: Path, procs: Procs
) -> None:
    holder, _ = procs.holder(lock_path)
    inode = lock_path.stat().st_ino
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.close()
    assert holder.stdout.readline() == "released\n"
    assert holder.wait() == 0
    assert lock_path.stat().st_ino == inode  # same file: never deleted, never replaced
    with TickLock(lock_path, now=NOW):
        assert contend(scripts, lock_path).startswith("busy: ")
    assert lock_path.stat().st_ino == inode
    assert contend(scripts, lock_path) == "acquired"
    assert lock_path.stat().st_ino == inode


def test_the_lock_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.json.lock"
    with TickLock(path, now=NOW):
        assert path.exists()
    assert path.exists()


def test_a_job_started_while_the_lock_is_held_does_not_hold_it(
    scripts: dict[str, Path], lock_path: Path, tmp_path: Path
) -> None:
    report = tmp_path / "job-fds.txt"
    lock = TickLock(lock_path, now=NOW)
    lock.acquire()
    job = subprocess.Popen(
        [sys.executable, str(scripts["job"]), str(report)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(report.exists, 20, "the job never wrote its report")
        lock.release()
        assert contend(scripts, lock_path) == "acquired"
        assert job.poll() is None  # it was acquired while the job still ran
        targets = fd_targets(report)
        # Released or not, an inherited descriptor would let the job re-take or keep the lock.
        assert str(lock_path.resolve()) not in targets
        assert len(targets) >= 3  # the report is real: at least stdin, stdout and stderr
    finally:
        job.kill()
        job.wait()


def test_a_job_outlives_its_killed_tick_without_keeping_the_lock(
    scripts: dict[str, Path], lock_path: Path, tmp_path: Path, procs: Procs
) -> None:
    # The flock(1) trap: a child that inherits the lock's descriptor keeps the lock after its parent dies.
    report = tmp_path / "job-fds.txt"
    holder, line = procs.holder(lock_path, spawn=(str(scripts["job"]), str(report)))
    job_pid = int(line[1])
    procs.adopt(job_pid)
    wait_until(report.exists, 20, "the job never wrote its report")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    os.kill(job_pid, 0)  # the job still lives
    assert contend(scripts, lock_path) == "acquired"
    assert str(lock_path.resolve()) not in fd_targets(report)
    assert os.getsid(job_pid) == job_pid  # its own session: not killed with the tick's terminal
    assert lock_path.exists()


def test_a_second_instance_in_the_same_process_is_busy_not_a_deadlock(lock_path: Path) -> None:
    with TickLock(lock_path, now=NOW):
        start = time.monotonic()
        with pytest.raises(LockBusy, match=f"pid {os.getpid()} since 2026-11-21T10:05:00Z"):
            TickLock(lock_path, now=NOW).acquire()
        assert time.monotonic() - start < 1.0


def test_wait_s_waits_for_a_briefly_held_lock(
    scripts: dict[str, Path], lock_path: Path, procs: Procs
) -> None:
    holder, _ = procs.holder(lock_path)
    with pytest.raises(LockBusy):
        TickLock(lock_path, now=NOW).acquire()  # held now

    def release_soon() -> None:
        time.sleep(0.3)
        assert holder.stdin is not None
        holder.stdin.close()

    releaser = threading.Thread(target=release_soon)
    releaser.start()
    lock = TickLock(lock_path, now=NOW, wait_s=20)
    try:
        lock.acquire()
        assert lock_path.read_text() == f"pid {os.getpid()} since 2026-11-21T10:05:00Z\n"
    finally:
        releaser.join()
        lock.release()
    assert holder.wait() == 0


def test_wait_s_gives_up_on_a_lock_that_stays_held(
    scripts: dict[str, Path], lock_path: Path, procs: Procs
) -> None:
    holder, _ = procs.holder(lock_path)
    with pytest.raises(LockBusy, match=f"pid {holder.pid} "):
        TickLock(lock_path, now=NOW, wait_s=0.2).acquire()
    assert holder.poll() is None


def test_the_context_manager_releases_on_error(scripts: dict[str, Path], lock_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), TickLock(lock_path, now=NOW):
        raise RuntimeError("boom")
    assert contend(scripts, lock_path) == "acquired"


def test_a_filesystem_without_flock_is_refused_not_softened(
    lock_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection (reliability.md §7 item 9): flock answering ENOSYS, as on some network mounts.
    # filelock would otherwise fall back to a marker-file lock that stays held after a crash.
    def no_flock(fd: int, operation: int) -> None:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with pytest.raises(PreflightError) as info:
        TickLock(lock_path, now=NOW).acquire()
    monkeypatch.undo()
    assert str(info.value) == (
        f"{lock_path}: this filesystem cannot lock files (Function not implemented); "
        "keep the checkout on a local disk, not NFS"
    )
    # Nothing a soft lock would leave behind, and a working filesystem locks normally afterwards.
    assert sorted(p.name for p in lock_path.parent.iterdir()) == ["state.json.lock"]
    with TickLock(lock_path, now=NOW):
        pass
