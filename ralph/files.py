"""Durable file writes (a reader, or a crash, only ever sees the old file or the new one), bounded
reads, and which filesystem holds a path."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from shutil import copyfileobj, rmtree
from typing import IO, Final, Literal

logger = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: temp file in the same directory, fsync, rename, fsync the directory.

    If any step fails the previous file is untouched and the temp file is removed; a failed fsync
    aborts before the rename, because Linux may drop the dirty pages and report success on a retry.
    A file that is replaced keeps its permission bits; a new one is private (0600, from mkstemp).
    """
    directory = path.parent
    mode = _existing_mode(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=_temp_prefix(path), suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                # mkstemp makes 0600; replacing a user's 0644 .gitignore must not hide it from the group.
                os.fchmod(f.fileno(), mode)
            view = memoryview(data)
            while view:
                written = os.write(f.fileno(), view)
                view = view[written:]
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)  # write(2) and fsync(2) name no file; a full disk's message should
        raise
    fsync_directory(directory)


def _existing_mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return None


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable; some filesystems cannot, which is logged, not fatal."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        logger.debug("%s: directory fsync not supported here", directory)
    finally:
        os.close(dfd)


def sweep_temp_files(path: Path) -> list[Path]:
    """Remove temp files a killed writer of `path` left behind; call only while holding the lock."""
    removed = []
    for stray in path.parent.glob(f"{_temp_prefix(path)}*{TEMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            stray.unlink()
            removed.append(stray)
    return removed


def read_bounded(path: Path, limit: int) -> bytes:
    """Read a file, refusing one larger than `limit` bytes before reading it into memory."""
    with open(path, "rb") as f:
        return _read_limited(f, limit)


def read_regular(path: Path, *, limit: int | None = None) -> bytes | None:
    """The bytes of `path` if it is a regular file, never followed through a symlink: for files an
    agent controls, where a FIFO would block the reader and a link could name any file. None when
    it is missing or not a regular file; FileTooLarge past `limit`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None  # a FIFO would block, a device would never end
        return f.read() if limit is None else _read_limited(f, limit)


def read_beneath(root: Path, rel: str, *, limit: int) -> bytes | None:
    """The bytes of the regular file `rel` under `root`, opened one component at a time without following
    any symlink (a linked `.ralph/cache` could otherwise lead out of an agent's workspace) and without
    blocking on a FIFO. None when a component is missing, a link, or not a regular file / directory;
    FileTooLarge past `limit`."""
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        return None
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError:
                return None
            os.close(fd)
            fd = next_fd
        try:
            file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError:
            return None
        with os.fdopen(file_fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(file_fd).st_mode):
                return None
            return _read_limited(f, limit)
    finally:
        os.close(fd)


def _read_limited(f: IO[bytes], limit: int) -> bytes:
    size = os.fstat(f.fileno()).st_size
    if size > limit:
        raise FileTooLarge(size, limit)
    data = f.read(limit + 1)
    if len(data) > limit:  # it grew while we read
        raise FileTooLarge(len(data), limit)
    return data


def read_tail(f: IO[bytes], limit: int) -> str:
    """The last `limit` bytes of an open file, decoded (a character cut in two is replaced)."""
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - limit))
    return f.read().decode(errors="replace")


def write_json(path: Path, data: object) -> None:
    """`data` as indented JSON, written atomically."""
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


class FileTooLarge(Exception):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes, over the {limit}-byte limit")
        self.size = size
        self.limit = limit


def copy_aside(path: Path, suffix: str) -> Path:
    """Save a byte-for-byte copy of `path` next to it as `<name><suffix>` (or `.2`, `.3`, ...); never
    overwrite an earlier copy, and never hold the whole file in memory (it may be the oversized one).
    """
    directory = path.parent
    tmp = _copy_to_temp(path)
    try:
        n = 1
        while True:
            target = path.with_name(path.name + suffix + (f".{n}" if n > 1 else ""))
            try:
                # link(2) fails if the name exists, so a copy made at the same second is never clobbered,
                # which a check-then-rename would allow.
                os.link(tmp, target)
                break
            except FileExistsError:
                n += 1
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_directory(directory)
    return target


def _copy_to_temp(path: Path) -> str:
    """A durable copy of `path` in a temporary file next to it, streamed (never whole in memory)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
            copyfileobj(src, out)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def rotate(path: Path, limit: int) -> bool:
    """Move `path` to `<path>.1` (replacing an older one) once it is larger than `limit` bytes.

    For a file nobody holds open: the next writer starts a fresh one.
    """
    try:
        if path.stat().st_size <= limit:
            return False
    except FileNotFoundError:
        return False
    os.replace(path, path.with_name(path.name + ".1"))
    return True


def copy_truncate(path: Path, limit: int) -> bool:
    """Copy `path` to `<path>.1` and empty it, once it is larger than `limit` bytes.

    For a log a running process appends to (O_APPEND): it goes on writing at the new end of the same
    file, as with logrotate's copytruncate. Lines written between the copy and the truncation are lost.
    """
    try:
        if path.stat().st_size <= limit:
            return False
    except FileNotFoundError:
        return False
    os.replace(_copy_to_temp(path), path.with_name(path.name + ".1"))
    os.truncate(path, 0)
    return True


# --- which filesystem holds a path ----------------------------------------------------------------

# Filesystems whose flock(2) does not reliably exclude, or hangs with the server: the tick lock could
# let two ticks in at once (two agents on one task, two landings racing) or hang cron's tick forever.
NETWORK_FILESYSTEMS: Final = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb",
        "smb2",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "coda",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "davfs",
        "sshfs",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.cephfs",
        "fuse.ceph-fuse",
        "fuse.s3fs",
        "fuse.rclone",
        "fuse.gcsfuse",
        "fuse.juicefs",
        "fuse.davfs2",
    }
)
# Shared with another machine or kernel (a VM host, WSL's Windows drives), or FUSE, where locking is
# whatever the filesystem makes of it: worth a warning, not a refusal.
SHARED_FILESYSTEMS: Final = frozenset(
    {"9p", "virtiofs", "vboxsf", "vmhgfs", "fuse.vmhgfs-fuse", "gfs2", "ocfs2"}
)


