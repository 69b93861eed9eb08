"""Claims and shared task facts: which host works on which task, and what every host must respect,
kept on the git remote (DESIGN §1.8; README "Running on several machines").

Nothing runs but the git server a team already has: refs, leases and atomic pushes. On the remote:

- `refs/ralph/claims/<TASK>`: a parentless commit whose tree holds `claim.json` (host, attempt,
  started_at, heartbeat, lifecycle, and a token naming this one claim). Created with a create-only
  lease (`--force-with-lease=<ref>:`, "must not exist"), so of any number of hosts racing for a task
  exactly one wins. Refreshed (the heartbeat) and released under a lease on the exact commit this
  checkout last wrote, and deleted by the landing push in the same atomic transaction that moves the
  base, so "landed" and "released" never disagree. A claim whose heartbeat is older than
  `hosts.claim_ttl_minutes` is stale: another host may replace it under a lease on the stale commit
  (never two owners: of two hosts taking it over, one lease fails). Claims are parentless so that no
  push, leased or not, can ever move one by fast-forward: every change is a lease on a known value.
- `refs/ralph/tasks/<TASK>`: `task.json`, the facts every host and every fresh checkout respects, in
  both host modes: how many attempts were started, a cancellation, a block, and when a person last
  gave the task a fresh round (`ralph retry`, `ralph discard`). Changed under a lease on
  the commit read; a lost race reads again and retries. A claim records its attempt in the same
  atomic push that creates it, so a claim and its counted attempt never disagree either.

In the control repository, `refs/ralph/held/<TASK>` is the claim commit this checkout last pushed for
a task it holds: the lease of every later push of that claim. Ownership is that exact commit, never a
host's name; the token in the document only lets a checkout recognise its own write after a crash
between a push and the local note of it.

The host id (`host_id`) is for people: `<name>@<8 hex>`, the name from $RALPH_HOST or the machine's
hostname, the hex from the checkout's path, so two checkouts on one machine differ. Two machines
cloned from one image with the same hostname and path show the same id, and still never share a
claim (above). Staleness is judged by the reader's clock against the writer's heartbeat: clocks must
agree to well within the TTL (NTP). A skewed clock can only cost work (a live claim taken over; its
old owner stops without landing), never a double landing: the landing is fenced by the claim's lease.

`hosts.mode = "single"` keeps the shared facts and skips claims and heartbeats: `claim` then only
records the attempt, `heartbeat` does nothing and the landing needs no fence.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ralph.checkout import Checkout
from ralph.clock import UtcDatetime
from ralph.errors import GitError
from ralph.git import (
    Git,
    LocalRef,
    MultiPush,
    NewCommit,
    PushStatus,
    RefUpdate,
    cat_blobs,
    fetch_objects,
    local_refs,
    ls_remote_refs,
    push_atomic,
    push_refs,
    update_refs,
    write_commits,
)
from ralph.nesting import loads_json
from ralph.paths import check_task_id
from ralph.text import duration

D = TypeVar("D", bound="_Doc")

CLAIMS = "refs/ralph/claims/"
TASKS = "refs/ralph/tasks/"
HELD = "refs/ralph/held/"  # local: the claims this checkout holds
DOCTOR = "refs/ralph/doctor/"
CLAIM_FILE = "claim.json"
FACTS_FILE = "task.json"
MAX_DOC_BYTES = 64 * 1024  # a document is a few hundred bytes; anything far larger is not ralph's

READ_TIMEOUT_S = 30.0
PUSH_TIMEOUT_S = 60.0
# A claim is refreshed once a third of the TTL has passed since its last heartbeat: two refreshes can be
# missed (a slow tick, a blip of the network) before anyone may take it over.
REFRESH_FRACTION = 3
# How often one change reads the remote again after losing a race for the same ref.
MAX_RACES = 5
_READS = 3  # a ref deleted or moved between listing and fetching it: list again


def host_id(root: Path, name: str | None = None) -> str:
    """`<name>@<8 hex of the checkout's path>`: the name from $RALPH_HOST, else the hostname."""
    raw = name or os.environ.get("RALPH_HOST") or socket.gethostname() or "host"
    # Used in a ref name (refs/ralph/doctor/<host>) and in log lines: a safe subset only.
    safe = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", raw)).strip(".-")[:40] or "host"
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
    return f"{safe}@{digest}"


def claim_ref(task_id: str) -> str:
    return CLAIMS + task_id


def facts_ref(task_id: str) -> str:
    return TASKS + task_id


def task_of(ref: str) -> str | None:
    """The task a claim or facts ref names (for a ref an atomic push rejected); None for any other ref."""
    for prefix in (CLAIMS, TASKS):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return None


# --- the documents ------------------------------------------------------------------------------------


class _Doc(BaseModel):
    # Written by every host's ralph, perhaps a newer one: keys this version does not know are ignored
    # here (a hand-edited file would forbid them; this one nobody edits).
    model_config = ConfigDict(extra="ignore")


class ClaimDoc(_Doc):
    task_id: str
    host: str
    token: str  # names this claim: a heartbeat keeps it, a takeover makes a new one
    attempt: int
    started_at: UtcDatetime
    heartbeat: UtcDatetime
    lifecycle: str
    took_over_from: str | None = None  # the host whose stale claim this one replaced


class Mark(_Doc):
    at: UtcDatetime
    host: str
    reason: str


class FactsDoc(_Doc):
    task_id: str
    attempts: int = 0  # attempts started, on any host
    last_attempt_at: UtcDatetime | None = None
    last_host: str | None = None
    cancelled: Mark | None = None
    blocked: Mark | None = None
    # A fresh round (`ralph retry`, `ralph discard`): attempts a host made before it are of an earlier
    # round, and no longer count against agent.max_attempts.
    cleared: Mark | None = None


@dataclass(frozen=True)
class Claim:
    task_id: str
    sha: str
    doc: ClaimDoc | None  # None: unreadable (damaged, or not ralph's): it proves no one alive, so stale

    @property
    def host(self) -> str:
        return self.doc.host if self.doc else "an unreadable claim"

    def age(self, now: datetime) -> timedelta | None:
        """Since its last heartbeat."""
        return None if self.doc is None else now - self.doc.heartbeat

    def stale(self, now: datetime, ttl: timedelta) -> bool:
        age = self.age(now)
        return age is None or age > ttl

    def describe(self, now: datetime) -> str:
        if self.doc is None:
            return f"an unreadable claim ({self.sha[:10]})"
        age = self.age(now)
        beat = "just now" if age is None or age < timedelta(seconds=1) else f"{duration(age)} ago"
        return f"{self.doc.host} (attempt {self.doc.attempt}, {self.doc.lifecycle}, heartbeat {beat})"


@dataclass(frozen=True)
class Facts:
    """A task's shared facts; `sha` None when the remote records nothing for it."""

    task_id: str
    sha: str | None
    doc: FactsDoc
    readable: bool = True

    @property
    def attempts(self) -> int:
        return self.doc.attempts

    def stop(self) -> str | None:
        """Why no host may start the task, or None."""
        for what, mark in (("cancelled", self.doc.cancelled), ("blocked", self.doc.blocked)):
            if mark is not None:
                return f"{what} by {mark.host} at {mark.at:%Y-%m-%dT%H:%M:%SZ}: {mark.reason}"
        return None


