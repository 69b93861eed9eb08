"""Atomic writes: a reader, a crash or a failed syscall only ever leaves the old file or the new one.

Fault injection (the only patching here, as reliability.md §1.5 asks): os.write, os.fsync and os.replace
raise OSError or a BaseException "crash"; a spy that records and delegates watches the order of calls.
The SIGKILL loop uses a real writer process.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import Crash, raising, temp_files

from ralph.files import (
    FileTooLarge,
    copy_aside,
    filesystem_kind,
    filesystem_type,
    read_bounded,
    sweep_temp_files,
    write_atomic,
)

ERRORS: list[BaseException] = [
    OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
    OSError(errno.EIO, os.strerror(errno.EIO)),
    OSError(errno.EXDEV, os.strerror(errno.EXDEV)),
    Crash(),
]
ERROR_IDS = ["ENOSPC", "EIO", "EXDEV", "crash"]


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "state.json"
    path.write_bytes(b'{"generation": 1}\n')
    return path


@pytest.mark.parametrize("error", ERRORS, ids=ERROR_IDS)
@pytest.mark.parametrize("call", ["write", "fsync", "replace"])
def test_a_failing_step_leaves_the_previous_file_and_no_temp_file(
    target: Path, monkeypatch: pytest.MonkeyPatch, call: str, error: BaseException
) -> None:
    before = target.read_bytes()
    replaced: list[tuple[object, object]] = []
    real_replace = os.replace

    def spy_replace(src: Any, dst: Any) -> None:
        replaced.append((src, dst))
        real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", spy_replace)
        m.setattr(os, call, raising(error))
        with pytest.raises(type(error)) as info:
            write_atomic(target, b'{"generation": 2}\n' * 1000)
    assert info.value is error  # the original failure surfaces, not a cleanup error
    assert target.read_bytes() == before
    assert temp_files(target.parent) == []
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]
    if call in ("write", "fsync"):
        # After a failed fsync the data may be gone while a retry "succeeds": never publish it.
        assert replaced == []


def test_a_failing_write_of_a_new_file_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "new.json"
    with monkeypatch.context() as m:
        m.setattr(os, "write", raising(OSError(errno.ENOSPC, "No space left on device")))
        with pytest.raises(OSError, match="No space left"):
            write_atomic(path, b"data")
    assert list(tmp_path.iterdir()) == []


def test_order_is_fsync_file_then_replace_then_fsync_directory(
    target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, Any]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def spy_fsync(fd: int) -> None:
        st = os.fstat(fd)
        events.append(("fsync", ("dir" if stat.S_ISDIR(st.st_mode) else "file", st.st_ino)))
        real_fsync(fd)

    def spy_replace(src: Any, dst: Any) -> None:
        events.append(("replace", (os.stat(src).st_ino, Path(dst))))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    write_atomic(target, b"new contents\n")
    monkeypatch.undo()

    assert target.read_bytes() == b"new contents\n"
    new_inode = target.stat().st_ino
    dir_inode = target.parent.stat().st_ino
    assert events == [
        ("fsync", ("file", new_inode)),  # the temp file, which becomes the new inode of the target
        ("replace", (new_inode, target)),
        ("fsync", ("dir", dir_inode)),  # the rename itself made durable
    ]


def test_directory_fsync_einval_is_tolerated(target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")  # some FUSE and network filesystems
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_atomic(target, b"new\n")
    assert target.read_bytes() == b"new\n"


def test_directory_fsync_eio_is_an_error(target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as info:
        write_atomic(target, b"new\n")
    assert info.value.errno == errno.EIO
    assert temp_files(target.parent) == []


def test_short_writes_are_continued(target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def dribble(fd: int, data: Any) -> int:
        return real_write(fd, bytes(data[:7]))  # the kernel may write less than asked

    monkeypatch.setattr(os, "write", dribble)
    payload = bytes(range(256)) * 40
    write_atomic(target, payload)
    monkeypatch.undo()
    assert target.read_bytes() == payload


def test_replacing_keeps_the_permission_bits(target: Path) -> None:
    # Regression: mkstemp's 0600 replaced a user's 0644 file (e.g. .gitignore rewritten by `ralph init`).
    target.chmod(0o644)
    write_atomic(target, b"new\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    target.chmod(0o640)
    write_atomic(target, b"newer\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_new_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_atomic(path, b"{}\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == b"{}\n"


# --- sweep, bounded read, copy aside ------------------------------------------------------------


def test_sweep_removes_only_temp_files_of_that_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{}")
    strays = [tmp_path / ".state.json.abc123.tmp", tmp_path / ".state.json.corrupt-x.q9.tmp"]
    keep = [
        tmp_path / "state.json.lock",
        tmp_path / "state.json.corrupt-20261121T100000Z",
        tmp_path / ".queue.json.abc.tmp",  # another file's writer may be running
        tmp_path / ".state.json.abc",
    ]
    for p in strays + keep:
        p.write_text("x")
    removed = sweep_temp_files(path)
    assert sorted(removed) == sorted(strays)
    assert sorted(tmp_path.iterdir()) == sorted([path, *keep])
    assert sweep_temp_files(path) == []


def test_read_bounded(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_bounded(path, 100) == b"x" * 100
    with pytest.raises(FileTooLarge) as info:
        read_bounded(path, 99)
    assert (info.value.size, info.value.limit) == (100, 99)
    with pytest.raises(FileNotFoundError):
        read_bounded(tmp_path / "missing", 10)


def test_copy_aside_never_overwrites_an_earlier_copy(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"\x00garbage\xff" * 10)
    first = copy_aside(path, ".corrupt-20261121T100000Z")
    assert first == tmp_path / "state.json.corrupt-20261121T100000Z"
    path.write_bytes(b"different garbage")
    second = copy_aside(path, ".corrupt-20261121T100000Z")
    third = copy_aside(path, ".corrupt-20261121T100000Z")
    assert second == tmp_path / "state.json.corrupt-20261121T100000Z.2"
    assert third == tmp_path / "state.json.corrupt-20261121T100000Z.3"
    assert first.read_bytes() == b"\x00garbage\xff" * 10
    assert second.read_bytes() == third.read_bytes() == b"different garbage"
    assert path.read_bytes() == b"different garbage"
    assert temp_files(tmp_path) == []


def test_copy_aside_failure_leaves_the_original_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"garbage")
    monkeypatch.setattr(os, "fsync", raising(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError, match="No space left"):
        copy_aside(path, ".corrupt-x")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    assert path.read_bytes() == b"garbage"


# --- SIGKILL at random moments ------------------------------------------------------------------

WRITER = """
import sys
from pathlib import Path
from ralph.files import write_atomic

