"""`ralph cancel`, `retry`, `discard` and `status --all-hosts` from any host: the shared facts and
claims on a real bare remote, seen and changed from a second control clone of the same project."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import git
from harness import Project
from helpers import ralph

from ralph.checkout import open_checkout
from ralph.claims import Claims, claim_ref, facts_ref, host_id

Clone = Callable[[str], Path]


def claims_of(checkout: Path) -> Claims:
    return Claims.for_checkout(open_checkout(checkout))


def remote_refs(origin: Path) -> list[str]:
    return git(origin, "for-each-ref", "--format=%(refname)", "refs/ralph/").splitlines()


@pytest.fixture
def other(project: Project, clone: Clone) -> Path:
    """A second host: another control clone of the project, with no state of its own."""
    project.add("Feature")
    return clone("other")


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def test_cancel_from_another_host_stops_every_host_and_fences_the_worker_out(
    project: Project, other: Path, now: datetime
) -> None:
    here = claims_of(project.control)
    assert here.claim("RQ-0001", 1, now).started  # a worker on the first host
    result = ralph(other, "cancel", "RQ-0001")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "RQ-0001 cancelled; no host starts it again until `ralph retry RQ-0001`; "
        f"{here.host} loses its claim and stops its worker without landing it\n"
    )
    assert remote_refs(project.origin) == [facts_ref("RQ-0001")]
    # The first host's heartbeat finds the claim gone: it stops the worker and pushes nothing.
    beat = here.heartbeat({"RQ-0001": "running"}, now + timedelta(minutes=1), force=True)
    assert beat.lost == {"RQ-0001": None}
    # A fresh checkout will not start it either.
    fresh = claims_of(other)
    board = fresh.read_all()
    why = fresh.why_not(board, "RQ-0001", now, max_attempts=3)
    assert why is not None and why.startswith(f"cancelled by {host_id(other)} at ")


def test_cancel_of_a_task_nobody_has_is_refused_with_one_line(other: Path) -> None:
    result = ralph(other, "cancel", "RQ-0042")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "ralph: error: no worker for RQ-0042 here and no such task in the queue (as last fetched); "
        "nothing to cancel (`ralph status` lists the workers)"
    )


def test_retry_from_another_host_gives_every_host_a_fresh_round(
    project: Project, other: Path, now: datetime
) -> None:
    here = claims_of(project.control)
    for attempt in (1, 2, 3):
        here.record_attempt("RQ-0001", attempt, now)
    here.record_cancel("RQ-0001", now, "`ralph cancel`")
    result = ralph(other, "retry", "RQ-0001")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "RQ-0001 may start again on any host; its record on origin (3 attempts, cancelled) is cleared "
        "for every host\n"
    )
    assert remote_refs(project.origin) == [facts_ref("RQ-0001")]  # marked cleared: a fresh round
    board = here.read_all()
    assert here.why_not(board, "RQ-0001", now, max_attempts=3) is None and board.next_attempt("RQ-0001") == 1


def test_retry_with_nothing_anywhere_is_refused(other: Path) -> None:
    result = ralph(other, "retry", "RQ-0001")
    assert result.exit_code == 1
    assert (
        "no worker for RQ-0001 here and nothing recorded for it on origin; nothing to retry" in result.stderr
    )


def test_discard_from_another_host_parks_the_task_and_releases_the_claim(
    project: Project, other: Path, now: datetime
) -> None:
    here = claims_of(project.control)
    here.claim("RQ-0001", 1, now)
    result = ralph(other, "discard", "RQ-0001")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "RQ-0001 discarded; parked as a draft in the queue, so no tick starts it again: "
        "`ralph task edit RQ-0001 --status todo` queues it again; "
        "its record on origin (1 attempt) is cleared for every host; "
        f"{here.host} loses its claim and stops its worker without landing it\n"
    )
    assert remote_refs(project.origin) == [facts_ref("RQ-0001")]
    assert [t["status"] for t in project.origin_tasks("queue")] == ["draft"]


def test_a_remote_refusing_refs_ralph_makes_a_remote_cancel_fail_in_one_line(
    project: Project, other: Path
) -> None:
    hook = project.origin / "hooks" / "update"
    hook.write_text('#!/bin/sh\ncase "$1" in refs/ralph/*) echo "no custom refs" >&2; exit 1;; esac\n')
    hook.chmod(0o755)
    result = ralph(other, "cancel", "RQ-0001")
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(
        "ralph: error: RQ-0001 is not cancelled: no worker for it here, and origin refuses it ("
    )
    assert "no custom refs" in line and "`ralph doctor`" in line


# --- status --all-hosts ---------------------------------------------------------------------------


def test_status_all_hosts_lists_every_claim_with_its_host_and_age(
    project: Project, other: Path, clone: Clone, now: datetime
) -> None:
    here, there = claims_of(project.control), claims_of(other)
    here.claim("RQ-0001", 1, now - timedelta(minutes=3))
    there.claim("RQ-0002", 2, now - timedelta(hours=1))  # gone quiet: stale
    here.record_block("RQ-0003", now, "push refused: protected branch")
    result = ralph(other, "status", "--all-hosts")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("hosts: "))
    assert lines[start] == (
        f"hosts: this checkout is {there.host} (hosts.mode = multi; a claim is stale after 15 min without "
        "a heartbeat)"
    )
    header, first, second = lines[start + 1 : start + 4]
    assert header.split() == ["TASK", "HOST", "ATTEMPT", "LIFECYCLE", "AGE", "HEARTBEAT"]
    assert first.split()[:4] == ["RQ-0001", here.host, "1", "running"]
    assert first.split()[4].startswith("3m0")  # status reads the clock a moment after the claim
    assert "STALE" not in first
    assert second.split()[:6] == ["RQ-0002", there.host, "(here)", "2", "running", "1h00m"]
    assert second.endswith("STALE: may be taken over")
    facts = lines[start + 4 :]
    started = now - timedelta(minutes=3)
    assert facts[0] == f"RQ-0001: 1 attempt started, last on {here.host} at {started:%Y-%m-%dT%H:%M:%SZ}"
    assert facts[2].startswith(f"RQ-0003: 0 attempts started; BLOCKED by {here.host} at ")
    assert facts[2].endswith(": push refused: protected branch")


def test_status_all_hosts_json(project: Project, other: Path, now: datetime) -> None:
    here = claims_of(project.control)
    here.claim("RQ-0001", 1, now - timedelta(minutes=20))
    result = ralph(other, "status", "--all-hosts", "--json")
    assert result.exit_code == 0, result.output
    hosts = json.loads(result.stdout)["hosts"]
    [claim] = hosts["claims"]
    assert hosts["host"] == host_id(other) and hosts["mode"] == "multi" and hosts["error"] is None
    assert {
        k: claim[k] for k in ("task_id", "host", "here", "attempt", "lifecycle", "stale", "readable")
    } == {
        "task_id": "RQ-0001",
        "host": here.host,
        "here": False,
        "attempt": 1,
        "lifecycle": "running",
        "stale": True,
        "readable": True,
    }
    assert 20 * 60 <= claim["heartbeat_age_seconds"] < 21 * 60
    assert claim["sha"] == git(project.origin, "rev-parse", claim_ref("RQ-0001"))
    [facts] = hosts["facts"]
    assert (facts["task_id"], facts["attempts"], facts["cancelled"]) == ("RQ-0001", 1, None)
    # Without --all-hosts status does not ask the remote, and says nothing of hosts.
    assert "hosts" not in json.loads(ralph(other, "status", "--json").stdout)


def test_status_all_hosts_exits_1_when_the_remote_cannot_be_asked(other: Path, tmp_path: Path) -> None:
    git(other, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    result = ralph(other, "status", "--all-hosts")
    assert result.exit_code == 1
    assert any(
        line.startswith("HOSTS UNKNOWN: cannot read the claims on origin: ")
        for line in result.stdout.splitlines()
    )
