"""A small filesystem of a test's own, to fill up: a tmpfs mounted in the test's temporary directory.

Mounting needs root (CI runs as root) or, failing that, a user and mount namespace of the test's own
(`unshare -rm`): the test is then run again inside one, where it is root of that namespace. Neither
possible: the test is skipped, saying why, except under CI=true, where it fails.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
INSIDE = "RALPH_TEST_IN_NAMESPACE"  # set in the run of a test inside its own namespace


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        # Lazily: a detached job of the test may still hold a file open there.
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def can_mount(probe: Path) -> bool:
    try:
        with tmpfs(probe, "1m"):
            return True
    except (subprocess.CalledProcessError, OSError):
        return False
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


def can_unshare() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = subprocess.run(
        [unshare, "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt 2>/dev/null || mount -t tmpfs tmpfs /tmp"],
        capture_output=True,
    )
    return probe.returncode == 0


@contextlib.contextmanager
def small_disk(request: pytest.FixtureRequest, path: Path, size: str = "16m") -> Iterator[Path | None]:
    """A tmpfs of `size` at `path`; None when the test was run (and passed) in a namespace of its own,
    so the caller has nothing left to do."""
    if os.geteuid() == 0 and can_mount(path.with_name(path.name + "-probe")):
        with tmpfs(path, size) as mounted:
            yield mounted
        return
    if not os.environ.get(INSIDE) and can_unshare():
        inner = subprocess.run(
            [
                "unshare",
                "-rm",
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                request.node.nodeid,
            ],
            cwd=REPO,
            env={**os.environ, INSIDE: "1"},
            capture_output=True,
            text=True,
        )
        assert inner.returncode == 0, (
            f"in its own namespace, the test failed:\n{inner.stdout}\n{inner.stderr}"
        )
        yield None
        return
    reason = "mounting a tmpfs needs root, or user namespaces (`unshare -rm`)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def fill(directory: Path) -> Path:
    """Fill the filesystem holding `directory` to the last byte; the file that did it, to delete later."""
    filler = directory / "filler"
    chunk = b"\0" * (1 << 20)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while chunk:
            try:
                os.write(fd, chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)
    return filler
