"""The exception tree and exit codes: a user error is one line and exit 1, a bug is exit 3.

`classify` is the one place an exception becomes an exit code and a line for a person: the command
line's handler and the record of a tick's end both ask it.
"""

from __future__ import annotations

import errno
from enum import IntEnum
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from pathlib import Path


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # an expected failure the user can act on (a RalphError)
    USAGE = 2  # click's UsageError: bad options or arguments
    INTERNAL = 3  # a bug: the traceback is logged
    LOCKED = 75  # EX_TEMPFAIL: another tick holds the lock; cron and systemd treat it as success
    BROKEN_PIPE = 141  # stdout's reader went away (`| head`): as a shell reports death by SIGPIPE
    INTERRUPTED = 130


class RalphError(Exception):
    """A condition the user can act on; the message says what is wrong, where, and what to do."""

    exit_code: ExitCode = ExitCode.ERROR


class ConfigError(RalphError):
    """`.ralph/config.toml` is unreadable or invalid."""


class QueueError(RalphError):
    """The queue or done file is unreadable or invalid, or a task does not exist."""


class StateError(RalphError):
    """`state.json` is unreadable, invalid, or written by a newer ralph."""


class GitError(RalphError):
    """A git command failed; carries the command, its exit code and its stderr."""

    def __init__(
        self,
        message: str,
        *,
        argv: tuple[str, ...] = (),
        returncode: int | None = None,
        stdout: str = "",
        stderr: str = "",
        cwd: Path | None = None,
    ) -> None:
        super().__init__(message)
        self.argv = argv
        self.returncode = returncode  # None: git did not finish (timeout, not found)
        self.stdout = stdout
        self.stderr = stderr
        self.cwd = cwd  # where git ran


class PreflightError(RalphError):
    """The repository or machine is not fit for a tick; nothing was started."""


class TaskIdError(QueueError):
    """A task id is unsafe to use in a path, a ref name or a log line."""


class LockBusy(RalphError):
    """Another tick holds the lock."""

    exit_code = ExitCode.LOCKED


class ResourceError(RalphError):
    """The machine ran out of something (disk space, a quota, open files), or a filesystem ralph writes
    to is read-only: the user's to fix, and nothing wrong with ralph or its files."""


# --- from an exception to an exit code ------------------------------------------------------------

# What ran out, and what to do about it; {where} is the path involved.
_RESOURCES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on device", "free space on the filesystem of {where}"),
    errno.EDQUOT: (
        "disk quota exceeded",
        "free space in your quota on the filesystem of {where}, or have the quota raised",
    ),
    errno.EROFS: (
        "read-only file system",
        "remount the filesystem of {where} read-write, or keep the checkout on a writable one",
    ),
    errno.EMFILE: (
        "too many open files in this process",
        "raise the open-file limit (`ulimit -n`, or LimitNOFILE= in the systemd unit)",
    ),
    errno.ENFILE: (
        "too many open files on this machine",
        "stop what holds so many files open, or raise the kernel's limit (sysctl fs.file-max)",
    ),
}
# How git (its C library's strerror) says the same; the longer phrase first.
_GIT_SAYS = (
    ("no space left on device", errno.ENOSPC),
    ("out of diskspace", errno.ENOSPC),  # git's own words for a failed object or index write
    ("disk quota exceeded", errno.EDQUOT),
    ("read-only file system", errno.EROFS),
    ("too many open files in system", errno.ENFILE),
    ("too many open files", errno.EMFILE),
)
_UNKNOWN_PLACE = "the checkout and its .ralph/ directory"


def resource_error(exc: BaseException) -> ResourceError | None:
    """The resource `exc` ran out of, as a ResourceError naming the path and the fix; None when it is
    something else. An OSError counts wherever it is in the chain of causes (a bug found while handling
    a full disk is still a full disk); a RalphError other than GitError says what it means already."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ResourceError):
            return current
        if isinstance(current, GitError):
            return _from_git(current)
        if isinstance(current, RalphError):
            return None
        if isinstance(current, OSError) and current.errno in _RESOURCES:
            what, fix = _RESOURCES[current.errno]
            where = None if current.filename is None else str(current.filename)
            said = what if where is None else f"{what}: {where}"
            return ResourceError(f"{said}; " + fix.format(where=where or _UNKNOWN_PLACE))
        current = current.__cause__ or current.__context__
    return None


def _from_git(e: GitError) -> ResourceError | None:
    said = f"{e.stderr}\n{e}".lower()
    code = next((code for phrase, code in _GIT_SAYS if phrase in said), None)
    if code is None:
        return None
    what, fix = _RESOURCES[code]
    where = str(e.cwd) if e.cwd is not None else _UNKNOWN_PLACE
    return ResourceError(f"{what}: {_fold(str(e))}; " + fix.format(where=where))


class Failure(NamedTuple):
    """How a command ended on an exception: its exit code, one line for a person, and whether it is a
    bug (whose traceback belongs in the log)."""

    exit_code: ExitCode
    message: str  # whitespace folded to one line; control characters are the printer's to escape
    bug: bool = False


def classify(exc: BaseException) -> Failure:
    """Map an exception to its exit code: a RalphError or an exhausted resource is the user's to act on
    (exit 1, or the error's own code), ^C is 130, anything else is a bug (exit 3)."""
    if isinstance(exc, KeyboardInterrupt):
        return Failure(ExitCode.INTERRUPTED, "interrupted")
    resource = resource_error(exc)
    if resource is not None:
        return Failure(resource.exit_code, _fold(str(resource)))
    if isinstance(exc, RalphError):
        return Failure(exc.exit_code, _fold(str(exc)) or type(exc).__name__)
    summary = _fold(str(exc)) or "no message"
    return Failure(
        ExitCode.INTERNAL, f"internal error (a bug in ralph): {type(exc).__name__}: {summary}", bug=True
    )


def _fold(text: str) -> str:
    return " ".join(text.split())
