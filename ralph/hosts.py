"""The tick's side of claims (ralph.claims): what it may start, the claims of its live workers, and the
fence on its landing push (README "Running on several machines").

One read of the remote's claims and facts per pass, and only when it matters (a worker in flight, a
task that could start); every step of the pass works from that board:

- selection skips what the shared facts refuse (attempts counted on every host, a cancellation, a
  block; in every mode) and, in multi mode, what another host holds live;
- a task starts only once its claim is won (its attempt counted in the same push); an error of the
  remote in multi mode starts nothing and fails the tick with one line;
- the heartbeat refreshes the claims of live workers in one push; a worker whose claim was lost is
  stopped without pushing anything;
- the landing push moves the base and deletes the landed tasks' claims and facts in one atomic
  transaction; a claim lost meanwhile takes its task out of the train, and the rest lands.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from ralph import stamp
from ralph.bookkeeping import RemoteUnreachable
from ralph.claims import (
    CLAIMS,
    READ_TIMEOUT_S,
    Board,
    Claims,
    Outcome,
    claim_ref,
    facts_ref,
    task_of,
)
from ralph.crew import Crew, Sharing
from ralph.errors import GitError, RalphError
from ralph.git import (
    MultiPush,
    PushResult,
    PushStatus,
    RefUpdate,
    ls_remote_refs,
    push_atomic,
    push_with_lease,
)
from ralph.landing import PUSH_TIMEOUT_S
from ralph.queue import Task
from ralph.state import Lifecycle, Worker

logger = logging.getLogger(__name__)


class ClaimsRefused(RalphError):
    """In multi mode the remote would not take a claim: nothing started, the tick fails saying why."""


def begin(crew: Crew) -> None:
    """An online pass keeps claims (offline, nothing on the remote can be read or changed)."""
    crew.sharing = Sharing(Claims.for_checkout(crew.checkout, crew.git))


def board(crew: Crew) -> Board | None:
    """This pass's read of the remote, made on first use; None when it cannot be read."""
    sharing = crew.sharing
    if sharing is None:
        return None
    if sharing.board is None and sharing.error is None:
        try:
            sharing.board = sharing.claims.read_all()
        except GitError as e:
            sharing.error = f"cannot read the claims on {crew.checkout.remote}: {e}"
            logger.warning("%s; %s", sharing.error, _consequence(sharing.claims))
    return sharing.board


def fetch_after_board(crew: Crew) -> bool:
    """Before selection trusts the board: whether the base moved since this tick's fetch (then it is
    fetched again, and selection must look again). A landing moves the base and deletes its tasks'
    claims in one transaction, but a listing is no snapshot: a claim the board no longer has may be
    of a task that landed after this tick's fetch. The base, asked for after the claims, shows every
    such landing, so nothing landed starts again."""
    sharing = crew.sharing
    if sharing is None or sharing.base_checked or board(crew) is None:
        return False
    sharing.base_checked = True
    branch = f"refs/heads/{crew.base}"
    try:
        there = ls_remote_refs(crew.git, crew.checkout.remote, [branch], timeout=READ_TIMEOUT_S, exact=True)
        if there.get(branch) == crew.base_sha:
            return False
        crew.fetch()
    except (GitError, RemoteUnreachable) as e:
        sharing.error = f"cannot read {crew.checkout.remote}/{crew.base} after its claims: {e}"
        sharing.board = None
        logger.warning("%s; %s", sharing.error, _consequence(sharing.claims))
    return True


def _consequence(claims: Claims) -> str:
    return "nothing starts this tick" if claims.multi else "attempts are counted on this host only"


# --- selection and the start --------------------------------------------------------------------------


def adopt_fresh_rounds(crew: Crew) -> None:
    """A task this host gave up on (no attempts left, cancelled, blocked) that a person gave a fresh
    round from another host (`ralph retry` or `ralph discard` there clears its shared record) gets one
    here too: the local record starts over, as `ralph retry` here would have done. Reads the board only
    when such a record exists."""
    stuck = [w for w in crew.state.workers if _given_up(w, crew.config.agent.max_attempts)]
    if crew.sharing is None or not stuck:
        return
    seen = board(crew)
    if seen is None:
        return
    for worker in stuck:
        cleared = seen.facts_of(worker.task_id).doc.cleared
        if cleared is None or cleared.at <= worker.updated_at:
            continue  # no fresh round, or one this record already knows of
        worker.attempt = 0  # the next start is attempt 1 of the fresh round
        worker.next_attempt_at = crew.now
        worker.push_attempts = 0
        worker.remediations = 0
        worker.last_error = None
        crew.ledger.transition(
            worker,
            Lifecycle.FAILED,
            f"a fresh round given on {cleared.host} ({cleared.reason}): starting over",
            announce=False,
        )


