"""Text from files and tasks, made safe to print: control characters shown, never obeyed.

A task title, an agent's marker file or a line of events.jsonl can hold an escape sequence (which
would recolour, move or clear a terminal) or a newline followed by a line that looks like ralph's
own output. Everything a command prints that came from such a place goes through `printable` (or
`one_line`, which also folds it onto one line), so what a person sees is what the file holds.
"""

from __future__ import annotations

import re
from datetime import timedelta

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the bidirectional
# overrides and isolates (which can make text read in another order than it is stored).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}
_WHITESPACE = re.compile(r"[ \t\r\n]+")


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every control character written out as an escape (`\\e`, `\\n`, `\\x07`, `\\u202e`)."""
    return _CONTROL.sub(_escape, text)


def indented(text: str, indent: str) -> str:
    """Text of several lines (a description) under a heading: each line escaped as by `printable`, and
    every line after the first indented, so that none can pass for a line of ralph's own."""
    lines = [printable(line) for line in text.replace("\r\n", "\n").split("\n")]
    return ("\n" + indent).join(lines)


def one_line(text: str | None, limit: int = 80) -> str:
    """`text` on one line for a table cell or a log line: runs of whitespace (newlines too) folded to
    one space, other control characters escaped, cut to `limit` characters with an ellipsis; "-" for
    nothing."""
    if not text:
        return "-"
    flat = printable(_WHITESPACE.sub(" ", text).strip())
    if not flat:
        return "-"
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def duration(delta: timedelta) -> str:
    """`40s`, `5m03s`, `2h07m`, `3d04h`: two units at most, for a person."""
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "0s"
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
