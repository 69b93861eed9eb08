"""Process identity, liveness and group kills, with real processes (no mocks of signals or /proc)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from harness import wait_until
from helpers import raw_state

from ralph import proc

SLEEP = shutil.which("sleep") or "/bin/sleep"
SH = shutil.which("sh") or "/bin/sh"
OTHER_BOOT = "00000000-0000-0000-0000-000000000000"


def alive_pid(pid: int) -> bool:
    """Exists and is not a zombie, judged without ralph.proc."""
    return raw_state(pid) not in (None, "Z", "X")


class Spawner:
    """Starts real processes in their own sessions and makes sure none outlives the test."""

    def __init__(self) -> None:
        self.children: list[tuple[subprocess.Popen[bytes], proc.Identity | None]] = []
        self.stray: list[proc.Identity] = []

    def __call__(self, argv: Sequence[str | bytes], **kwargs: object) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        child: subprocess.Popen[bytes] = subprocess.Popen(
            list(argv),
            start_new_session=True,
            **kwargs,  # type: ignore[call-overload]
        )
        self.children.append((child, proc.identify(child.pid)))
        return child

    def track(self, pid: int) -> proc.Identity:
        """Remember a grandchild so teardown can kill it if the test left it alive."""
        identity = proc.identify(pid)
        assert identity is not None, f"pid {pid} is not running"
        self.stray.append(identity)
        return identity

    def cleanup(self) -> None:
        for identity in self.stray:
            if proc.is_alive(identity):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(identity.pid, signal.SIGKILL)
        for child, identity in self.children:
            if child.returncode is None:
                # Not reaped yet, so the pid (and with it the group id) is still ours to signal.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            elif identity is not None:
                # Reaped: members may linger in its group; leave them to the identity checks.
                proc.kill_group(identity, grace_s=0)


@pytest.fixture
def spawn() -> Iterator[Spawner]:
    spawner = Spawner()
    try:
        yield spawner
    finally:
        spawner.cleanup()


def read_pid_file(path: Path) -> int:
    wait_until(
        lambda: path.exists() and path.read_text().strip() != "", message=f"waiting for {path} to be written"
    )
    return int(path.read_text())


# --- parse_stat --------------------------------------------------------------------------------------


def synthetic_stat(pid: int, comm: str, *, state: str, pgrp: int, start_ticks: int, ppid: int = 1) -> str:
    """A /proc/<pid>/stat line: fields 3..52, each distinct, so a shifted parse reads a wrong value."""
    fields = [str(1000 + n) for n in range(3, 53)]
    fields[0] = state  # field 3
    fields[1] = str(ppid)  # field 4
    fields[2] = str(pgrp)  # field 5
    fields[19] = str(start_ticks)  # field 22
    return f"{pid} ({comm}) " + " ".join(fields) + "\n"


@pytest.mark.parametrize("comm", ["x) 1 2 (y", ") ) )", "a b c d e f g h i", "(", "new\nline)", "sleep"])
def test_parse_stat_reads_fields_after_the_last_paren(comm: str) -> None:
    line = synthetic_stat(4242, comm, state="S", pgrp=777, start_ticks=98765, ppid=4000)
    assert proc.parse_stat(line) == proc.Stat(state="S", pgrp=777, start_ticks=98765, ppid=4000)


def test_the_trap_name_really_shifts_a_naive_split() -> None:
    # The trap is real: a plain split puts something else in field 22, so the test above is meaningful.
    line = synthetic_stat(4242, "x) 1 2 (y", state="S", pgrp=777, start_ticks=98765)
    assert line.split()[21] != "98765"
    assert line.split()[2] != "S"


def test_parse_stat_of_a_real_process(spawn: Spawner) -> None:
    child = spawn([SLEEP, "30"])
    wait_until(lambda: alive_pid(child.pid), message="waiting for sleep to start")
    raw = (Path("/proc") / str(child.pid) / "stat").read_text()
    stat = proc.parse_stat(raw)
    assert stat.state in ("R", "S")
    assert stat.pgrp == child.pid  # start_new_session: it leads its own group
    assert stat.start_ticks == int(raw.split()[21])  # "sleep" has no spaces, so a plain split agrees
    mine = proc.parse_stat((Path("/proc") / str(os.getpid()) / "stat").read_text())
    assert stat.start_ticks >= mine.start_ticks  # it started after this test process
    assert proc.read_stat(child.pid) == stat


def _independent_start_ticks(pid: int) -> int:
    """Field 22 found by stripping the exact name from /proc/<pid>/comm: no rindex, no guessing."""
    base = Path("/proc") / str(pid)
    comm = (base / "comm").read_bytes().removesuffix(b"\n")
    raw = (base / "stat").read_bytes()
    prefix = f"{pid} (".encode() + comm + b") "
    assert raw.startswith(prefix)
    return int(raw[len(prefix) :].split()[19])


def test_a_real_process_named_like_the_trap(spawn: Spawner, tmp_path: Path) -> None:
    trap = tmp_path / "x) 1 2 (y"
    trap.symlink_to(SLEEP)
    child = spawn([str(trap), "30"])
    wait_until(lambda: alive_pid(child.pid), message="waiting for the trap-named sleep to start")
    assert (Path("/proc") / str(child.pid) / "comm").read_text() == "x) 1 2 (y\n"
    stat = proc.read_stat(child.pid)
    assert stat is not None
    assert stat.pgrp == child.pid
    assert stat.state in ("R", "S")
    assert stat.start_ticks == _independent_start_ticks(child.pid)
    identity = proc.identify(child.pid)
    assert identity == proc.Identity(child.pid, stat.start_ticks, proc.boot_id())
    assert proc.is_alive(identity)


def test_a_process_whose_name_is_not_utf8_is_still_seen(spawn: Spawner, tmp_path: Path) -> None:
    """comm is raw bytes (and truncated to 15, which can split a character): it must not hide a process.

    A process /proc cannot decode was taken for "no such pid": invisible to group_members (so a kill
    missed it) and, when the pid was reused by such a process, its group was taken for ours.
    """
    name = os.fsencode(tmp_path) + b"/sl\xffp"
    os.symlink(os.fsencode(SLEEP), name)
    child = spawn([name, b"30"])
    wait_until(lambda: alive_pid(child.pid), message="waiting for the oddly named sleep to start")
    assert (Path("/proc") / str(child.pid) / "comm").read_bytes() == b"sl\xffp\n"
    identity = proc.identify(child.pid)
    assert identity is not None
    assert identity.start_ticks == _independent_start_ticks(child.pid)
    assert proc.is_alive(identity)
    assert proc.group_members(child.pid) == [child.pid]
    assert not proc.is_gone(identity)


# --- identify / is_alive -----------------------------------------------------------------------------


def test_identify_a_missing_pid_is_none(spawn: Spawner) -> None:
    child = spawn([SH, "-c", "exit 0"])
    child.wait()
    assert proc.identify(child.pid) is None  # reaped: the pid is free (pids wrap only after pid_max)
    assert proc.identify(2**22 + 1) is None  # above pid_max's ceiling: never a process


def test_alive_then_zombie_then_reaped(spawn: Spawner) -> None:
    child = spawn([SH, "-c", "read line; exit 0"], stdin=subprocess.PIPE)
    identity = proc.identify(child.pid)
    assert identity is not None
    assert identity.boot_id == proc.boot_id()
    assert proc.is_alive(identity)

    assert child.stdin is not None
    child.stdin.close()  # `read` sees EOF and the shell exits; we do not reap it yet
    wait_until(lambda: raw_state(child.pid) == "Z", message="waiting for the child to become a zombie")
    os.kill(child.pid, 0)  # the zombie trap: kill(pid, 0) still succeeds ...
    assert not proc.is_alive(identity)  # ... but it is not alive
    assert proc.is_gone(identity)
    assert proc.group_members(child.pid) == []

    assert child.wait() == 0
    assert not proc.is_alive(identity)
    assert proc.is_gone(identity)


def test_a_wrong_start_time_or_boot_is_not_alive(spawn: Spawner) -> None:
    child = spawn([SLEEP, "30"])
    identity = proc.identify(child.pid)
    assert identity is not None
    assert proc.is_alive(identity)
    assert not proc.is_alive(proc.Identity(child.pid, identity.start_ticks + 1, identity.boot_id))
    assert not proc.is_alive(proc.Identity(child.pid, identity.start_ticks - 1, identity.boot_id))
    assert not proc.is_alive(proc.Identity(child.pid, identity.start_ticks, OTHER_BOOT))
    assert alive_pid(child.pid)  # looking is harmless


# --- signal_group / kill_group -----------------------------------------------------------------------


def test_kill_group_kills_the_leader_and_a_grandchild(spawn: Spawner, tmp_path: Path) -> None:
    gc_file = tmp_path / "gc"
    leader = spawn([SH, "-c", f'sleep 100 & echo $! > "{gc_file}"; sleep 100; wait'])
    grandchild = spawn.track(read_pid_file(gc_file))
    identity = proc.identify(leader.pid)
    assert identity is not None
    wait_until(lambda: len(proc.group_members(leader.pid)) == 3, message="waiting for sh and both sleeps")
    assert grandchild.pid in proc.group_members(leader.pid)
    assert not proc.is_gone(identity)

    started = time.monotonic()
    assert proc.kill_group(identity, grace_s=8.0) is True
    elapsed = time.monotonic() - started
    assert elapsed < 8.0  # everyone obeyed SIGTERM: no SIGKILL needed
    assert proc.is_gone(identity)
    assert not proc.is_alive(grandchild)
    assert proc.group_members(leader.pid) == []
    assert leader.wait(timeout=5) == -signal.SIGTERM


def test_a_term_ignoring_grandchild_dies_by_sigkill_after_the_grace(spawn: Spawner, tmp_path: Path) -> None:
    gc_file = tmp_path / "gc"
    # The subshell ignores TERM and execs sleep, which keeps the ignored disposition.
    leader = spawn([SH, "-c", f"(trap '' TERM; exec sleep 100) & echo $! > \"{gc_file}\"; wait"])
    gc_pid = read_pid_file(gc_file)
    wait_until(
        lambda: (Path("/proc") / str(gc_pid) / "comm").read_text() == "sleep\n",
        message="waiting for the subshell to exec",
    )
    grandchild = spawn.track(gc_pid)
    identity = proc.identify(leader.pid)
    assert identity is not None

    # TERM alone does not do it: the leader dies, the grandchild stays.
    assert proc.signal_group(identity, signal.SIGTERM) is True
    assert leader.wait(timeout=5) == -signal.SIGTERM
    time.sleep(0.3)
    assert proc.is_alive(grandchild)
    assert not proc.is_gone(identity)

    grace = 1.0
    started = time.monotonic()
    assert proc.kill_group(identity, grace_s=grace) is True
    elapsed = time.monotonic() - started
    assert grace <= elapsed < grace + 10  # it waited out the grace, then SIGKILL worked at once
    assert not proc.is_alive(grandchild)
    assert proc.is_gone(identity)
    assert proc.group_members(leader.pid) == []


def test_kill_group_with_a_live_leader_and_a_term_ignoring_grandchild(spawn: Spawner, tmp_path: Path) -> None:
    gc_file = tmp_path / "gc"
    leader = spawn([SH, "-c", f"(trap '' TERM; exec sleep 100) & echo $! > \"{gc_file}\"; wait"])
    gc_pid = read_pid_file(gc_file)
    wait_until(
        lambda: (Path("/proc") / str(gc_pid) / "comm").read_text() == "sleep\n",
        message="waiting for the subshell to exec",
    )
    grandchild = spawn.track(gc_pid)
    identity = proc.identify(leader.pid)
    assert identity is not None and proc.is_alive(identity)

    grace = 1.5
    started = time.monotonic()
    assert proc.kill_group(identity, grace_s=grace) is True
    elapsed = time.monotonic() - started
    # Had TERM been enough, it would have returned well before the grace ran out.
    assert grace <= elapsed < grace + 10, elapsed
    assert not proc.is_alive(grandchild)
    assert proc.group_members(leader.pid) == []
    assert leader.wait(timeout=5) == -signal.SIGTERM  # the leader itself obeyed TERM


@pytest.mark.parametrize("reap_leader", [True, False], ids=["leader-reaped", "leader-zombie"])
def test_members_of_a_dead_leader_are_still_killed(spawn: Spawner, tmp_path: Path, reap_leader: bool) -> None:
    gc_file = tmp_path / "gc"
    leader = spawn([SH, "-c", f'sleep 100 & echo $! > "{gc_file}"'])
    grandchild = spawn.track(read_pid_file(gc_file))
    identity = proc.identify(leader.pid)
    assert identity is not None
    wait_until(lambda: raw_state(leader.pid) == "Z", message="waiting for the leader to exit")
    if reap_leader:
        assert leader.wait() == 0
        assert proc.read_stat(leader.pid) is None  # the pid is free; the group id lives on in its member
    assert not proc.is_alive(identity)
    assert proc.group_members(leader.pid) == [grandchild.pid]
    assert not proc.is_gone(identity)

    assert proc.signal_group(identity, signal.SIGTERM) is True
    wait_until(lambda: not proc.is_alive(grandchild), message="waiting for the grandchild to die")
    assert proc.is_gone(identity)
    assert proc.signal_group(identity, signal.SIGTERM) is False  # nothing of ours is left to signal
    assert proc.kill_group(identity, grace_s=1.0) is True


def test_a_forking_term_ignoring_member_of_a_leaderless_group_is_killed(
    spawn: Spawner, tmp_path: Path
) -> None:
    """Members that fork between a /proc scan and the kill must not escape (killpg is atomic)."""
    for attempt in range(5):  # each round is a fresh chance for a fork to slip between a scan and a kill
        pid_file = tmp_path / f"loop{attempt}"
        leader = spawn(
            [SH, "-c", f"(trap '' TERM; while :; do sleep 100 & sleep 0.01; done) & echo $! > \"{pid_file}\""]
        )
        loop_pid = read_pid_file(pid_file)
        identity = proc.identify(leader.pid)
        assert identity is not None
        assert leader.wait() == 0
        pgid = leader.pid
        wait_until(
            lambda p=pgid: len(proc.group_members(p)) > 10, message="waiting for the loop to fork sleeps"
        )
        assert loop_pid in proc.group_members(leader.pid)

        assert proc.kill_group(identity, grace_s=0.2) is True
        assert proc.group_members(leader.pid) == []
        assert proc.is_gone(identity)


def test_pid_reuse_never_signals_the_new_owner(spawn: Spawner, tmp_path: Path) -> None:
    """The key safety property: a recorded pid now held by an unrelated process is never signalled."""
    gc_file = tmp_path / "gc"
    other = spawn([SH, "-c", f'sleep 100 & echo $! > "{gc_file}"; wait'])
    other_child = spawn.track(read_pid_file(gc_file))
    real = proc.identify(other.pid)
    assert real is not None
    stale = proc.Identity(other.pid, real.start_ticks - 1, real.boot_id)  # "our" job, long gone

    assert proc.signal_group(stale, signal.SIGKILL) is False
    assert proc.is_gone(stale)  # nothing of ours is alive
    assert proc.kill_group(stale, grace_s=5.0) is True
    time.sleep(0.5)  # a SIGKILL, had one been sent, would have landed by now
    assert other.poll() is None
    assert proc.is_alive(real)
    assert proc.is_alive(other_child)
    assert sorted(proc.group_members(other.pid)) == sorted([other.pid, other_child.pid])


def test_another_boot_is_never_signalled(spawn: Spawner) -> None:
    other = spawn([SLEEP, "100"])
    real = proc.identify(other.pid)
    assert real is not None
    from_last_boot = proc.Identity(other.pid, real.start_ticks, OTHER_BOOT)

    assert proc.signal_group(from_last_boot, signal.SIGKILL) is False
    assert proc.is_gone(from_last_boot)
    assert proc.kill_group(from_last_boot, grace_s=5.0) is True
    time.sleep(0.5)
    assert other.poll() is None
    assert proc.is_alive(real)


THREADED = """
import threading, time
t = threading.Thread(target=time.sleep, args=(100,), daemon=True)
t.start()
print(t.native_id, flush=True)
time.sleep(100)
"""


def test_a_pid_reused_as_a_thread_id_is_not_signalled(spawn: Spawner) -> None:
    """pidfd_open refuses a thread id (ENOENT or EINVAL); that must mean "not ours", not a crash."""
    other = spawn([sys.executable, "-c", THREADED], stdout=subprocess.PIPE)
    assert other.stdout is not None
    tid = int(other.stdout.readline())
    assert tid != other.pid
    assert (Path("/proc") / str(tid) / "stat").exists()  # /proc answers for thread ids too
    real_thread = proc.read_stat(tid)
    assert real_thread is not None
    stale = proc.Identity(tid, real_thread.start_ticks - 1, proc.boot_id())

    assert proc.signal_group(stale, signal.SIGKILL) is False
    assert proc.kill_group(stale, grace_s=5.0) is True
    time.sleep(0.5)
    assert other.poll() is None


def test_signal_group_on_a_live_leader_reaches_the_whole_group(spawn: Spawner, tmp_path: Path) -> None:
    gc_file = tmp_path / "gc"
    leader = spawn([SH, "-c", f'sleep 100 & echo $! > "{gc_file}"; wait'])
    grandchild = spawn.track(read_pid_file(gc_file))
    identity = proc.identify(leader.pid)
    assert identity is not None
    assert proc.signal_group(identity, signal.SIGKILL) is True
    assert leader.wait(timeout=5) == -signal.SIGKILL
    wait_until(lambda: not proc.is_alive(grandchild), message="waiting for the grandchild to die")
    assert proc.is_gone(identity)


def test_pid_reuse_by_a_process_with_an_undecodable_name_is_not_signalled(
    spawn: Spawner, tmp_path: Path
) -> None:
    """If /proc/<pid>/stat could not be read as text, the pid looked free and its group looked ours."""
    shell = os.fsencode(tmp_path) + b"/s\xffh"
    os.symlink(os.fsencode(SH), shell)
    gc_file = tmp_path / "gc"
    other = spawn([shell, b"-c", f'sleep 100 & echo $! > "{gc_file}"; wait'.encode()])
    other_child = spawn.track(read_pid_file(gc_file))
    start_ticks = _independent_start_ticks(other.pid)
    stale = proc.Identity(other.pid, start_ticks - 1, proc.boot_id())

    assert proc.signal_group(stale, signal.SIGKILL) is False
    assert proc.kill_group(stale, grace_s=5.0) is True
    time.sleep(0.5)
    assert other.poll() is None
    assert proc.is_alive(other_child)