def _given_up(worker: Worker, max_attempts: int) -> bool:
    """A record that by itself keeps its task from starting here again."""
    if worker.lifecycle is Lifecycle.BLOCKED_PUSH:
        return True
    stopped = worker.next_attempt_at is None or worker.attempt >= max_attempts
    return worker.lifecycle is Lifecycle.FAILED and stopped


def startable(crew: Crew, tasks: list[Task]) -> list[Task]:
    """The tasks no host's record or claim refuses; all of them when the tick keeps no claims."""
    sharing = crew.sharing
    if sharing is None or not tasks:
        return tasks
    seen = board(crew)
    if seen is None:
        return [] if sharing.claims.multi else tasks
    keep = []
    for task in tasks:
        if task.id in sharing.lost:
            continue  # another host has it now
        worker = crew.state.worker(task.id)
        why = sharing.claims.why_not(
            seen,
            task.id,
            crew.now,
            max_attempts=crew.config.agent.max_attempts,
            attempts_here=_attempt(crew, task.id),
            here_since=None if worker is None else worker.started_at,
        )
        if why is None:
            keep.append(task)
        elif task.id not in sharing.said:
            sharing.said.add(task.id)
            logger.info("%s: not starting it here: %s", task.id, why)
    return keep


def claim(crew: Crew, tasks: list[Task]) -> list[tuple[Task, int | None]]:
    """Claim each of `tasks` for its next attempt (counted on the remote with the claim), in one push
    when nobody contests them: that attempt's number, or None for a task that must not start here (the
    tick's report says why)."""
    sharing = crew.sharing
    here = {t.id: _attempt(crew, t.id) for t in tasks}
    if sharing is None:
        return [(t, here[t.id] + 1) for t in tasks]  # offline: this host's own count
    if sharing.error is not None and sharing.claims.multi:
        return [(t, None) for t in tasks]
    seen = board(crew)
    attempts = {t.id: _next_attempt(crew, sharing.claims, seen, t.id, here[t.id]) for t in tasks}
    max_attempts = crew.config.agent.max_attempts
    if seen is None:  # the board could not be read: each claim reads its task itself
        results = {
            t.id: sharing.claims.claim(t.id, attempts[t.id], crew.now, max_attempts=max_attempts)
            for t in tasks
        }
    else:
        wanted = {t.id: (attempts[t.id], "running") for t in tasks}
        results = sharing.claims.claim_all(wanted, crew.now, board=seen, max_attempts=max_attempts)
    claimed: list[tuple[Task, int | None]] = []
    for task in tasks:
        result = results[task.id]
        if result.started:
            logger.debug("%s", result.message)
            claimed.append((task, attempts[task.id]))
            continue
        if result.outcome is Outcome.ERROR:
            if sharing.error is None:  # the first says why; the rest were refused alike
                sharing.error, sharing.refused = result.message, True
        else:
            crew.act(task.id, "not_claimed", result.message)
        claimed.append((task, None))
    return claimed


def _next_attempt(crew: Crew, claims: Claims, seen: Board | None, task_id: str, here: int) -> int:
    """The attempt to claim: after every attempt counted anywhere (`seen`), else after this host's."""
    if seen is None:
        return here + 1
    worker = crew.state.worker(task_id)
    since = None if worker is None else worker.started_at
    return seen.next_attempt(task_id, here, since, claims.host)


def check(crew: Crew) -> None:
    """After the pass: a remote that refused a claim in multi mode fails the tick with its one line."""
    sharing = crew.sharing
    if sharing is not None and sharing.refused and sharing.error is not None:
        raise ClaimsRefused(f"{sharing.error}; nothing was started")


# --- heartbeats -----------------------------------------------------------------------------------------


