"""Logging: diagnostics and one line per action on stderr (or a log file); results go to stdout."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import sys
from pathlib import Path
from typing import TextIO

from ralph.errors import PreflightError
from ralph.text import printable


class _EscapingFormatter(logging.Formatter):
    """Every line one line, shown and never obeyed: a task title, a path or a remote's message in it
    may hold a newline (which could fake a log line) or an escape sequence. A traceback, appended
    after the message, keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))


class _ConsoleFormatter(_EscapingFormatter):
    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.ERROR:
            return f"ralph: error: {message}"
        if record.levelno >= logging.WARNING:
            return f"ralph: warning: {message}"
        return message


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Write to whatever `sys.stderr` is at the time of each record, not at set-up.

    A handler bound to the stream of set-up time keeps writing to it after a caller (click's
    CliRunner, pytest's capture) has swapped it out; the stdlib's last-resort handler looks
    `sys.stderr` up per record for the same reason.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always sys.stderr; StreamHandler.__init__ and setStream assign here


def logs_to_file() -> bool:
    return any(isinstance(h, logging.handlers.WatchedFileHandler) for h in logging.getLogger().handlers)


def quiet_info_logs() -> None:
    """Drop INFO and DEBUG lines from here on, as -q does; for --json (style rule 13)."""
    root = logging.getLogger()
    root.setLevel(max(root.level, logging.WARNING))


def setup_logging(verbosity: int, log_file: Path | None = None) -> None:
    """`verbosity` is -v count minus -q count: 0 shows actions (INFO), -1 warnings, 1 debug.

    A log file that cannot be opened is a PreflightError (exit 1), raised before anything changes: a
    tick that logs nowhere would look, from the log, like a tick that never ran.
    """
    level = max(logging.DEBUG, min(logging.CRITICAL, logging.INFO - 10 * verbosity))
    handler: logging.Handler
    if log_file is not None:
        handler = _open_log_file(log_file)
        handler.setFormatter(
            _EscapingFormatter("%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S%z")
        )
    else:
        handler = _StderrHandler()
        handler.setFormatter(_ConsoleFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # sh logs every command at INFO; that is our debug detail, not an action.
    logging.getLogger("sh").setLevel(logging.WARNING if level > logging.DEBUG else logging.INFO)
    logging.getLogger("filelock").setLevel(logging.WARNING)


def _open_log_file(path: Path) -> logging.Handler:
    if not path.parent.is_dir():
        # Not made here: a mistyped path would otherwise get a directory, and the log nobody reads.
        raise PreflightError(
            f"--log-file {printable(str(path))}: its directory {printable(str(path.parent))} does not exist; "
            "create it (mkdir -p) or give another path"
        )
    try:
        # WatchedFileHandler reopens the file when logrotate moves it away.
        return _LogFileHandler(path, encoding="utf-8")
    except OSError as e:
        raise PreflightError(
            f"--log-file {printable(str(path))}: cannot open it for appending ({e.strerror or e}); "
            "make it writable or give another path"
        ) from None


class _LogFileHandler(logging.handlers.WatchedFileHandler):
    """A log file that, when a line cannot be written (a full disk), says so once on stderr in one
    line, where the stdlib would print a traceback for every line."""

    _complained = False

    def handleError(self, record: logging.LogRecord) -> None:
        if self._complained:
            return
        self._complained = True
        error = sys.exc_info()[1]
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(
                f"ralph: warning: cannot write to the log file {printable(self.baseFilename)} ({reason}); "
                "its lines from this run are lost\n"
            )
