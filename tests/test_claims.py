"""Claims and shared task facts on a real bare remote, seen from several control clones (ralph.claims).

Each clone plays a host: its own repository, its own held claims, its own clock (an explicit `now`).
The server is a bare origin; a hook on it counts pushes, or refuses refs/ralph/ as a locked-down
forge would. Nothing of git is faked.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE, git

from ralph.claims import (
    CLAIMS,
    HELD,
    TASKS,
    Board,
    Claims,
    Outcome,
    claim_ref,
    facts_ref,
    host_id,
    probe,
    task_of,
)
from ralph.git import Git, PushStatus, RefUpdate, push_atomic

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
TTL = timedelta(minutes=15)
MAIN = f"refs/heads/{BASE}"

Clone = Callable[[str], Path]


def host(clone: Clone, name: str, *, multi: bool = True) -> Claims:
    """A control clone of origin playing the host `name`."""
    return Claims(Git(clone(name)), remote="origin", host=name, ttl=TTL, multi=multi)


def remote_doc(origin: Path, ref: str) -> dict[str, Any] | None:
    """The document a claim or facts ref holds on origin, read with plain git; None when absent."""
    name = "claim.json" if ref.startswith(CLAIMS) else "task.json"
    shown = subprocess.run(["git", "show", f"{ref}:{name}"], cwd=origin, capture_output=True, text=True)
    if shown.returncode:
        return None
    doc: dict[str, Any] = json.loads(shown.stdout)
    return doc


def remote_refs(origin: Path) -> dict[str, str]:
    listing = git(origin, "for-each-ref", "--format=%(refname) %(objectname)", "refs/ralph/")
    return dict(line.split(" ") for line in listing.splitlines())


def count_pushes(origin: Path) -> Callable[[], list[list[str]]]:
    """A pre-receive hook that logs every push; returns a reader: one list of updated refs per push."""
    log = origin / "pushes.log"
    log.write_text("")
    hook = origin / "hooks" / "pre-receive"
    hook.write_text(f'#!/bin/sh\n{{ cut -d" " -f3; echo --; }} >> "{log}"\n')
    hook.chmod(0o755)

    def pushes() -> list[list[str]]:
        chunks = log.read_text().split("--\n")[:-1]
        return [chunk.split() for chunk in chunks]

    return pushes


def refuse_ralph_refs(origin: Path) -> None:
    """An update hook that refuses refs/ralph/*, as a server that protects every other namespace does."""
    hook = origin / "hooks" / "update"
    hook.write_text(
        '#!/bin/sh\ncase "$1" in refs/ralph/*) echo "refs/ralph/ is reserved for the forge" >&2; exit 1;; '
        "esac\nexit 0\n"
    )
    hook.chmod(0o755)


def probe_from(claims: Claims) -> str | None:
    """The doctor's probe, pointing the throwaway ref at origin's base as this clone last fetched it."""
    tip = git(claims.git.cwd, "rev-parse", f"origin/{BASE}")
    return probe(claims.git, remote="origin", host=claims.host, commit=tip)


def new_base_commit(repo: Path, message: str) -> tuple[str, str]:
    """A commit on top of origin's base (fetched into `repo`): (its parent, the commit)."""
    git(repo, "fetch", "-q", "origin")
    tip = git(repo, "rev-parse", f"origin/{BASE}")
    return tip, git(repo, "commit-tree", "-p", tip, "-m", message, f"{tip}^{{tree}}")


# --- claiming ----------------------------------------------------------------------------------------


def test_of_three_clones_racing_for_a_claim_exactly_one_wins(origin: Path, clone: Clone) -> None:
    hosts = [host(clone, f"host{n}") for n in range(3)]
    tasks = [f"RQ-{n:04d}" for n in range(1, 6)]
    for task in tasks:
        start = threading.Barrier(len(hosts))

        def race(claims: Claims, task: str = task, start: threading.Barrier = start) -> Outcome:
            start.wait()
            return claims.claim(task, 1, T0).outcome

        with ThreadPoolExecutor(len(hosts)) as pool:
            outcomes = list(pool.map(race, hosts))
        assert sorted(outcomes) == sorted([Outcome.WON, Outcome.LOST, Outcome.LOST]), (task, outcomes)
        winner = hosts[outcomes.index(Outcome.WON)]
        doc = remote_doc(origin, claim_ref(task))
        assert doc is not None and doc["host"] == winner.host and doc["attempt"] == 1
        # The winner's attempt is counted with its claim; the losers' never were.
        facts = remote_doc(origin, facts_ref(task))
        assert facts is not None and facts["attempts"] == 1 and facts["last_host"] == winner.host
        # Only the winner notes the claim as held; the losers leave nothing behind.
        assert [task in h.held() for h in hosts] == [h is winner for h in hosts]


def test_a_claim_another_host_wins_inside_the_server_is_lost_not_an_error(origin: Path, clone: Clone) -> None:
    """The other push lands between this one's listing and its update: the server's transaction fails
    as a whole ("cannot lock ref ...: reference already exists"), which is a race, read again."""
    a, b = host(clone, "a"), host(clone, "b")
    b.claim("RQ-0001", 1, T0)
    theirs = remote_refs(origin)[claim_ref("RQ-0001")]
    git(origin, "update-ref", "-d", claim_ref("RQ-0001"))
    hook = origin / "hooks" / "pre-receive"
    # Once: b's claim appears while a's push is being received (outside the push's quarantine).
    hook.write_text(
        f'#!/bin/sh\ncat >/dev/null\nrm "$0"\n'
        f"env -u GIT_QUARANTINE_PATH git update-ref {claim_ref('RQ-0001')} {theirs} ''\n"
    )
    hook.chmod(0o755)
    result = a.claim("RQ-0001", 1, T0)
    assert result.outcome is Outcome.LOST, result.message
    assert result.holder is not None and result.holder.host == "b"
    assert a.held() == {} and remote_refs(origin)[claim_ref("RQ-0001")] == theirs


def test_a_loser_is_told_who_holds_the_claim(clone: Clone) -> None:
    a, b = host(clone, "a"), host(clone, "b")
    assert a.claim("RQ-0001", 1, T0).outcome is Outcome.WON
    lost = b.claim("RQ-0001", 1, T0 + timedelta(minutes=2))
    assert lost.outcome is Outcome.LOST and not lost.started
    assert lost.holder is not None and lost.holder.host == "a"
    assert (
        lost.message == "RQ-0001 is claimed by a (attempt 1, running, heartbeat 2m00s ago); not started here"
    )


def test_claiming_again_what_this_checkout_holds_wins_again(origin: Path, clone: Clone) -> None:
    """A tick that crashed after its claim's push claims again on the next tick: it is still its own."""
    a = host(clone, "a")
    first = a.claim("RQ-0001", 1, T0)
    sha = remote_refs(origin)[claim_ref("RQ-0001")]
    again = a.claim("RQ-0001", 1, T0 + timedelta(minutes=1))
    assert (first.outcome, again.outcome) == (Outcome.WON, Outcome.WON)
    assert remote_refs(origin)[claim_ref("RQ-0001")] == sha  # nothing pushed the second time


def test_claims_are_parentless_commits_holding_one_json_document(origin: Path, clone: Clone) -> None:
    a = host(clone, "a")
    a.claim("RQ-0001", 2, T0, lifecycle="running")
    ref = claim_ref("RQ-0001")
    assert git(origin, "rev-list", "--count", ref) == "1"
    assert git(origin, "ls-tree", "--name-only", ref) == "claim.json"
    doc = remote_doc(origin, ref)
    assert doc is not None
    assert {k: doc[k] for k in ("task_id", "host", "attempt", "started_at", "heartbeat", "lifecycle")} == {
        "task_id": "RQ-0001",
        "host": "a",
        "attempt": 2,
        "started_at": "2026-11-21T10:00:00Z",
        "heartbeat": "2026-11-21T10:00:00Z",
        "lifecycle": "running",
    }


# --- heartbeats and takeover ------------------------------------------------------------------------


def test_a_heartbeat_refreshes_every_claim_of_the_host_in_one_push(origin: Path, clone: Clone) -> None:
    a = host(clone, "a")
    tasks = ["RQ-0001", "RQ-0002", "RQ-0003", "RQ-0004"]
    for task in tasks:
        assert a.claim(task, 1, T0).started
    pushes = count_pushes(origin)
    later = T0 + TTL / 3
    beat = a.heartbeat(dict.fromkeys(tasks, "checking"), later)
    assert sorted(beat.refreshed) == tasks and not beat.lost and not beat.error
    assert pushes() == [[claim_ref(t) for t in tasks]]  # one push, four refs
    for task in tasks:
        doc = remote_doc(origin, claim_ref(task))
        assert doc is not None
        assert (doc["heartbeat"], doc["lifecycle"], doc["started_at"]) == (
            "2026-11-21T10:05:00Z",
            "checking",
            "2026-11-21T10:00:00Z",
        )
    # What was pushed is what the host now leases on: the next heartbeat goes through too.
    again = a.heartbeat(dict.fromkeys(tasks, "checking"), later + TTL / 3)
    assert sorted(again.refreshed) == tasks and len(pushes()) == 2


def test_a_heartbeat_pushes_nothing_before_it_is_due(origin: Path, clone: Clone) -> None:
    a = host(clone, "a")
    a.claim("RQ-0001", 1, T0)
    pushes = count_pushes(origin)
    beat = a.heartbeat({"RQ-0001": "running"}, T0 + timedelta(minutes=4))
    assert beat.refreshed == [] and pushes() == []
    forced = a.heartbeat({"RQ-0001": "running"}, T0 + timedelta(minutes=4), force=True)
    assert forced.refreshed == ["RQ-0001"] and len(pushes()) == 1


def test_a_heartbeat_releases_what_no_live_worker_holds(origin: Path, clone: Clone) -> None:
    a = host(clone, "a")
    a.claim("RQ-0001", 1, T0)
    a.claim("RQ-0002", 1, T0)
    beat = a.heartbeat({"RQ-0002": "running", "RQ-0009": "running"}, T0 + timedelta(minutes=1))
    assert beat.released == ["RQ-0001"]
    assert beat.unheld == ["RQ-0009"]  # a live worker with no claim: the tick claims it or stops it
    assert claim_ref("RQ-0001") not in remote_refs(origin)
    assert list(a.held()) == ["RQ-0002"]


def test_claiming_several_live_workers_at_once_is_one_push(origin: Path, clone: Clone) -> None:
    a = host(clone, "a")
    tasks = ["RQ-0001", "RQ-0002", "RQ-0003"]
    pushes = count_pushes(origin)
    won = a.claim_all({t: (2, "integrating") for t in tasks}, T0, board=a.read_all())
    assert [r.outcome for r in won.values()] == [Outcome.WON] * 3 and list(won) == tasks
    assert len(pushes()) == 1 and sorted(pushes()[0]) == sorted(
        [claim_ref(t) for t in tasks] + [facts_ref(t) for t in tasks]
    )
    for task in tasks:
        claim, facts = remote_doc(origin, claim_ref(task)), remote_doc(origin, facts_ref(task))
        assert claim is not None and facts is not None
        assert (claim["host"], claim["attempt"], claim["lifecycle"], facts["attempts"]) == (
            "a",
            2,
            "integrating",
            2,
        )
    assert sorted(a.held()) == tasks  # and this checkout leases on what it pushed
    assert sorted(a.heartbeat(dict.fromkeys(tasks, "integrating"), T0 + TTL / 3).refreshed) == tasks


def test_claiming_several_when_another_host_holds_one_claims_the_rest(origin: Path, clone: Clone) -> None:
    a, b = host(clone, "a"), host(clone, "b")
    seen = a.read_all()  # before b claims: the batch's push is refused as a whole, then each alone
    assert b.claim("RQ-0002", 1, T0).started
    pushes = count_pushes(origin)
    won = a.claim_all({t: (1, "running") for t in ("RQ-0001", "RQ-0002", "RQ-0003")}, T0, board=seen)
    assert {t: r.outcome for t, r in won.items()} == {
        "RQ-0001": Outcome.WON,
        "RQ-0002": Outcome.LOST,
        "RQ-0003": Outcome.WON,
    }
    # The batch's lease on RQ-0002 ("must not exist") failed before anything reached origin; then
    # RQ-0001 and RQ-0003 were claimed on their own.
    assert [sorted(p) for p in pushes()] == [
        sorted([facts_ref("RQ-0001"), claim_ref("RQ-0001")]),
        sorted([facts_ref("RQ-0003"), claim_ref("RQ-0003")]),
    ]
    assert sorted(a.held()) == ["RQ-0001", "RQ-0003"]
    doc = remote_doc(origin, claim_ref("RQ-0002"))
    assert doc is not None and doc["host"] == "b"


def test_a_stale_claim_is_taken_over_and_its_attempt_stays_counted(origin: Path, clone: Clone) -> None:
    a, b = host(clone, "a"), host(clone, "b")
    a.claim("RQ-0001", 1, T0)
    fresh = T0 + TTL - timedelta(seconds=1)
    assert b.claim("RQ-0001", 2, fresh).outcome is Outcome.LOST
    later = T0 + TTL + timedelta(minutes=1)
    board = b.read_all()
    assert board.claims["RQ-0001"].stale(later, TTL)
    attempt = board.next_attempt("RQ-0001")
    assert attempt == 2  # the lost attempt on a counts
    taken = b.claim("RQ-0001", attempt, later, board=board)
    assert taken.outcome is Outcome.TAKEN_OVER and taken.started
    assert taken.holder is not None and taken.holder.host == "a"
    doc = remote_doc(origin, claim_ref("RQ-0001"))
    assert doc is not None and (doc["host"], doc["attempt"], doc["took_over_from"]) == ("b", 2, "a")
    facts = remote_doc(origin, facts_ref("RQ-0001"))
    assert facts is not None and facts["attempts"] == 2


def test_two_hosts_taking_over_one_stale_claim_never_both_own_it(origin: Path, clone: Clone) -> None:
    a, b, c = host(clone, "a"), host(clone, "b"), host(clone, "c")
    later = T0 + TTL * 2
    for n in range(1, 4):
        task = f"RQ-{n:04d}"
        a.claim(task, 1, T0)
        start = threading.Barrier(2)

        def take(claims: Claims, task: str = task, start: threading.Barrier = start) -> Outcome:
            start.wait()
            return claims.claim(task, 2, later).outcome

        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(take, (b, c)))
        assert outcomes == sorted([Outcome.TAKEN_OVER, Outcome.LOST]), outcomes
        doc = remote_doc(origin, claim_ref(task))
        owners = [h for h in (b, c) if task in h.held()]
        assert doc is not None and [h.host for h in owners] == [doc["host"]]


def test_the_old_owner_finds_its_claim_lost_at_its_next_heartbeat(origin: Path, clone: Clone) -> None:
    """A host that was away past the TTL comes back: its heartbeat says which workers to stop."""
    a, b = host(clone, "a"), host(clone, "b")
    a.claim("RQ-0001", 1, T0)
    a.claim("RQ-0002", 1, T0)
    b.claim("RQ-0001", 2, T0 + TTL * 2)
    pushes = count_pushes(origin)
    beat = a.heartbeat({"RQ-0001": "running", "RQ-0002": "running"}, T0 + TTL * 2 + timedelta(minutes=1))
    assert list(beat.lost) == ["RQ-0001"]
    taker = beat.lost["RQ-0001"]
    assert taker is not None and taker.host == "b"
    assert beat.refreshed == ["RQ-0002"]  # the other claim is refreshed all the same, in the same push
    assert pushes() == [[claim_ref("RQ-0002")]]
    assert list(a.held()) == ["RQ-0002"]
    taken = remote_doc(origin, claim_ref("RQ-0001"))
    assert taken is not None and taken["host"] == "b"  # a's stale lease changed nothing


def test_a_heartbeat_with_the_board_checks_at_once_a_claim_that_changed(origin: Path, clone: Clone) -> None:
    """A cancel elsewhere deletes the claim: the owner's next tick sees it on its board and finds out,
    though its heartbeat is not due."""
    a, b = host(clone, "a"), host(clone, "b")
    a.claim("RQ-0001", 1, T0)
    a.claim("RQ-0002", 1, T0)
    b.record_cancel("RQ-0001", T0, "`ralph cancel`")
    pushes = count_pushes(origin)
    soon = T0 + timedelta(minutes=1)
    beat = a.heartbeat({"RQ-0001": "running", "RQ-0002": "running"}, soon, board=a.read_all())
    assert beat.lost == {"RQ-0001": None} and beat.refreshed == []
    assert pushes() == []  # the board said it all
    assert list(a.held()) == ["RQ-0002"]
    assert a.heartbeat({"RQ-0002": "running"}, soon, board=a.read_all()).refreshed == []  # nothing due


def test_a_heartbeat_adopts_its_own_write_after_a_crash_before_the_note(origin: Path, clone: Clone) -> None:
    """The push of a heartbeat went through but the tick died before noting it: the claim is still ours."""
    a = host(clone, "a")
    a.claim("RQ-0001", 1, T0)
    noted = a.held()["RQ-0001"].sha
    a.heartbeat({"RQ-0001": "running"}, T0 + TTL / 2)
    git(a.git.cwd, "update-ref", HELD + "RQ-0001", noted)  # as if the note had never been written
    beat = a.heartbeat({"RQ-0001": "running"}, T0 + TTL, force=True)
    assert not beat.lost and a.held()["RQ-0001"].sha == remote_refs(origin)[claim_ref("RQ-0001")]
    assert a.heartbeat({"RQ-0001": "running"}, T0 + TTL, force=True).refreshed == ["RQ-0001"]
    # The same, seen on the tick's board: adopted without a push.
    git(a.git.cwd, "update-ref", HELD + "RQ-0001", noted)
    pushes = count_pushes(origin)
    beat = a.heartbeat({"RQ-0001": "running"}, T0 + TTL, board=a.read_all())
    assert not beat.lost and pushes() == []
    assert a.held()["RQ-0001"].sha == remote_refs(origin)[claim_ref("RQ-0001")]


def test_an_unreadable_claim_is_stale_and_can_be_taken_over(origin: Path, clone: Clone) -> None:
    """Something not ralph's under refs/ralph/claims/ proves no one is alive: it does not block a task."""
    seed = clone("writer")
    junk = git(seed, "commit-tree", "-m", "not a claim", "4b825dc642cb6eb9a060e54bf8d69288fbee4904")
    git(seed, "push", "-q", "origin", f"{junk}:{claim_ref('RQ-0001')}")
    b = host(clone, "b")
    board = b.read_all()
    assert board.claims["RQ-0001"].doc is None and board.claims["RQ-0001"].stale(T0, TTL)
    assert b.claim("RQ-0001", 1, T0, board=board).outcome is Outcome.TAKEN_OVER


# --- the fenced landing -----------------------------------------------------------------------------


def test_one_atomic_push_moves_the_base_and_deletes_two_claims(origin: Path, clone: Clone) -> None:
    a = host(clone, "a")
    a.claim("RQ-0001", 1, T0)
    a.claim("RQ-0002", 1, T0)
    tip, landing = new_base_commit(a.git.cwd, "RQ-0001 and RQ-0002")
    fence = a.fence(["RQ-0001", "RQ-0002"])
    assert fence.unheld == []
    pushes = count_pushes(origin)
    pushed = push_atomic(
        a.git, remote="origin", updates=[RefUpdate(MAIN, landing, tip), *fence.updates], timeout=30
    )
    assert pushed.ok, pushed.message
    assert pushes() == [[MAIN, claim_ref("RQ-0001"), claim_ref("RQ-0002")]]  # one transaction
    assert git(origin, "rev-parse", BASE) == landing
    assert claim_ref("RQ-0001") not in remote_refs(origin) and claim_ref("RQ-0002") not in remote_refs(origin)
    assert git(a.git.cwd, "rev-parse", f"origin/{BASE}") == landing  # the tracking ref follows
    a.forget(["RQ-0001", "RQ-0002"])
    assert a.held() == {}


def test_a_landing_fails_as_a_whole_when_one_claim_was_lost(origin: Path, clone: Clone) -> None:
    a, b = host(clone, "a"), host(clone, "b")
    a.claim("RQ-0001", 1, T0)
    a.claim("RQ-0002", 1, T0)
    assert b.claim("RQ-0002", 2, T0 + TTL * 2).outcome is Outcome.TAKEN_OVER
    tip, landing = new_base_commit(a.git.cwd, "RQ-0001 and RQ-0002")
    fence = a.fence(["RQ-0001", "RQ-0002"])
    pushed = push_atomic(
        a.git, remote="origin", updates=[RefUpdate(MAIN, landing, tip), *fence.updates], timeout=30
    )
    assert not pushed.ok and pushed.status is PushStatus.RACE
    assert pushed.rejected == (claim_ref("RQ-0002"),)  # the lost claim, not a base race
    assert [task_of(ref) for ref in pushed.rejected] == ["RQ-0002"]
    assert git(origin, "rev-parse", BASE) == tip  # the base did not move
    assert claim_ref("RQ-0001") in remote_refs(origin)  # nor was the other claim released
    assert (remote_doc(origin, claim_ref("RQ-0002")) or {})["host"] == "b"


def test_a_landing_that_lost_the_base_race_names_the_base(origin: Path, clone: Clone) -> None:
    a = host(clone, "a")
    a.claim("RQ-0001", 1, T0)
    tip, landing = new_base_commit(a.git.cwd, "RQ-0001")
    other = clone("someone")
    _, theirs = new_base_commit(other, "someone else's change")
    git(other, "push", "-q", "origin", f"{theirs}:{MAIN}")
    pushed = push_atomic(
        a.git,
        remote="origin",
        updates=[RefUpdate(MAIN, landing, tip), *a.fence(["RQ-0001"]).updates],
        timeout=30,
    )
    assert pushed.status is PushStatus.RACE and pushed.rejected == (MAIN,)
    assert claim_ref("RQ-0001") in remote_refs(origin)


def test_a_cancel_from_another_host_fences_the_worker_out(origin: Path, clone: Clone) -> None:
    """`ralph cancel` elsewhere deletes the claim with the cancellation: its owner can no longer land."""
    a, b = host(clone, "a"), host(clone, "b")
    a.claim("RQ-0001", 1, T0)
    recorded = b.record_cancel("RQ-0001", T0 + timedelta(minutes=1), "not wanted")
    assert recorded.ok and recorded.released is not None and recorded.released.host == "a"
    tip, landing = new_base_commit(a.git.cwd, "RQ-0001")
    pushed = push_atomic(
        a.git,
        remote="origin",
        updates=[RefUpdate(MAIN, landing, tip), *a.fence(["RQ-0001"]).updates],
        timeout=30,
    )
    assert pushed.rejected == (claim_ref("RQ-0001"),) and git(origin, "rev-parse", BASE) == tip
    beat = a.heartbeat({"RQ-0001": "integrating"}, T0 + timedelta(minutes=2), force=True)
    assert beat.lost == {"RQ-0001": None}  # released by someone else: stop the worker, push nothing


# --- shared facts -----------------------------------------------------------------------------------


def test_a_fresh_clone_respects_attempts_cancellations_and_blocks_made_elsewhere(clone: Clone) -> None:
    a = host(clone, "a")
    for attempt in (1, 2, 3):
        assert a.record_attempt("RQ-0001", attempt, T0).ok
    assert a.record_cancel("RQ-0002", T0, "wrong approach").ok
    assert a.record_block("RQ-0003", T0, "push refused: protected branch").ok
    fresh = host(clone, "fresh")
    board = fresh.read_all()
    why = {
        t: fresh.why_not(board, t, T0, max_attempts=3) for t in ("RQ-0001", "RQ-0002", "RQ-0003", "RQ-0004")
    }
    assert why == {
        "RQ-0001": "no attempts left (3/3, counted on every host)",
        "RQ-0002": "cancelled by a at 2026-11-21T10:00:00Z: wrong approach",
        "RQ-0003": "blocked by a at 2026-11-21T10:00:00Z: push refused: protected branch",
        "RQ-0004": None,
    }
    refused = fresh.claim("RQ-0002", 1, T0, board=board, max_attempts=3)
    assert refused.outcome is Outcome.REFUSED and "cancelled by a" in refused.message
    exhausted = fresh.claim("RQ-0001", board.next_attempt("RQ-0001"), T0, board=board, max_attempts=3)
    assert exhausted.outcome is Outcome.REFUSED
    assert fresh.read("RQ-0001").facts_of("RQ-0001").attempts == 3


def test_clearing_the_facts_gives_a_task_a_fresh_round_on_every_host(origin: Path, clone: Clone) -> None:
    a, b = host(clone, "a"), host(clone, "b")
    a.record_attempt("RQ-0001", 3, T0)
    a.record_cancel("RQ-0001", T0, "stop")
    later = T0 + timedelta(hours=1)
    assert b.clear("RQ-0001", later, "`ralph retry`").ok
    facts = remote_doc(origin, facts_ref("RQ-0001"))
    assert facts == {
        "task_id": "RQ-0001",
        "attempts": 0,
        "cleared": {"at": "2026-11-21T11:00:00Z", "host": "b", "reason": "`ralph retry`"},
    }
    board = a.read_all()
    # a's own record still says 3 attempts, all started before the clear: an earlier round.
    assert a.why_not(board, "RQ-0001", later, max_attempts=3, attempts_here=3, here_since=T0) is None
    assert board.next_attempt("RQ-0001", 3, T0) == 1
    # Attempts a host makes after the clear count again.
    assert board.next_attempt("RQ-0001", 2, later + timedelta(minutes=1)) == 3
    assert a.claim("RQ-0001", 1, later, board=board).outcome is Outcome.WON
    assert (remote_doc(origin, facts_ref("RQ-0001")) or {})["attempts"] == 1


def test_claims_of_another_host_hold_selection_back_until_stale(clone: Clone) -> None:
    a, b = host(clone, "a"), host(clone, "b")
    a.claim("RQ-0001", 1, T0)
    board = b.read_all()
    assert b.why_not(board, "RQ-0001", T0, max_attempts=3) == (
        "claimed by a (attempt 1, running, heartbeat just now)"
    )
    assert b.why_not(board, "RQ-0001", T0 + TTL * 2, max_attempts=3) is None
    assert a.why_not(a.read_all(), "RQ-0001", T0, max_attempts=3) is None  # its own claim


def test_an_idle_host_knows_when_the_next_claim_of_another_host_turns_stale(clone: Clone) -> None:
    a, b = host(clone, "a"), host(clone, "b")
    a.claim("RQ-0001", 1, T0)
    a.claim("RQ-0002", 1, T0 + timedelta(minutes=5))
    b.claim("RQ-0003", 1, T0 - timedelta(hours=1))  # b's own: no reason for b to wake
    assert b.stale_at(b.read_all()) == T0 + TTL
    assert host(clone, "c", multi=False).stale_at(b.read_all()) is None


def test_prune_removes_what_the_remote_keeps_for_done_tasks(origin: Path, clone: Clone) -> None:
    a, b = host(clone, "a"), host(clone, "b")
    a.claim("RQ-0001", 1, T0)  # a host that died holding a task someone else finished
    a.record_attempt("RQ-0002", 1, T0)
    b.claim("RQ-0003", 1, T0)
    later = T0 + TTL * 2
    cleaned = b.prune(b.read_all(), {"RQ-0001", "RQ-0002", "RQ-0003"}, later)
    assert cleaned == ["RQ-0001", "RQ-0002", "RQ-0003"]
    # RQ-0003's claim is b's own: released by its landing or heartbeat, not by a sweep.
    assert sorted(remote_refs(origin)) == [claim_ref("RQ-0003")]


def git_commands(claims: Claims, tmp_path: Path, name: str) -> tuple[Claims, Callable[[], list[str]]]:
    """The same host with git traced: the git commands it has run so far, by name."""
    trace = tmp_path / f"{name}.trace"
    traced = Claims(
        Git(claims.git.cwd, env={"GIT_TRACE": str(trace)}), remote="origin", host=claims.host, ttl=TTL
    )
    said = " built-in: git "
    return traced, lambda: [
        line.split(said, 1)[1].split()[0] for line in trace.read_text().splitlines() if said in line
    ]


def test_read_all_is_one_listing_and_reads_nothing_twice(origin: Path, clone: Clone, tmp_path: Path) -> None:
    a, b = host(clone, "a"), host(clone, "b")
    a.claim("RQ-0001", 1, T0)
    a.record_block("RQ-0002", T0, "refused")
    b, first_commands = git_commands(b, tmp_path, "first")
    first = b.read_all()
    assert set(first.claims) == {"RQ-0001"} and set(first.facts) == {"RQ-0001", "RQ-0002"}
    assert first_commands().count("ls-remote") == 1 and "fetch" in first_commands()
    # The documents are in b's object store now: a second read lists once and fetches nothing.
    b, second_commands = git_commands(b, tmp_path, "second")
    second = b.read_all()
    assert second_commands().count("ls-remote") == 1 and "fetch" not in second_commands()
    assert second == Board(first.claims, first.facts, first.held)


# --- single mode ------------------------------------------------------------------------------------


def test_single_mode_records_attempts_and_claims_nothing(origin: Path, clone: Clone) -> None:
    a = host(clone, "a", multi=False)
    result = a.claim("RQ-0001", 1, T0)
    assert result.outcome is Outcome.WON
    assert sorted(remote_refs(origin)) == [facts_ref("RQ-0001")]
    assert (remote_doc(origin, facts_ref("RQ-0001")) or {})["attempts"] == 1
    pushes = count_pushes(origin)
    beat = a.heartbeat({"RQ-0001": "running"}, T0 + TTL, force=True)
    assert beat.refreshed == [] and pushes() == []
    assert a.fence(["RQ-0001"]).updates == []


def test_single_mode_starts_work_even_when_the_remote_cannot_record_it(origin: Path, clone: Clone) -> None:
    refuse_ralph_refs(origin)
    a = host(clone, "a", multi=False)
    result = a.claim("RQ-0001", 1, T0)
    assert result.outcome is Outcome.WON
    assert result.message.startswith("RQ-0001: its attempt is counted on this host only (")


# --- a remote that refuses refs/ralph/ ----------------------------------------------------------------


def test_a_remote_refusing_refs_ralph_gives_one_clear_line_and_starts_nothing(
    origin: Path, clone: Clone
) -> None:
    refuse_ralph_refs(origin)
    a = host(clone, "a")
    result = a.claim("RQ-0001", 1, T0)
    assert result.outcome is Outcome.ERROR and result.permanent and not result.started
    assert "\n" not in result.message
    assert result.message.startswith("cannot claim RQ-0001: origin refuses it (")
    assert "refs/ralph/ is reserved for the forge" in result.message
    assert result.message.endswith(
        "it must allow pushes to refs/ralph/ (`ralph doctor` checks, and says what to configure)"
    )
    assert a.held() == {} and remote_refs(origin) == {}
    said = probe_from(a)
    assert said is not None and said.startswith("origin refused an atomic push to refs/ralph/doctor/a: ")


def test_the_doctor_probe_leaves_nothing_behind(origin: Path, clone: Clone) -> None:
    a = host(clone, "a")
    assert probe_from(a) is None
    assert probe_from(a) is None
    assert remote_refs(origin) == {}


def test_a_remote_that_hides_refs_ralph_is_found_by_the_probe(origin: Path, clone: Clone) -> None:
    git(origin, "config", "uploadpack.hideRefs", "refs/ralph")
    a = host(clone, "a")
    said = probe_from(a)
    assert said == (
        "origin took a push to refs/ralph/doctor/a but does not list it (refs/ralph/ hidden from ls-remote?)"
    )


# --- names ------------------------------------------------------------------------------------------


def test_a_host_id_names_the_machine_and_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert host_id(one, "web-01").startswith("web-01@") and host_id(one, "web-01") != host_id(two, "web-01")
    assert host_id(one, "web-01") == host_id(one, "web-01")  # stable: nothing random, nothing stored
    odd = host_id(one, "a b/../c:d")
    assert odd.split("@")[0] == "a-b-.-c-d"
    git(tmp_path, "check-ref-format", f"refs/ralph/doctor/{odd}")
    monkeypatch.setenv("RALPH_HOST", "builder")
    assert host_id(one).startswith("builder@")
    git(tmp_path, "check-ref-format", f"refs/ralph/doctor/{host_id(one, '.x.lock')}")


def test_refs_name_their_tasks() -> None:
    assert (claim_ref("RQ-1"), facts_ref("RQ-1")) == (CLAIMS + "RQ-1", TASKS + "RQ-1")
    assert [task_of(r) for r in (claim_ref("RQ-1"), facts_ref("RQ-2"), MAIN)] == ["RQ-1", "RQ-2", None]
