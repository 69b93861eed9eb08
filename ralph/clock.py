"""Aware-UTC time: the one place that reads the clock, and the timestamp type every file uses."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from pydantic import AfterValidator, AwareDatetime, PlainSerializer

T = TypeVar("T")


def _require_utc(value: datetime) -> datetime:
    offset = value.utcoffset()
    if offset is None or offset.total_seconds() != 0:
        raise ValueError("must be UTC (RFC 3339 ending in Z), not a local offset")
    return value.astimezone(UTC)


def _serialise_utc(value: datetime) -> str:
    # Validation is skipped when code assigns a field, so the writer is the last place a local or naive
    # time can be stopped: written as-is, it would make the file unreadable to the next load.
    if value.utcoffset() is None:
        raise ValueError(f"refusing to write a naive datetime ({value.isoformat()}); use an aware UTC time")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# Read: RFC 3339 UTC only; a naive or non-UTC value is refused rather than converted, because a hand edit
# with a local offset is more likely a mistake than an intent. Written: always UTC with a trailing Z.
UtcDatetime = Annotated[
    AwareDatetime,
    AfterValidator(_require_utc),
    PlainSerializer(_serialise_utc, return_type=str, when_used="json"),
]


def now() -> datetime:
    """Read the clock; called once per command and passed down."""
    return datetime.now(UTC)


def to_seconds(value: datetime) -> datetime:
    """Drop sub-second precision, for timestamps people read in the queue."""
    return value.replace(microsecond=0)


def format_z(value: datetime) -> str:
    """RFC 3339 UTC with Z, whole seconds: for messages and file names."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scheduled(schedule: Sequence[T], attempt: int) -> T:
    """The wait after attempt `attempt` (1-based) in a schedule of waits; its last entry repeats."""
    return schedule[min(attempt, len(schedule)) - 1]