def describe(facts: Facts) -> str:
    """What the remote records for a task, for a person: `3 attempts, cancelled`; empty when nothing."""
    doc = facts.doc
    said = [f"{doc.attempts} attempt{'s' if doc.attempts != 1 else ''}"] if doc.attempts else []
    said += [what for what, mark in (("cancelled", doc.cancelled), ("blocked", doc.blocked)) if mark]
    return ", ".join(said)


class Claiming(NamedTuple):
    """A task about to be claimed: the attempt, the lifecycle its worker is in, the facts read and the
    stale claim (if any) a push must lease."""

    task_id: str
    attempt: int
    lifecycle: str
    facts: Facts
    stale: Claim | None


@dataclass(frozen=True)
class Board:
    """Every claim and every task's facts on the remote, as one read found them."""

    claims: dict[str, Claim] = field(default_factory=dict)
    facts: dict[str, Facts] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)  # the claims this checkout holds: task -> commit

    def facts_of(self, task_id: str) -> Facts:
        return self.facts.get(task_id) or Facts(task_id, None, FactsDoc(task_id=task_id))

    def next_attempt(
        self,
        task_id: str,
        attempts_here: int = 0,
        here_since: datetime | None = None,
        host: str | None = None,
    ) -> int:
        """The number of the next attempt: after every attempt started here (`attempts_here`, the
        latest started at `here_since`) or on any other host. Attempts made here before the task's
        record was last cleared are of an earlier round and do not count. The last attempt counted,
        when `host` (this one) counted it and has since given it back (a run stopped by a usage limit,
        a landing a rewind removed: `attempts_here` one lower), is not spent: its number is used again."""
        facts = self.facts_of(task_id)
        cleared = facts.doc.cleared
        if cleared is not None and (here_since is None or here_since <= cleared.at):
            attempts_here = 0
        if host is not None and facts.doc.last_host == host and facts.attempts == attempts_here + 1:
            return facts.attempts
        return max(attempts_here, facts.attempts) + 1


# --- what the calls return -------------------------------------------------------------------------


class Outcome(StrEnum):
    WON = "won"  # the task is ours: start it
    TAKEN_OVER = "taken over"  # ours, replacing a stale claim (its attempt stays counted)
    LOST = "lost"  # another host holds it: do not start it
    REFUSED = "refused"  # the shared facts say no host may start it (cancelled, blocked, no attempts left)
    ERROR = "error"  # the remote could not be asked or refused the push: start nothing