FilesystemKind = Literal["local", "shared", "network"]


def filesystem_kind(fstype: str) -> FilesystemKind:
    """Where a filesystem of this type (a name from /proc/self/mountinfo) keeps its locks: "network"
    (flock may not exclude), "shared" (another kernel or FUSE: whatever it makes of flock) or "local"."""
    name = fstype.lower()
    if name in NETWORK_FILESYSTEMS or name.startswith("nfs"):
        return "network"
    if name in SHARED_FILESYSTEMS or name.startswith("fuse"):
        return "shared"
    return "local"


def filesystem_type(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """The type of the filesystem holding `path` (or its nearest existing ancestor), from mountinfo."""
    target = path
    while not target.exists() and target != target.parent:
        target = target.parent
    target = target.resolve()
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for line in lines:
        fields = line.split()
        try:
            separator = fields.index("-", 6)
            mount_point = Path(_unoctal(fields[4]))
            fstype = fields[separator + 1]
        except (ValueError, IndexError):
            continue
        if target.is_relative_to(mount_point):
            depth = len(mount_point.parts)
            # The deepest mount point wins; for the same one, the later line (mounted on top).
            if best is None or depth >= best[0]:
                best = (depth, fstype)
    return best[1] if best else None


def _unoctal(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash in paths as \040, \011, \012, \134.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


_ExcInfo = tuple[type[BaseException], BaseException, object]


def force_rmtree(path: Path) -> None:
    """rmtree that also removes what the agent or git made read-only (files, and directories)."""
    retried: set[str] = set()

    def on_error(func: Callable[..., object], failed: str, exc_info: _ExcInfo) -> None:
        error = exc_info[1]
        if isinstance(error, FileNotFoundError):
            return
        if not isinstance(error, PermissionError) or failed in retried:
            raise error
        retried.add(failed)
        # Removing an entry needs write permission on its directory; listing a directory needs read
        # permission on it. Symlinks are never followed: rmtree hands us only real entries.
        parent = os.path.dirname(failed)
        if parent and _within(parent, str(path)):
            os.chmod(parent, 0o700)
        if func is os.rmdir:
            os.rmdir(failed)
        elif os.path.isdir(failed) and not os.path.islink(failed):
            os.chmod(failed, 0o700)
            rmtree(failed, onerror=on_error)
        else:
            os.unlink(failed)

    if sys.version_info >= (3, 12):  # pragma: no cover (onerror is deprecated there)
        rmtree(path, onexc=lambda f, p, e: on_error(f, p, (type(e), e, None)))
    else:
        rmtree(path, onerror=on_error)


def _within(candidate: str, root: str) -> bool:
    return os.path.commonpath([os.path.abspath(candidate), os.path.abspath(root)]) == os.path.abspath(root)


# --- scratch directories --------------------------------------------------------------------------------

_SCRATCH_SEPARATOR = "-"


@contextlib.contextmanager
def scratch_dir(root: Path, prefix: str) -> Iterator[Path]:
    """A temporary directory under `root` (ralph's `.ralph/cache/tmp`), named after this process so a
    later tick can tell one a killed process left (`sweep_scratch`) from one in use."""
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}{_SCRATCH_SEPARATOR}{prefix}", dir=root))
    try:
        yield path
    finally:
        force_rmtree(path)


def sweep_scratch(root: Path) -> list[Path]:
    """Remove the scratch directories under `root` whose process is gone; return them."""
    removed: list[Path] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        pid_text = entry.name.split(_SCRATCH_SEPARATOR, 1)[0]
        if pid_text.isdigit() and _alive(int(pid_text)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            force_rmtree(entry)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
