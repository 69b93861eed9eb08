"""Logging: diagnostics and one line per action on stderr (or a log file); results go to stdout."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path
from typing import TextIO


class _ConsoleFormatter(logging.Formatter):
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
    """`verbosity` is -v count minus -q count: 0 shows actions (INFO), -1 warnings, 1 debug."""
    level = max(logging.DEBUG, min(logging.CRITICAL, logging.INFO - 10 * verbosity))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        # WatchedFileHandler reopens the file when logrotate moves it away.
        handler = logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S%z")
        )
    else:
        handler = _StderrHandler()
        handler.setFormatter(_ConsoleFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    # sh logs every command at INFO; that is our debug detail, not an action.
    logging.getLogger("sh").setLevel(logging.WARNING if level > logging.DEBUG else logging.INFO)
    logging.getLogger("filelock").setLevel(logging.WARNING)
