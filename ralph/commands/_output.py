"""Shared output helpers for commands: aligned tables, ages, and JSON documents on stdout."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click

# Re-exported from ralph.text, where domain modules use them too; one_line escapes control characters.
from ralph.text import duration as duration
from ralph.text import one_line as one_line
from ralph.text import printable

JSON_SCHEMA = 1  # the version of every --json document; bumped only on an incompatible change


def emit_json(doc: dict[str, Any]) -> None:
    click.echo(json.dumps({"schema": JSON_SCHEMA, **doc}, indent=2, ensure_ascii=False))


def warn(line: str) -> None:
    """A diagnostic on stderr, escaped: the command did its work, but not all of it."""
    click.echo(f"warning: {printable(line)}", err=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns; a cell is one line, its control characters escaped (ralph.text)."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)


def age(since: datetime | None, now: datetime) -> str:
    if since is None:
        return "-"
    return duration(now - since)
