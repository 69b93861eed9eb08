"""Process identity, liveness and group kills, from /proc (Linux).

A pid alone is ambiguous across ticks: it may have been reused. A process is identified by
(boot_id, pid, start_ticks), where start_ticks is field 22 of /proc/<pid>/stat, and is alive only
while all three match and it is not a zombie (DESIGN §4.2).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
LOCKS = PROC / "locks"
BOOT_ID = PROC / "sys/kernel/random/boot_id"
# How long SIGKILL may take to empty a group (a process with a large address space takes a while to exit).
KILL_WAIT_S = 5.0


def boot_id() -> str:
    return BOOT_ID.read_text().strip()


@dataclass(frozen=True)
class Stat:
    state: str  # R, S, D, Z, T, ...
    pgrp: int
    start_ticks: int
    ppid: int = 0


def parse_stat(raw: str) -> Stat:
    """Parse /proc/<pid>/stat after the last ')': the command name may itself hold spaces and ')'."""
    fields = raw[raw.rindex(")") + 2 :].split()
    # After the name: field 3 is fields[0]; 4 (ppid) fields[1]; 5 (pgrp) fields[2]; 22 (starttime) fields[19].
    return Stat(state=fields[0], pgrp=int(fields[2]), start_ticks=int(fields[19]), ppid=int(fields[1]))


def read_stat(pid: int) -> Stat | None:
    try:
        raw = (PROC / str(pid) / "stat").read_bytes()
    except OSError:  # gone (ENOENT, ESRCH mid-read), or a /proc we cannot read
        return None
    try:
        # The name is raw bytes, cut at 15 (possibly mid-character): strict UTF-8 would fail on it and
        # make a live process look like a free pid. The fields we read are ASCII whatever the name is.
        return parse_stat(raw.decode("utf-8", "surrogateescape"))
    except (ValueError, IndexError):  # pragma: no cover (not a stat line)
        return None


@dataclass(frozen=True)
class Identity:
    pid: int
    start_ticks: int
    boot_id: str


def identify(pid: int) -> Identity | None:
    """The identity of a running process, or None if there is none with this pid."""
    stat = read_stat(pid)
    if stat is None:
        return None
    return Identity(pid=pid, start_ticks=stat.start_ticks, boot_id=boot_id())


def is_alive(identity: Identity) -> bool:
    """True only for the very process recorded: same boot, same pid, same start time, not a zombie."""
    if identity.boot_id != boot_id():
        return False
    stat = read_stat(identity.pid)
    return stat is not None and stat.start_ticks == identity.start_ticks and stat.state not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes in process group `pgid`."""
    members = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = read_stat(int(entry.name))
        if stat is not None and stat.pgrp == pgid and stat.state not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def signal_group(identity: Identity, sig: int) -> bool:
    """Send `sig` to the process group led by `identity`, only if it is still ours.

    A live leader is pinned with a pidfd and verified before the signal, so a pid reused between
    the check and the signal is never hit. A leader that is gone may have left members behind
    (grandchildren in its group); they are signalled only if no other process has taken the pid,
    because Linux never hands out a pid still in use as a group id. Returns False when nothing of
    ours was signalled.
    """
    if identity.boot_id != boot_id():
        return False
    try:
        pidfd: int | None = os.pidfd_open(identity.pid)
    except OSError:
        # ESRCH: no such process. ENOENT/EINVAL: the pid is now some process's thread id, which is
        # not ours either way; _group_is_ours below then sees its different start time.
        pidfd = None
    if pidfd is not None:
        try:
            if is_alive(identity):
                signal.pidfd_send_signal(pidfd, sig)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(identity.pid, sig)
                return True
        except ProcessLookupError:
            pass  # it was reaped after the check; its group may live on, handled below
        finally:
            os.close(pidfd)
    if not _group_is_ours(identity) or not group_members(identity.pid):
        return False
    # killpg rather than a kill per member found: a member that forks between a /proc scan and the
    # kills would leave a child nobody signalled. The kernel signals the whole group in one step.
    try:
        os.killpg(identity.pid, sig)
    except ProcessLookupError:
        return False
    return True


def _group_is_ours(identity: Identity) -> bool:
    """The leader's pid is free, or still held by our own (zombie) leader."""
    stat = read_stat(identity.pid)
    return stat is None or stat.start_ticks == identity.start_ticks


def kill_group(identity: Identity, *, grace_s: float) -> bool:
    """TERM the group, KILL what is left after `grace_s`, and return True once no member is alive."""
    signal_group(identity, signal.SIGTERM)
    if _wait_gone(identity, grace_s):
        return True
    # Keep sending KILL until the group is empty: one signal can miss a process created just after it
    # by a member that had not died yet.
    deadline = time.monotonic() + KILL_WAIT_S
    while not is_gone(identity):
        if time.monotonic() >= deadline:
            return False
        signal_group(identity, signal.SIGKILL)
        time.sleep(0.05)
    return True


def is_gone(identity: Identity) -> bool:
    """Neither the leader nor any member of its group is alive."""
    if identity.boot_id != boot_id():
        return True
    if is_alive(identity):
        return False
    return not _group_is_ours(identity) or not group_members(identity.pid)


def _wait_gone(identity: Identity, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not is_gone(identity):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def lock_holders(path: Path, locks: Path = LOCKS) -> list[int]:
    """Pids holding a flock(2) on `path`, from /proc/locks: reading it takes no lock and disturbs no tick."""
    try:
        inode = path.stat().st_ino
        lines = locks.read_text().splitlines()
    except OSError:
        return []
    holders = []
    for line in lines:
        # `1: FLOCK  ADVISORY  WRITE 7674 fe:00:2146369 0 EOF`; a waiter's line has `->` after the number.
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        # Matched on the inode alone: on overlayfs the device /proc/locks names is the upper layer's,
        # not the st_dev stat() reports.
        try:
            if int(fields[5].rsplit(":", 1)[1]) == inode:
                holders.append(int(fields[4]))
        except (ValueError, IndexError):
            continue
    return holders
