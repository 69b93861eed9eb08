"""The exception tree and exit codes: a user error is one line and exit 1, a bug is exit 3."""

from __future__ import annotations

from enum import IntEnum


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
    ) -> None:
        super().__init__(message)
        self.argv = argv
        self.returncode = returncode  # None: git did not finish (timeout, not found)
        self.stdout = stdout
        self.stderr = stderr


class PreflightError(RalphError):
    """The repository or machine is not fit for a tick; nothing was started."""


class TaskIdError(QueueError):
    """A task id is unsafe to use in a path, a ref name or a log line."""


class LockBusy(RalphError):
    """Another tick holds the lock."""

    exit_code = ExitCode.LOCKED
