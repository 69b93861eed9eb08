"""Markers live in the agent's workspace: reading them must survive whatever the agent put there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ralph import markers

BLOCKED = markers.BlockedPush(
    task_id="RQ-0001", reason="frozen", attempt=1, max_attempts=50, generated_at="2026-11-21T10:00:00Z"
)


def test_a_marker_reads_back_what_was_written(tmp_path: Path) -> None:
    markers.write_blocked_push(tmp_path, BLOCKED)
    assert markers.read_blocked_push(tmp_path) == BLOCKED
    markers.clear_blocked_push(tmp_path)
    assert markers.read_blocked_push(tmp_path) is None


def test_a_fifo_in_place_of_a_marker_is_ignored_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / markers.BLOCKED_PUSH
    path.parent.mkdir(parents=True)
    os.mkfifo(path)  # opening it for reading the usual way waits for a writer that never comes
    assert markers.read_blocked_push(tmp_path) is None


def test_a_marker_that_is_a_symlink_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    markers.write_blocked_push(tmp_path / "other", BLOCKED)
    elsewhere.write_bytes((tmp_path / "other" / markers.BLOCKED_PUSH).read_bytes())
    ws = tmp_path / "ws"
    (ws / markers.BLOCKED_PUSH).parent.mkdir(parents=True)
    (ws / markers.BLOCKED_PUSH).symlink_to(elsewhere)
    assert markers.read_blocked_push(ws) is None


def test_an_oversized_marker_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / markers.CI_FAILURE
    path.parent.mkdir(parents=True)
    with open(path, "wb") as f:
        f.truncate(markers.MAX_MARKER_BYTES + 1)  # sparse: no need to write a megabyte
    assert markers.read_ci_failure(tmp_path) is None
    assert "unreadable marker" in caplog.text and "limit" in caplog.text