path, template, n = Path(sys.argv[1]), Path(sys.argv[2]).read_bytes(), int(sys.argv[3])
ready = False
while True:
    n += 1
    write_atomic(path, template.replace(b"@GEN@", b"%012d" % n))
    if not ready:
        print("ready", flush=True)
        ready = True
"""


def make_template() -> bytes:
    """A ~200 KB state document whose generation number sits in one worker's last_error."""
    from datetime import UTC, datetime

    from ralph.state import Lifecycle, Worker, new_state, render_state

    now = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    state = new_state(target_branch="main", remote="origin", now=now)
    for i in range(250):
        state.workers.append(
            Worker(
                task_id=f"RQ-{i:04d}",
                lifecycle=Lifecycle.FAILED,
                workspace_path=f"/srv/app/.ralph/workspaces/RQ-{i:04d}",
                started_at=now,
                updated_at=now,
                completed_at=now,
                last_error=("generation @GEN@ " if i == 0 else "") + "agent exited 1; " * 20,
            )
        )
    return render_state(state)


def test_sigkill_at_random_moments_never_leaves_a_torn_file(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from ralph.state import load_state, parse_state

    template = make_template()
    assert 150_000 < len(template) < 300_000
    template_path = tmp_path / "template.json"
    template_path.write_bytes(template)
    writer = tmp_path / "writer.py"
    writer.write_text(WRITER)
    path = tmp_path / "state" / "state.json"
    path.parent.mkdir()
    write_atomic(path, template.replace(b"@GEN@", b"%012d" % 0))
    now = datetime(2026, 11, 21, 11, 0, tzinfo=UTC)

    def generation(data: bytes) -> int:
        state = parse_state(data, now)  # the real loader: it must accept every file a kill leaves
        gen = int(state.workers[0].last_error.split()[1])  # type: ignore[union-attr]
        assert data == template.replace(b"@GEN@", b"%012d" % gen)  # a whole generation, byte for byte
        return gen

    rng = random.Random(20261121)
    kills, swept_by_sweep, swept_by_load, last_gen = 0, 0, 0, 0
    deadline = time.monotonic() + 20
    while kills < 100 and (kills < 50 or time.monotonic() < deadline):
        start_gen = (kills + 1) * 10**6
        proc = subprocess.Popen(
            [sys.executable, str(writer), str(path), str(template_path), str(start_gen)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"ready\n", proc.stderr.read() if proc.stderr else b""
            time.sleep(rng.uniform(0, 0.03))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL  # it died writing, it did not finish on its own
        kills += 1

        gen = generation(path.read_bytes())
        assert gen > start_gen  # at least the generation it announced as written
        assert gen > last_gen  # the file never goes back to an older generation
        last_gen = gen

        strays = temp_files(path.parent)
        if kills % 2:
            removed = sweep_temp_files(path)
            assert sorted(p.name for p in removed) == strays
            swept_by_sweep += len(removed)
        else:
            load_state(path, now=now, target_branch="main", remote="origin", under_lock=True)
            swept_by_load += len(strays)
        assert temp_files(path.parent) == []
        assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]

    # Some kills must have landed mid-write, or the loop proved nothing about torn files; and both
    # cleaners (the sweep, and a load under the lock) must have met such a leftover.
    assert swept_by_sweep > 0 and swept_by_load > 0, (kills, swept_by_sweep, swept_by_load)


# --- which filesystem holds a path -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fstype", "kind"),
    [
        ("ext4", "local"),
        ("xfs", "local"),
        ("btrfs", "local"),
        ("tmpfs", "local"),
        ("overlay", "local"),
        ("zfs", "local"),
        ("nfs", "network"),
        ("nfs4", "network"),
        ("cifs", "network"),
        ("smb2", "network"),
        ("smb3", "network"),
        ("fuse.sshfs", "network"),
        ("ceph", "network"),
        ("9p", "shared"),
        ("fuse.mergerfs", "shared"),
        ("fuseblk", "shared"),
    ],
)
def test_filesystem_kind(fstype: str, kind: str) -> None:
    assert filesystem_kind(fstype) == kind


def test_filesystem_type_of_a_real_directory(tmp_path: Path) -> None:
    fstype = filesystem_type(tmp_path / "not" / "made" / "yet")
    assert fstype is not None
    assert fstype == filesystem_type(tmp_path)
    assert filesystem_kind(fstype) == "local", f"{tmp_path} is on {fstype}"


def test_filesystem_type_takes_the_deepest_mount(tmp_path: Path) -> None:
    """Read from a mountinfo file of our own, over real directories (the lookup resolves the path)."""
    srv = tmp_path.resolve() / "srv"
    for sub in ("my app/.ralph/cache", "my/app", "other"):
        (srv / sub).mkdir(parents=True)
    escaped = str(srv).replace(" ", "\\040")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        f"40 27 0:50 / {escaped} rw,relatime shared:1 - xfs /dev/vdb rw\n"
        f"41 40 0:51 / {escaped}/my\\040app rw,relatime - nfs4 server:/export rw,vers=4.2\n"
        f"42 27 0:52 / {escaped}/my rw,relatime - ext4 /dev/vdc rw\n"
        f"43 42 0:53 / {escaped}/my rw,relatime - fuse.sshfs host:/x rw\n"
    )
    assert filesystem_type(srv / "my app" / ".ralph" / "cache" / "parallel", mountinfo) == "nfs4"
    assert filesystem_type(srv / "my" / "app", mountinfo) == "fuse.sshfs"  # mounted on top of ext4
    assert filesystem_type(srv / "other", mountinfo) == "xfs"
    assert filesystem_type(tmp_path, mountinfo) == "ext4"