@dataclass(frozen=True)
class ClaimResult:
    outcome: Outcome
    task_id: str
    message: str  # one line for the tick's log
    holder: Claim | None = None  # LOST: who holds it; TAKEN_OVER: the stale claim replaced
    facts: Facts | None = None  # the task's facts as the claim found them
    permanent: bool = False  # ERROR: the remote refuses (not worth retrying before someone acts)

    @property
    def started(self) -> bool:
        return self.outcome in (Outcome.WON, Outcome.TAKEN_OVER)


@dataclass
class Heartbeat:
    refreshed: list[str] = field(default_factory=list)
    # A claim lost while its worker was alive: another host took it over (that claim), or someone
    # released it (None: cancelled or discarded from another host). Stop those workers without pushing.
    lost: dict[str, Claim | None] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)  # held here with no live worker: let go
    unheld: list[str] = field(default_factory=list)  # live workers this checkout holds no claim for
    error: str | None = None  # the push did not go through: nothing is known lost


@dataclass(frozen=True)
class Fence:
    """What the landing push adds so that the base moves and the landed tasks' claims go together."""

    updates: list[RefUpdate]
    unheld: list[str]  # tasks this checkout holds no claim for: they must leave the train, unlanded


@dataclass(frozen=True)
class Recorded:
    """A change to a task's shared facts: whether the remote took it, and what it said if not."""

    ok: bool
    message: str
    facts: Facts | None = None  # as they were before the change
    released: Claim | None = None  # the claim the change deleted with it

    cleared: bool = False  # a fresh round (clear), not a change

    def undone(self, host: str, remote: str) -> list[str]:
        """What the change undid, for a command's line: a record cleared, another host's claim released."""
        said = []
        if self.cleared and self.facts is not None and describe(self.facts):
            said.append(f"its record on {remote} ({describe(self.facts)}) is cleared for every host")
        if self.released is not None and self.released.host != host:
            said.append(f"{self.released.host} loses its claim and stops its worker without landing it")
        return said


# --- the remote ------------------------------------------------------------------------------------