def keep(crew: Crew) -> None:
    """Refresh the claims of this host's live workers (one push, when due), let go of claims with no
    live worker, claim what runs here unclaimed (work started before claims, or given back to the
    train by `ralph retry`), and stop every worker whose claim another host or a person took."""
    sharing = crew.sharing
    if sharing is None or not sharing.claims.multi:
        return
    claims = sharing.claims
    workers = crew.state.workers
    live = {w.task_id: str(w.lifecycle) for w in workers if w.lifecycle not in Lifecycle.terminal()}
    if not live:
        beat = claims.heartbeat({}, crew.now)  # lets go of whatever is still held; nothing held, no push
        if beat.error:
            logger.warning("could not let go of claims on %s: %s", claims.remote, beat.error)
        return
    seen = board(crew)
    if seen is None:
        return
    beat = claims.heartbeat(live, crew.now, board=seen)
    if beat.error:
        logger.warning("heartbeat on %s: %s", claims.remote, beat.error)
    for task_id, holder in beat.lost.items():
        who = "a person (cancelled or discarded elsewhere)" if holder is None else holder.host
        stop(crew, crew.state.worker(task_id), f"claim lost to {who}")
    unheld = {t: (_attempt(crew, t), live[t]) for t in beat.unheld}
    for task_id, result in claims.claim_all(unheld, crew.now, board=seen).items():
        worker = crew.state.worker(task_id)
        assert worker is not None
        if result.started:
            logger.debug("%s", result.message)
        elif result.outcome in (Outcome.LOST, Outcome.REFUSED):
            stop(crew, worker, f"claim lost: {result.message}")
        else:
            logger.warning("%s", result.message)


def _attempt(crew: Crew, task_id: str) -> int:
    """The attempt this host's record of the task is at (0: none yet)."""
    worker = crew.state.worker(task_id)
    return 0 if worker is None else worker.attempt


def let_go(crew: Crew) -> None:
    """The claims of workers that ended in this pass (failed, blocked) go at once, in one push, so
    another host need not wait for this host's next tick to start the task's next attempt."""
    sharing = crew.sharing
    if sharing is None or not sharing.claims.multi:
        return
    ended = [
        w.task_id
        for w in crew.state.workers
        if w.lifecycle in (Lifecycle.FAILED, Lifecycle.BLOCKED_PUSH) and w.completed_at == crew.now
    ]
    if ended:
        try:
            sharing.claims.release(ended)
        except GitError as e:  # the next heartbeat lets go of them
            logger.warning("could not release the claims of %s: %s", ", ".join(ended), e)


def stop(crew: Crew, worker: Worker | None, reason: str) -> None:
    """Stop a worker that may no longer land its task: its job killed, its commits kept in the attic,
    nothing pushed; the attempt ends failed (retried later only if no other host holds the task)."""
    if worker is None or worker.lifecycle in Lifecycle.terminal():
        return
    if crew.sharing is not None:
        crew.sharing.lost.add(worker.task_id)
        crew.sharing.claims.forget([worker.task_id])
    try:
        saved = crew.stop_and_shelve(worker)
        kept = f"its work is kept as {saved}" if saved else "it had no unlanded commits"
    except RalphError as e:  # failed all the same: it may not land from here, whatever became of its work
        logger.warning("%s: %s; %s", worker.task_id, reason, e)
        kept = f"its work could not be saved: {e}"
    crew.fail(worker, reason)
    crew.act(worker.task_id, "claim_lost", f"stopped without pushing: {reason}; {kept}")
    crew.save()


# --- the landing -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LandingPush:
    pushed: PushResult | None  # None: nothing was pushed, `lost` must leave the train first
    lost: dict[str, str] = field(default_factory=dict)  # task -> why it may not land from here