class Claims:
    """Claims and shared facts on `remote`, seen from one control checkout (one host id)."""

    def __init__(
        self,
        git: Git,
        *,
        remote: str,
        host: str,
        ttl: timedelta,
        multi: bool = True,
        timeout: float = PUSH_TIMEOUT_S,
    ) -> None:
        self.git = git
        self.remote = remote
        self.host = host
        self.ttl = ttl
        self.multi = multi
        self.timeout = timeout

    @classmethod
    def for_checkout(cls, checkout: Checkout, git: Git | None = None) -> Claims:
        hosts = checkout.config.hosts
        return cls(
            git or checkout.git(),
            remote=checkout.remote,
            host=host_id(checkout.root),
            ttl=timedelta(minutes=hosts.claim_ttl_minutes),
            multi=hosts.mode == "multi",
        )

    # --- reading ---------------------------------------------------------------------------------

    def read_all(self) -> Board:
        """Every claim and every task's facts: one ls-remote, one cat-file, and a fetch of the
        documents this repository does not have yet (none when nothing changed)."""
        board = self._read([CLAIMS, TASKS])
        if self.multi and board.claims:  # nothing on the remote: nothing held here worth comparing
            board.held.update((t, ref.sha) for t, ref in self.held().items())
        return board

    def read(self, task_id: str) -> Board:
        """One task's claim and facts (an empty board when the remote has neither)."""
        check_task_id(task_id)
        return self._read([claim_ref(task_id), facts_ref(task_id)], exact=True)

    def _read(self, names: list[str], *, exact: bool = False) -> Board:
        for n in range(_READS):
            listing = ls_remote_refs(self.git, self.remote, names, timeout=READ_TIMEOUT_S, exact=exact)
            specs = {ref: f"{sha}:{_file_of(ref)}" for ref, sha in listing.items()}
            blobs = cat_blobs(self.git, list(specs.values()), limit=MAX_DOC_BYTES)
            missing = [ref for ref, spec in specs.items() if spec not in blobs]
            if missing:
                try:
                    fetch_objects(self.git, self.remote, missing, timeout=READ_TIMEOUT_S)
                except GitError:
                    if n + 1 < _READS:
                        continue  # one of them went away since the listing: list again
                    raise
                blobs.update(cat_blobs(self.git, [specs[ref] for ref in missing], limit=MAX_DOC_BYTES))
                if any(specs[ref] not in blobs for ref in missing) and n + 1 < _READS:
                    continue  # moved since the listing (the fetch brought a newer commit): list again
            return _board(listing, specs, blobs)
        raise AssertionError("unreachable")  # pragma: no cover (the last pass returns or raises)

    def held(self) -> dict[str, LocalRef]:
        """The claims this checkout holds: task id -> the claim commit it last wrote (whose committer
        date is its last heartbeat)."""
        return {ref[len(HELD) :]: local for ref, local in local_refs(self.git, HELD).items()}

    def why_not(
        self,
        board: Board,
        task_id: str,
        now: datetime,
        *,
        max_attempts: int,
        attempts_here: int = 0,
        here_since: datetime | None = None,
    ) -> str | None:
        """Why selection must not start `task_id` here, from the board: the shared facts (in every
        mode) and, with claims, a live claim of another host. None: it may be claimed."""
        facts = board.facts_of(task_id)
        stop = facts.stop()
        if stop:
            return stop
        attempt = board.next_attempt(task_id, attempts_here, here_since, self.host)
        if attempt > max_attempts:
            return f"no attempts left ({attempt - 1}/{max_attempts}, counted on every host)"
        claim = board.claims.get(task_id)
        mine = claim is not None and board.held.get(task_id) == claim.sha
        if self.multi and claim is not None and not claim.stale(now, self.ttl) and not mine:
            return f"claimed by {claim.describe(now)}"
        return None

    def stale_at(self, board: Board) -> datetime | None:
        """The earliest time a claim of another host turns stale (its task may then be taken over):
        for the idle stamp's wake-up, since no push to the base announces it."""
        times = [
            c.doc.heartbeat + self.ttl
            for t, c in board.claims.items()
            if self.multi and c.doc is not None and board.held.get(t) != c.sha
        ]
        return min(times, default=None)

    # --- claiming --------------------------------------------------------------------------------

    def claim(
        self,
        task_id: str,
        attempt: int,
        now: datetime,
        *,
        board: Board | None = None,
        seen: Board | None = None,
        lifecycle: str = "running",
        max_attempts: int | None = None,
    ) -> ClaimResult:
        """Make `task_id` this checkout's for attempt `attempt`, counting the attempt in the task's
        shared facts in the same atomic push. With `board` (this tick's read_all) the first try reads
        nothing; every later one reads the task again. `seen` (this tick's board) is told what the
        remote took, so that the rest of the tick leases what is there now.

        Calling it again for a claim this checkout already holds wins again (a crash after the push).
        In single mode nothing is claimed: the attempt is recorded, and a remote that cannot record it
        only costs the other checkouts that knowledge (it is said in the message).
        """
        check_task_id(task_id)
        for _ in range(MAX_RACES):
            try:
                current = board if board is not None else self.read(task_id)
            except GitError as e:
                return self._unrecorded(task_id, f"cannot read {self.remote}: {e}")
            board = None
            held = {t: ref.sha for t, ref in self.held().items()} if self.multi else {}
            decided = self._decide(task_id, attempt, now, current, held, max_attempts)
            if isinstance(decided, ClaimResult):
                return decided
            result = self._try_claim(Claiming(task_id, attempt, lifecycle, *decided), now, seen)
            if result is not None:
                return result
        said = f"{task_id}: lost {MAX_RACES} races for its claim in a row; not started this tick"
        return ClaimResult(Outcome.LOST, task_id, said)

    def claim_all(
        self,
        wanted: Mapping[str, tuple[int, str]],
        now: datetime,
        *,
        board: Board,
        max_attempts: int | None = None,
    ) -> dict[str, ClaimResult]:
        """claim() for several tasks (task -> its attempt and lifecycle), in one atomic push when the
        remote contests none of them: the tasks a tick starts, and the live workers this checkout holds
        no claim for (twenty given back to the train by `ralph retry` cost twenty pushes, most of the
        tick that landed them). A refused push, and each is claimed on its own as claim() does."""
        results: dict[str, ClaimResult] = {}
        batch: list[Claiming] = []
        for task_id, (attempt, lifecycle) in wanted.items():
            check_task_id(task_id)
            decided = self._decide(task_id, attempt, now, board, board.held, max_attempts)
            if isinstance(decided, ClaimResult):
                results[task_id] = decided
            else:
                batch.append(Claiming(task_id, attempt, lifecycle, *decided))
        if batch:
            settled = self._claimed(batch, self._push_claims(batch, now, board), now)
            if settled is None:  # a race lost (another host moved one of them): each reads its own again
                settled = {
                    c.task_id: self.claim(
                        c.task_id,
                        c.attempt,
                        now,
                        seen=board,
                        lifecycle=c.lifecycle,
                        max_attempts=max_attempts,
                    )
                    for c in batch
                }
            results.update(settled)
        return {t: results[t] for t in wanted}

    def _claimed(
        self, batch: list[Claiming], pushed: MultiPush, now: datetime
    ) -> dict[str, ClaimResult] | None:
        """What one push for `batch` made of each claim; None when a race was lost (read again)."""
        if pushed.ok:
            return {c.task_id: self._won(c.task_id, c.attempt, now, c.facts, c.stale) for c in batch}
        if pushed.status is PushStatus.RACE:
            return None
        if not self.multi:
            return {c.task_id: self._unrecorded(c.task_id, pushed.message) for c in batch}
        said = _refusal(pushed, self.remote)
        permanent = pushed.status is PushStatus.PERMANENT
        return {
            c.task_id: ClaimResult(
                Outcome.ERROR,
                c.task_id,
                f"cannot claim {c.task_id}: {said}",
                facts=c.facts,
                permanent=permanent,
            )
            for c in batch
        }

    def _push_claims(self, batch: list[Claiming], now: datetime, seen: Board | None) -> MultiPush:
        """Each task's facts with its attempt counted and (multi mode) its claim, in one push, atomic
        unless it is one task's facts alone. A claim is noted here before the push (a crash after it
        then finds the claim its own) and the note taken back when the remote says no; after a
        transport error the push may have gone through, so the note stays (claiming again, or the
        heartbeat, finds out). What the remote took is written into `seen` (this tick's board), so that
        the rest of the tick leases what is there now (the landing deletes these very facts)."""
        planned = [(c, self._counted(c.facts.doc, c.attempt, now), self._claim_doc(c, now)) for c in batch]
        commits: list[NewCommit] = []
        for c, facts_doc, claim_doc in planned:
            commits.append(
                NewCommit({FACTS_FILE: _dump(facts_doc)}, f"ralph: {c.task_id} attempt {c.attempt}", now)
            )
            if claim_doc is not None:
                commits.append(_claim_commit(claim_doc, now))
        shas = iter(write_commits(self.git, commits))
        updates: list[RefUpdate] = []
        notes: dict[str, str | None] = {}
        taken = Board()
        for c, facts_doc, claim_doc in planned:
            facts_sha = next(shas)
            updates.append(RefUpdate(facts_ref(c.task_id), facts_sha, c.facts.sha))
            taken.facts[c.task_id] = Facts(c.task_id, facts_sha, facts_doc)
            if claim_doc is not None:
                claim_sha = next(shas)
                lease = None if c.stale is None else c.stale.sha
                updates.append(RefUpdate(claim_ref(c.task_id), claim_sha, lease))
                notes[HELD + c.task_id] = claim_sha
                taken.claims[c.task_id] = Claim(c.task_id, claim_sha, claim_doc)
                taken.held[c.task_id] = claim_sha
        if len(updates) == 1:
            pushed = self._push(updates)
        else:
            update_refs(self.git, notes)
            pushed = push_atomic(self.git, remote=self.remote, updates=updates, timeout=self.timeout)
            if not pushed.ok and pushed.status is not PushStatus.TRANSPORT:
                update_refs(self.git, dict.fromkeys(notes))  # the remote said no: nothing of ours is there
        if pushed.ok and seen is not None:
            seen.facts.update(taken.facts)
            seen.claims.update(taken.claims)
            seen.held.update(taken.held)
        return pushed

    def _decide(
        self,
        task_id: str,
        attempt: int,
        now: datetime,
        current: Board,
        held: Mapping[str, str],
        max_attempts: int | None,
    ) -> ClaimResult | tuple[Facts, Claim | None]:
        """What `current` says of claiming `task_id`: the answer, or the facts and the stale claim (if
        any) a push for it must lease."""
        facts = current.facts_of(task_id)
        claim = current.claims.get(task_id) if self.multi else None
        if claim is not None and held.get(task_id) == claim.sha:
            return ClaimResult(Outcome.WON, task_id, f"{task_id} is held here already", claim, facts)
        stop = facts.stop()
        if stop is None and max_attempts is not None and attempt > max_attempts:
            stop = f"has no attempts left ({facts.attempts}/{max_attempts}, counted on every host)"
        if stop is not None:
            return ClaimResult(Outcome.REFUSED, task_id, f"{task_id} {stop}; not started", claim, facts)
        if claim is not None and not claim.stale(now, self.ttl):
            said = f"{task_id} is claimed by {claim.describe(now)}; not started here"
            return ClaimResult(Outcome.LOST, task_id, said, claim, facts)
        return facts, claim

    def _try_claim(self, claiming: Claiming, now: datetime, seen: Board | None) -> ClaimResult | None:
        """One push for the claim (and the attempt); None when a race was lost and the caller reads again."""
        settled = self._claimed([claiming], self._push_claims([claiming], now, seen), now)
        return None if settled is None else settled[claiming.task_id]

    def _claim_doc(self, c: Claiming, now: datetime) -> ClaimDoc | None:
        """The claim document for `c` (multi mode; single mode claims nothing)."""
        if not self.multi:
            return None
        return ClaimDoc(
            task_id=c.task_id,
            host=self.host,
            token=secrets.token_hex(8),
            attempt=c.attempt,
            started_at=now,
            heartbeat=now,
            lifecycle=c.lifecycle,
            took_over_from=None if c.stale is None else c.stale.host,
        )

    def _won(
        self, task_id: str, attempt: int, now: datetime, facts: Facts, stale: Claim | None
    ) -> ClaimResult:
        if not self.multi:
            return ClaimResult(Outcome.WON, task_id, f"{task_id} attempt {attempt} recorded", facts=facts)
        if stale is None:
            return ClaimResult(Outcome.WON, task_id, f"{task_id} claimed (attempt {attempt})", facts=facts)
        said = f"{task_id} taken over from {stale.describe(now)}, stale; attempt {attempt}"
        return ClaimResult(Outcome.TAKEN_OVER, task_id, said, stale, facts)

    def _unrecorded(self, task_id: str, why: str) -> ClaimResult:
        if self.multi:
            return ClaimResult(Outcome.ERROR, task_id, f"cannot claim {task_id}: {why}")
        # One host alone needs no claim; the shared count is what a fresh checkout would miss.
        said = f"{task_id}: its attempt is counted on this host only ({why})"
        return ClaimResult(Outcome.WON, task_id, said)

    def _push(self, updates: list[RefUpdate]) -> MultiPush:
        """Independent refs in one push: each under its own lease, each with its own verdict."""
        return push_refs(self.git, remote=self.remote, updates=updates, atomic=False, timeout=self.timeout)

    # --- heartbeats and releases -----------------------------------------------------------------

    def heartbeat(
        self, live: Mapping[str, str], now: datetime, *, force: bool = False, board: Board | None = None
    ) -> Heartbeat:
        """Refresh the claims of this host's live workers (`live`: task id -> lifecycle) in one push,
        each under a lease on the commit this checkout last wrote, and release the claims it holds
        for anything not live. A claim is refreshed once REFRESH_FRACTION of the TTL has passed
        (every time with `force`), so most ticks push nothing. With `board` (this tick's read_all), a
        claim the board shows gone or changed is settled at once, with no push: lost (cancelled,
        discarded or taken over elsewhere), or this checkout's own write it had not noted.
        Single mode: nothing to do.

        The push is deliberately not atomic: each claim stands alone, so a lost one is named by its
        own verdict (the remote's `stale info`) and the others are refreshed all the same.
        """
        beat = Heartbeat()
        if not self.multi:
            return beat
        held = self.held()
        beat.unheld = [t for t in live if t not in held]
        release = [t for t in held if t not in live]
        seen = {} if board is None else {t: c.sha for t, c in board.claims.items()}
        moved = [t for t in live if t in held and board is not None and seen.get(t) != held[t].sha]
        refresh_after = self.ttl / REFRESH_FRACTION
        due = [
            t for t in live if t in held and t not in moved and (force or _older(held[t], now, refresh_after))
        ]
        if not due and not release and not moved:
            return beat
        docs = _read_docs(self.git, {t: held[t].sha for t in (*due, *moved)}, CLAIM_FILE, ClaimDoc)
        fresh = {
            t: docs[t].model_copy(update={"heartbeat": now, "lifecycle": live[t]}) for t in due if t in docs
        }
        shas = write_commits(self.git, [_claim_commit(d, now) for d in fresh.values()])
        new = dict(zip(fresh, shas, strict=True))
        updates = [RefUpdate(claim_ref(t), sha, held[t].sha) for t, sha in new.items()]
        updates += [RefUpdate(claim_ref(t), None, held[t].sha) for t in release]
        pushed = self._push(updates)
        notes: dict[str, str | None] = {}
        suspects = [t for t in due if t not in new]  # our own claim unreadable here: ask the remote
        for t, sha in new.items():
            status = pushed.results[claim_ref(t)].status
            if status is PushStatus.OK:
                notes[HELD + t] = sha
                beat.refreshed.append(t)
            elif status is PushStatus.RACE:
                suspects.append(t)
            elif beat.error is None:
                beat.error = f"{claim_ref(t)}: {_refusal(pushed, self.remote)}"
        for t in release:
            status = pushed.results[claim_ref(t)].status
            if status in (PushStatus.OK, PushStatus.RACE):  # released, or not ours to release any more
                notes[HELD + t] = None
                beat.released.append(t)
        if moved:
            assert board is not None
            self._settle(moved, held, docs, notes, beat, board)
        if suspects:
            try:
                there = self._read([claim_ref(t) for t in suspects], exact=True)
            except GitError as e:
                beat.error = beat.error or f"cannot read {self.remote}: {e}"
            else:
                self._settle(suspects, held, docs, notes, beat, there)
        update_refs(self.git, notes)
        return beat

    def _settle(
        self,
        tasks: list[str],
        held: dict[str, LocalRef],
        docs: dict[str, ClaimDoc],
        notes: dict[str, str | None],
        beat: Heartbeat,
        board: Board,
    ) -> None:
        """Claims the remote (as `board` read it) no longer has as this checkout left them: still ours
        if it holds our own later write (same token: a crash came between a push and its note), else
        lost."""
        for t in tasks:
            now_there = board.claims.get(t)
            if now_there is not None and _same_claim(docs.get(t), now_there.doc):
                notes[HELD + t] = now_there.sha  # adopted; refreshed when due
                continue
            if now_there is not None and now_there.sha == held[t].sha:
                continue  # unchanged after all (the push raced with nothing): try again next time
            beat.lost[t] = now_there
            notes[HELD + t] = None

    def release(self, task_ids: Iterable[str]) -> list[str]:
        """Let go of claims this checkout holds (a worker that failed or was blocked), under their
        leases, in one push; the tasks whose claims are no longer ours either way. heartbeat() does
        this for every held claim without a live worker."""
        held = self.held()
        mine = [t for t in task_ids if t in held]
        if not self.multi or not mine:
            return []
        updates = [RefUpdate(claim_ref(t), None, held[t].sha) for t in mine]
        pushed = self._push(updates)
        gone = [t for t in mine if pushed.results[claim_ref(t)].status in (PushStatus.OK, PushStatus.RACE)]
        update_refs(self.git, {HELD + t: None for t in gone})
        return gone

    # --- landing ---------------------------------------------------------------------------------

    def fence(self, task_ids: Iterable[str]) -> Fence:
        """The updates the landing push adds: each landed task's claim deleted under a lease on the
        commit this checkout holds. With ralph.git.push_atomic the base moves and the claims go in one
        transaction; a claim lost meanwhile rejects the whole push, named by its ref. Single mode:
        nothing to add."""
        ids = list(task_ids)
        if not self.multi:
            return Fence([], [])
        held = self.held()
        return Fence(
            updates=[RefUpdate(claim_ref(t), None, held[t].sha) for t in ids if t in held],
            unheld=[t for t in ids if t not in held],
        )

    def forget(self, task_ids: Iterable[str]) -> None:
        """Claims this checkout no longer holds (landed, or lost to another host): no longer noted."""
        if self.multi:
            update_refs(self.git, {HELD + t: None for t in task_ids})

    def prune(self, board: Board, done: Collection[str], now: datetime) -> list[str]:
        """Delete what the remote keeps for tasks in the done archive (their facts, and claims gone
        stale), under leases on what `board` read, in one push: so refs/ralph/ holds only tasks still
        to do. Returns the tasks cleaned up; a lease lost to a concurrent change is left for later."""
        facts = [f for t, f in board.facts.items() if t in done and f.sha]
        updates = [RefUpdate(facts_ref(f.task_id), None, f.sha) for f in facts]
        updates += [
            RefUpdate(claim_ref(t), None, c.sha)
            for t, c in board.claims.items()
            if t in done and c.stale(now, self.ttl) and t not in board.held
        ]
        if not updates:
            return []
        pushed = self._push(updates)
        cleaned = {task_of(u.ref) for u in updates if pushed.results[u.ref].status is PushStatus.OK}
        return sorted(t for t in cleaned if t is not None)

    # --- shared facts --------------------------------------------------------------------------------

    def record_attempt(self, task_id: str, attempt: int, now: datetime) -> Recorded:
        """Count attempt `attempt` as started (claim() does this itself, with the claim)."""

        return self._change(task_id, now, lambda doc: self._counted(doc, attempt, now), f"attempt {attempt}")

    def _counted(self, doc: FactsDoc, attempt: int, now: datetime) -> FactsDoc:
        return doc.model_copy(
            update={"attempts": max(doc.attempts, attempt), "last_attempt_at": now, "last_host": self.host}
        )

    def record_cancel(self, task_id: str, now: datetime, reason: str) -> Recorded:
        """No host starts the task again until `clear`; its claim, if any, goes in the same push, so
        the host working on it finds its claim lost and cannot land it."""
        mark = Mark(at=now, host=self.host, reason=reason)
        return self._change(
            task_id, now, lambda doc: doc.model_copy(update={"cancelled": mark}), "cancel", release=True
        )

    def record_block(self, task_id: str, now: datetime, reason: str) -> Recorded:
        """The task's work cannot land (blocked_push): no host starts it again until `clear`."""
        mark = Mark(at=now, host=self.host, reason=reason)
        return self._change(task_id, now, lambda doc: doc.model_copy(update={"blocked": mark}), "block")

    def clear(self, task_id: str, now: datetime, reason: str, *, release: bool = False) -> Recorded:
        """A fresh round for the task on every host: no attempts, no cancellation, no block (`ralph
        retry`, `ralph discard`). The record stays, marked cleared, so that a host's own older count
        is known to be of an earlier round (Board.next_attempt); with `release`, the claim goes too."""
        mark = Mark(at=now, host=self.host, reason=reason)
        fresh = FactsDoc(task_id=task_id, cleared=mark)
        return self._change(task_id, now, lambda _: fresh, "clear", release=release)

    def _change(
        self,
        task_id: str,
        now: datetime,
        change: Callable[[FactsDoc], FactsDoc],
        what: str,
        *,
        release: bool = False,
    ) -> Recorded:
        check_task_id(task_id)
        for _ in range(MAX_RACES):
            try:
                board = self.read(task_id)
            except GitError as e:
                return Recorded(False, f"cannot read {self.remote}: {e}")
            facts = board.facts_of(task_id)
            claim = board.claims.get(task_id) if release else None
            doc = change(facts.doc)
            message = f"ralph: {task_id} {what}"
            (sha,) = write_commits(self.git, [NewCommit({FACTS_FILE: _dump(doc)}, message, now)])
            updates = [RefUpdate(facts_ref(task_id), sha, facts.sha)]
            if claim is not None:
                updates.append(RefUpdate(claim_ref(task_id), None, claim.sha))
            pushed = push_atomic(self.git, remote=self.remote, updates=updates, timeout=self.timeout)
            if pushed.ok:
                said = f"{task_id}: {what} recorded on {self.remote}"
                return Recorded(True, said, facts, claim, cleared=what == "clear")
            if pushed.status is not PushStatus.RACE:
                return Recorded(False, _refusal(pushed, self.remote), facts)
        return Recorded(False, f"{task_id}: lost {MAX_RACES} races for its facts in a row; try again")


# --- helpers --------------------------------------------------------------------------------------------


def _file_of(ref: str) -> str:
    return CLAIM_FILE if ref.startswith(CLAIMS) else FACTS_FILE


def _dump(doc: BaseModel) -> bytes:
    return doc.model_dump_json(indent=2, exclude_none=True).encode() + b"\n"


def _claim_commit(doc: ClaimDoc, now: datetime) -> NewCommit:
    message = f"ralph: {doc.task_id} claimed by {doc.host} (attempt {doc.attempt}, {doc.lifecycle})"
    return NewCommit({CLAIM_FILE: _dump(doc)}, message, now)


def _parse(model: type[D], data: bytes | None) -> D | None:
    if data is None:
        return None
    try:
        return model.model_validate(loads_json(data))
    except (ValueError, ValidationError):  # not JSON, too deep, or not the document's shape
        return None


def _board(listing: Mapping[str, str], specs: Mapping[str, str], blobs: Mapping[str, bytes]) -> Board:
    board = Board()
    for ref, sha in listing.items():
        task = task_of(ref)
        if task is None:
            continue
        data = blobs.get(specs[ref])
        if ref.startswith(CLAIMS):
            board.claims[task] = Claim(task, sha, _parse(ClaimDoc, data))
        else:
            doc = _parse(FactsDoc, data)
            board.facts[task] = Facts(task, sha, doc or FactsDoc(task_id=task), readable=doc is not None)
    return board