def push_landing(crew: Crew, tip: str, task_ids: list[str]) -> LandingPush:
    """Move the base to `tip` and, with claims, delete the landed tasks' claims and facts in the same
    atomic push: each claim under the lease this host holds (a claim lost to another host refuses the
    whole push, the base does not move, and names its task), each task's facts under the lease of
    this tick's board."""
    sharing = crew.sharing
    remote = crew.checkout.remote
    if sharing is None or not sharing.claims.multi:
        return LandingPush(_plain_push(crew, tip))
    claims = sharing.claims
    seen = sharing.board
    fence = claims.fence(task_ids)
    lost: dict[str, str] = {}
    for task_id in fence.unheld:  # in flight from before claims, or a claim released by an error
        worker = crew.state.worker(task_id)
        attempt = 1 if worker is None else worker.attempt
        result = claims.claim(task_id, attempt, crew.now, seen=seen, lifecycle=str(Lifecycle.INTEGRATING))
        if result.outcome is Outcome.ERROR:  # the remote, not another host: a push that failed
            status = PushStatus.PERMANENT if result.permanent else PushStatus.TRANSPORT
            return LandingPush(PushResult(status, result.message))
        if not result.started:
            lost[task_id] = result.message
    if lost:
        return LandingPush(None, lost)
    if fence.unheld:
        fence = claims.fence(task_ids)
    base = RefUpdate(f"refs/heads/{crew.base}", tip, crew.base_sha)
    known = {} if seen is None else seen.facts
    facts = {facts_ref(t): t for t in task_ids if t in known and known[t].sha}
    deletes = [RefUpdate(ref, None, known[t].sha) for ref, t in facts.items()]
    pushed = push_atomic(
        crew.git, remote=remote, updates=[base, *fence.updates, *deletes], timeout=PUSH_TIMEOUT_S
    )
    if facts and _facts_in_the_way(pushed, base, facts):
        # Deleting facts is tidying, never a reason not to land: another host changed them since this
        # tick read them (the same stale lease would fail every retry until the push attempts run out),
        # or the remote refuses their deletion. The landing goes again at once without them; prune
        # deletes what is left after a later landing.
        for ref in pushed.rejected:
            if ref in facts:
                del known[facts[ref]]  # a lease known stale: not for prune to try again
        facts = {}
        pushed = push_atomic(crew.git, remote=remote, updates=[base, *fence.updates], timeout=PUSH_TIMEOUT_S)
    if pushed.ok:
        claims.forget(task_ids)  # the push deleted them
        if seen is not None:  # gone from the remote with the landing: nothing of them is left to prune
            for task_id in facts.values():
                del seen.facts[task_id]
            for task_id in task_ids:
                seen.claims.pop(task_id, None)
                seen.held.pop(task_id, None)
        return LandingPush(PushResult(PushStatus.OK, pushed.message))
    for ref in pushed.rejected:
        named = task_of(ref)
        if ref.startswith(CLAIMS) and named is not None and pushed.results[ref].status is PushStatus.RACE:
            lost[named] = _holder(crew, claims, named)
    if lost:
        return LandingPush(None, lost)
    # The base's own verdict when it was refused for a reason of its own, else the push's as a whole
    # (it fell only with another ref of the transaction).
    if base.ref in pushed.rejected:
        return LandingPush(pushed.results[base.ref])
    return LandingPush(PushResult(pushed.status, pushed.message))


def _facts_in_the_way(pushed: MultiPush, base: RefUpdate, facts: Mapping[str, str]) -> bool:
    """Whether a landing push failed for the facts it deleted: only they were refused (a stale lease),
    or the remote refused the base for good (a policy that may be about the facts alone)."""
    rejected = set(pushed.rejected)
    refused = base.ref in rejected and pushed.results[base.ref].status is PushStatus.PERMANENT
    return bool(rejected) and (rejected <= facts.keys() or refused)


def _plain_push(crew: Crew, tip: str) -> PushResult:
    return push_with_lease(
        crew.git,
        remote=crew.checkout.remote,
        commit=tip,
        branch=crew.base,
        expected=crew.base_sha,
        timeout=PUSH_TIMEOUT_S,
    )


def _holder(crew: Crew, claims: Claims, task_id: str) -> str:
    """`claim lost to <host>`, as the remote has the task's claim now."""
    try:
        now_there = claims.read(task_id).claims.get(task_id)
    except GitError:
        now_there = None
    who = "a person (cancelled or discarded elsewhere)" if now_there is None else now_there.host
    return f"claim lost to {who}"


def prune(crew: Crew) -> None:
    """After a landing: what the remote still keeps for tasks now in the done archive goes, in one push
    (the landing's own tasks' records went with it; these are records another host changed meanwhile,
    or left behind)."""
    sharing = crew.sharing
    seen = None if sharing is None else sharing.board
    if sharing is None or seen is None or crew.queues is None:
        return
    done = {t.id for t in crew.queues.done.tasks}
    if not any(t in done for t in (*seen.facts, *seen.claims)):
        return
    try:
        cleaned = sharing.claims.prune(seen, done, crew.now)
    except GitError as e:
        logger.warning("could not prune refs/ralph/ on %s: %s", crew.checkout.remote, e)
        return
    if cleaned:
        logger.debug("pruned the remote's records of %s", ", ".join(cleaned))


def shared_digest(crew: Crew) -> str | None:
    """What the idle stamp compares to wake when another host changes a task's record or claims
    (ralph.stamp); None when this pass read nothing of refs/ralph/."""
    seen = None if crew.sharing is None else crew.sharing.board
    if seen is None:
        return None
    refs = {facts_ref(t): f.sha for t, f in seen.facts.items() if f.sha is not None}
    refs.update((claim_ref(t), c.sha) for t, c in seen.claims.items())
    return stamp.shared_digest(refs)


def wake_at(crew: Crew) -> list[datetime]:
    """When an idle tick must look again by itself: another host's claim turning stale."""
    sharing = crew.sharing
    if sharing is None or sharing.board is None:
        return []
    at = sharing.claims.stale_at(sharing.board)
    return [] if at is None else [at]