def _read_docs(git: Git, shas: Mapping[str, str], name: str, model: type[D]) -> dict[str, D]:
    specs = {task: f"{sha}:{name}" for task, sha in shas.items()}
    blobs = cat_blobs(git, list(specs.values()), limit=MAX_DOC_BYTES)
    docs = {task: _parse(model, blobs.get(spec)) for task, spec in specs.items()}
    return {task: doc for task, doc in docs.items() if doc is not None}


def _same_claim(mine: ClaimDoc | None, theirs: ClaimDoc | None) -> bool:
    """Whether the remote's claim is this checkout's own later write: the token its claim was made with."""
    return mine is not None and theirs is not None and theirs.token == mine.token


def _older(ref: LocalRef, now: datetime, age: timedelta) -> bool:
    return ref.committed is None or now - ref.committed >= age


def _refusal(pushed: MultiPush, remote: str) -> str:
    if pushed.status is PushStatus.PERMANENT:
        return (
            f"{remote} refuses it ({pushed.message}); it must allow pushes to refs/ralph/ "
            "(`ralph doctor` checks, and says what to configure)"
        )
    return pushed.message


# --- doctor ---------------------------------------------------------------------------------------------


def probe(git: Git, *, remote: str, host: str, commit: str) -> str | None:
    """Whether `remote` lets ralph keep claims: point a throwaway ref under refs/ralph/doctor/ at
    `commit` (one the remote has, so nothing new is written anywhere) with an atomic leased push, see it
    listed, delete it under its lease. None when all of that worked, else what failed (one line)."""
    ref = DOCTOR + host
    there = ls_remote_refs(git, remote, [ref], timeout=READ_TIMEOUT_S, exact=True).get(ref)
    pushed = push_atomic(git, remote=remote, updates=[RefUpdate(ref, commit, there)], timeout=PUSH_TIMEOUT_S)
    if not pushed.ok:
        return f"{remote} refused an atomic push to {ref}: {pushed.message}"
    listed = ls_remote_refs(git, remote, [ref], timeout=READ_TIMEOUT_S, exact=True).get(ref)
    deleted = push_atomic(git, remote=remote, updates=[RefUpdate(ref, None, commit)], timeout=PUSH_TIMEOUT_S)
    if listed != commit:
        return f"{remote} took a push to {ref} but does not list it (refs/ralph/ hidden from ls-remote?)"
    if not deleted.ok:
        return f"{remote} took a push to {ref} but refused to delete it: {deleted.message}"
    return None
