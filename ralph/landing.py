"""Landing: verified work goes straight onto the base branch, by a push with a lease (DESIGN §6).

For a worker in `integrating`, each attempt: fetch the work into the control repository; is it
already on the base (a crash after an earlier push)? Is the task still wanted? Rebase onto a moved
base, in a worktree of the control repository; verify the new tree again if its code changed; build
the bookkeeping commit that archives the task, from the base as it is now; push exactly that, with
a lease on the base it was built on; classify what the remote said. Races back off and try again,
inside the tick while its budget lasts, on a later tick after that.

Only a tree that passed the CI gate is pushed: the bookkeeping commit changes nothing but the queue
and done files, and a rebase that changed any other file goes back through the gate.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError

from ralph import markers, prompts, replay, workspace
from ralph.bookkeeping import Mode, commit_files, read_files
from ralph.clock import scheduled
from ralph.crash import crashpoint
from ralph.errors import QueueError, RalphError
from ralph.files import FileTooLarge, read_beneath, write_atomic
from ralph.git import Git, PushStatus, push_with_lease
from ralph.models import FileModel, Text, describe_validation_error
from ralph.queue import Priority, Queues, Task, TaskStatus, next_id, read_queue_bytes
from ralph.queuedoc import archive_edit
from ralph.state import Lifecycle, Worker

if TYPE_CHECKING:
    from ralph.tick import Tick

logger = logging.getLogger(__name__)

PUSH_TIMEOUT_S = 120.0


class Attempt(Enum):
    SETTLED = "settled"  # landed, blocked, failed, or handed to a job: nothing more this tick
    RETRY = "retry"  # the push lost a race or could not reach the remote
    MOVED = "moved"  # the base moved while the push was being prepared: prepare again, at once


# How often an attempt may start over because the base moved before its push, within one land().
MAX_QUICK_REDOS = 3


def land(tick: Tick, worker: Worker) -> None:
    """Try to land `worker`'s verified work; back off and retry while the tick's budget allows."""
    if worker.next_attempt_at is not None and tick.now < worker.next_attempt_at:
        return
    parallel = tick.config.parallel
    redos = 0
    while True:
        try:
            tick.refetch_if_stale()
            outcome = _attempt(tick, worker, check_base=redos < MAX_QUICK_REDOS)
        except RalphError as e:
            if worker.lifecycle is not Lifecycle.INTEGRATING or worker.verified_sha is None:
                raise
            # Work that passed CI is not thrown away over a fetch that failed or a queue someone
            # broke on the base: it waits and tries again like a lost race, and blocks for a person
            # when the attempts are used up.
            worker.push_attempts += 1
            worker.last_error = str(e)
            outcome = Attempt.RETRY
        if outcome is Attempt.MOVED:
            redos += 1
            continue
        if outcome is not Attempt.RETRY:
            return
        if worker.push_attempts >= parallel.max_push_attempts:
            tick.block(
                worker,
                f"push attempts used up ({worker.push_attempts}/{parallel.max_push_attempts}); "
                f"last: {worker.last_error}",
            )
            tick.save()
            return
        delay = backoff_s(parallel.push_backoff_ms, worker.push_attempts, tick.waiting.rng)
        if tick.time_left() <= delay:
            worker.next_attempt_at = tick.now + timedelta(seconds=tick.elapsed() + delay)
            tick.act(
                worker.task_id,
                "push_race",
                f"push {worker.push_attempts} did not land ({worker.last_error}); "
                f"next attempt at {worker.next_attempt_at:%Y-%m-%dT%H:%M:%SZ}",
            )
            tick.save()
            return
        logger.info(
            "%s: push %d did not land (%s); again in %.1fs",
            worker.task_id,
            worker.push_attempts,
            worker.last_error,
            delay,
        )
        tick.save()
        tick.waiting.sleep(delay)  # longer than refetch_if_stale's limit: the next attempt looks again


def backoff_s(schedule_ms: list[int], attempt: int, rng: Any) -> float:
    """The wait after push attempt `attempt` (1-based): the schedule's entry, the last repeating, ±25%."""
    base = scheduled(schedule_ms, attempt) / 1000
    return float(base * rng.uniform(0.75, 1.25))


def _attempt(tick: Tick, worker: Worker, *, check_base: bool = True) -> Attempt:
    assert worker.verified_sha is not None and tick.queues is not None and tick.source is not None
    path = Path(worker.workspace_path)
    if not _import(tick, worker, worker.verified_sha):
        tick.block(worker, f"workspace {path} is gone, and {worker.verified_sha} with it")
        tick.save()
        return Attempt.SETTLED
    if tick.git.is_ancestor(worker.verified_sha, tick.base_sha):
        # Landed by an earlier tick that stopped before it could record it: never push twice.
        _landed(tick, worker, _landing_commit(tick, worker.verified_sha))
        return Attempt.SETTLED
    if tick.closed_elsewhere(worker):
        return Attempt.SETTLED
    task = tick.task(worker.task_id)
    # Not "has the base moved since the agent started": work that does not build on the base as it
    # is now (an agent that amended or reset past its starting commit) is replayed onto it too.
    if not tick.git.is_ancestor(tick.base_sha, worker.verified_sha) and not _rebase(tick, worker, task):
        return Attempt.SETTLED
    try:
        followups = read_followups(path, task, tick)
    except FollowupError as e:
        tick.block(worker, str(e))
        tick.save()
        return Attempt.SETTLED
    commit, pushed_queues = _bookkeeping_commit(tick, worker, task, followups)
    if check_base:
        # Preparing took a while (a rebase, the bookkeeping commit): a look now keeps the window in
        # which a rival push makes ours lose to the few milliseconds of the push itself.
        built_on = tick.base_sha
        tick.refetch_if_stale()
        if tick.base_sha != built_on:
            return Attempt.MOVED
    pushed = push_with_lease(
        tick.git,
        remote=tick.checkout.remote,
        commit=commit,
        branch=tick.base,
        expected=tick.base_sha,
        timeout=PUSH_TIMEOUT_S,
    )
    if pushed.status is PushStatus.OK:
        crashpoint("after-push-before-save")
        tick.base_sha = commit
        _landed(tick, worker, commit, followups=followups, queues=pushed_queues)
        return Attempt.SETTLED
    if pushed.status is PushStatus.PERMANENT:
        worker.push_attempts += 1
        tick.block(worker, f"{tick.checkout.remote} refused the push: {pushed.message}")
        tick.save()
        return Attempt.SETTLED
    worker.push_attempts += 1
    worker.last_error = f"{pushed.status.value}: {pushed.message}"
    return Attempt.RETRY


# --- rebase -------------------------------------------------------------------------------------------


def _rebase(tick: Tick, worker: Worker, task: Task) -> bool:
    """Replay the worker's work, as one commit, onto the moved base; False when a job or a person
    takes over.

    The replay's merge base is the worker's old base, so commits someone removed from the base by
    rewinding it are never brought back (ralph.replay).
    """
    assert worker.base_sha is not None and worker.verified_sha is not None
    replayed = replay.replay(
        tick.git,
        scratch=tick.paths.scratch,
        old_base=worker.base_sha,
        head=worker.verified_sha,
        onto=tick.base_sha,
        message=prompts.commit_message(task),
    )
    if not replayed.clean:
        return _conflict(tick, worker, task, replayed)
    head = replayed.commit
    verified = worker.verified_sha
    changed = code_changed(tick.git, verified, head, ignore=_bookkeeping_paths(tick))
    verify = changed and bool(tick.config.ci.command) and tick.config.ci.verify_rebased is not False
    if verify and not _slot_free(tick, worker, "verify its rebased work"):
        return False
    worker.base_sha = tick.base_sha
    worker.head_sha = head
    if verify:
        worker.verified_sha = None
        tick.start_ci(worker, f"rebased onto {tick.base_sha[:10]} ({head[:10]}); CI gate again")
        return False
    # Only the queue and done files differ from what passed the gate (or the policy says not to check).
    worker.verified_sha = head
    tick.ledger.transition(worker, Lifecycle.INTEGRATING, f"rebased onto {tick.base_sha[:10]}", head=head)
    tick.save()
    return True


def _conflict(tick: Tick, worker: Worker, task: Task, replayed: replay.Replayed) -> bool:
    """Hand the conflicted files, markers in place, to a remediation agent in a fresh workspace."""
    limit = tick.config.agent.max_remediations
    listed = ", ".join(replayed.conflicts)
    if worker.remediations >= limit:
        where = tick.source.label if tick.source else tick.base
        tick.block(
            worker, f"replaying onto {where} conflicts in {listed}, and {limit} remediations are used up"
        )
        tick.save()
        return False
    if not _slot_free(tick, worker, "resolve a merge conflict"):
        return False
    worker.remediations += 1
    worker.base_sha = tick.base_sha
    worker.head_sha = replayed.commit  # its tree holds the markers: never landed as it is
    worker.verified_sha = None
    worker.conflicts = list(replayed.conflicts)
    path = Path(worker.workspace_path)
    prompt = prompts.conflict_remediation_prompt(
        task,
        workspace=str(path),
        base_branch=tick.base,
        ci_command=tick.config.ci.command,
        conflicting_paths=replayed.conflicts,
        remediation=worker.remediations,
        max_remediations=limit,
        can=tick.abilities(),
    )
    tick.start_agent(
        worker,
        prompt,
        lifecycle=Lifecycle.REMEDIATING,
        detail=f"merge conflict in {listed}; remediation {worker.remediations}/{limit}",
        checkout_at=replayed.commit,
    )
    return False


def _slot_free(tick: Tick, worker: Worker, why: str) -> bool:
    """A job to verify or remediate counts toward --workers like any other; without a free slot the
    worker waits in `integrating` and tries again next tick."""
    if tick.free_slots() > 0:
        return True
    logger.info("%s: waiting for a free worker slot to %s", worker.task_id, why)
    return False


def code_changed(git: Git, before: str, after: str, *, ignore: tuple[str, ...]) -> bool:
    """Whether two commits' trees differ anywhere but in `ignore` (the queue and done files)."""
    excludes = [f":(exclude){p}" for p in ignore]
    diff = git.run(
        "diff", "--quiet", "--no-ext-diff", "--no-textconv", before, after, "--", ".", *excludes, ok=(0, 1)
    )
    return diff.returncode == 1


def _bookkeeping_paths(tick: Tick) -> tuple[str, ...]:
    assert tick.source is not None
    return (tick.source.queue_path, tick.source.done_path)


# --- the push -----------------------------------------------------------------------------------------


def _have_commit(tick: Tick, sha: str) -> bool:
    return tick.git.run("cat-file", "-e", f"{sha}^{{commit}}", ok=(0, 1, 128)).returncode == 0


def _import(tick: Tick, worker: Worker, sha: str) -> bool:
    """Have the workspace's commit in the control repository; False if it is nowhere to be had."""
    if _have_commit(tick, sha):
        return True
    path = Path(worker.workspace_path)
    if not path.exists():
        return False
    workspace.import_commit(tick.git, path, task_id=worker.task_id, rev=sha)
    return True


def _bookkeeping_commit(
    tick: Tick, worker: Worker, task: Task, followups: list[Task]
) -> tuple[str, Queues | None]:
    """The commit to push, and the queue files it carries: in tracked mode, the verified commit plus one
    that archives the task; untracked, the verified commit alone (the files are this host's)."""
    assert worker.verified_sha is not None and tick.queues is not None and tick.source is not None
    if tick.source.mode is Mode.UNTRACKED:
        return worker.verified_sha, None
    # Rebuilt from the base as it is now (read at tick.base_sha, which follows our own pushes), so
    # other workers' entries are never touched; only this task's lines change (ralph.queuedoc).
    queue_path, done_path = tick.source.queue_path, tick.source.done_path
    blobs = read_files(tick.git, tick.base_sha, (queue_path, done_path))
    edit = archive_edit(
        blobs.get(queue_path),
        blobs.get(done_path),
        task.id,
        tick.now,
        followups,
        queue_name=tick.queues.queue_name,
        done_name=tick.queues.done_name,
    )
    queue_bytes, done_bytes = edit.render()
    files = {queue_path: queue_bytes, done_path: done_bytes}
    added = f" (+{len(followups)} follow-up{'s' if len(followups) != 1 else ''})" if followups else ""
    commit = commit_files(
        tick.git,
        scratch=tick.paths.scratch,
        parent=worker.verified_sha,
        files=files,
        message=f"ralph: archive {task.id}{added}",
    )
    return commit, edit.queues


def _landing_commit(tick: Tick, verified: str) -> str:
    """The commit on the base that landed `verified`: in tracked mode its bookkeeping child (the first
    commit on the way from it to the base), untracked the verified commit itself."""
    assert tick.source is not None
    if tick.source.mode is Mode.UNTRACKED:
        return verified
    path = tick.git.run(
        "rev-list", "--ancestry-path", "--topo-order", "--reverse", f"{verified}..{tick.base_sha}"
    ).out.split()
    return path[0] if path else verified


def _landed(
    tick: Tick,
    worker: Worker,
    commit: str,
    *,
    followups: list[Task] | None = None,
    queues: Queues | None = None,
) -> None:
    """Record a landing. `queues` are the files just pushed, when ralph pushed them in this tick."""
    assert tick.source is not None
    untracked = tick.source.mode is Mode.UNTRACKED
    if untracked:
        _archive_locally(tick, worker.task_id, followups or [])
    path = Path(worker.workspace_path)
    markers.clear_ci_failure(path)
    markers.clear_blocked_push(path)
    worker.landed_sha = commit
    worker.next_attempt_at = None
    worker.last_error = None
    tick.ledger.transition(worker, Lifecycle.COMPLETED, f"landed {commit[:10]} on {tick.base}", sha=commit)
    tick.act(worker.task_id, "landed", f"landed {commit[:10]} on {tick.base}")
    tick.save()
    tick.remove_workspace(worker, landed=True)
    # The task is done now, so what depended on it may start in this tick. The files just pushed are
    # the base's now: no need to read back (and validate again) a queue of thousands of tasks; one
    # landed by an earlier tick is in the queue the fetch read.
    if untracked:
        tick.read_base()
    elif queues is not None:
        tick.queues = queues


def _archive_locally(tick: Tick, task_id: str, followups: list[Task]) -> None:
    """Untracked mode: this host's files are the queue; change only this task's lines (we hold the lock)."""
    queue_path, done_path = tick.paths.queue_file(), tick.paths.done_file()
    edit = archive_edit(
        read_queue_bytes(queue_path),
        read_queue_bytes(done_path),
        task_id,
        tick.now,
        followups,
        queue_name=tick.paths.relative(queue_path),
        done_name=tick.paths.relative(done_path),
        missing_ok=True,  # pushed already: a task someone removed meanwhile is not a reason to fail
    )
    queue, done = edit.changed()
    # The archive first: a crash between the two writes leaves the task in both files (which
    # validation names), never in neither.
    for path, data in ((done_path, done), (queue_path, queue)):
        if data is not None:
            write_atomic(path, data)


# --- follow-up tasks ------------------------------------------------------------------------------------


class FollowupError(RalphError):
    """An agent's follow-up proposal is invalid; the work does not land until it is fixed."""


def _has_link_on_the_way(root: Path, rel: str) -> bool:
    """Whether a directory on the way to `rel` under `root` is a symlink (read_beneath stops there)."""
    here = root
    for part in rel.split("/")[:-1]:
        here = here / part
        if here.is_symlink():
            return True
        if not here.is_dir():
            return False
    return False


class ProposedTask(FileModel):
    key: Text = Field(min_length=1)
    title: Text = Field(min_length=1)
    description: Text | None = None
    priority: Priority = Priority.MEDIUM
    tags: list[Text] = []
    scope: list[Text] = []
    evidence: list[Text] = []
    plan: list[Text] = []
    depends_on_keys: list[Text] = []
    independence_rationale: Text | None = None


class Proposal(FileModel):
    version: int = Field(ge=1, le=1)
    source_task_id: str
    tasks: list[ProposedTask]


FOLLOWUPS_DIR = ".ralph/cache/followups"
MAX_PROPOSAL_BYTES = 256 * 1024
MAX_PROPOSED_TASKS = 20


def followups_path(path: Path, task_id: str) -> Path:
    return path / FOLLOWUPS_DIR / f"{task_id}.json"


def read_followups(path: Path, task: Task, tick: Tick) -> list[Task]:
    """Tasks the agent proposed in `.ralph/cache/followups/<TASK>.json`, as queue entries with new ids.

    The file is the agent's: it is read only as a regular file under the workspace, never through a
    symlink (which could name /dev/zero or a secret), never blocking on a FIFO, and bounded in size
    and in the number of tasks.
    """
    file = followups_path(path, task.id)
    where = f"follow-up proposal {file}"
    rel = f"{FOLLOWUPS_DIR}/{task.id}.json"
    try:
        data = read_beneath(path, rel, limit=MAX_PROPOSAL_BYTES)
    except FileTooLarge as e:
        raise FollowupError(f"{where}: {e}; propose fewer, shorter tasks") from None
    if data is None:
        if os.path.lexists(file) or _has_link_on_the_way(path, rel):
            raise FollowupError(f"{where}: not a regular file (a symlink, a FIFO or a directory); remove it")
        return []
    try:
        proposal = Proposal.model_validate_json(data)
    except ValidationError as e:
        raise FollowupError(f"{where}: {describe_validation_error(e)}") from None
    if len(proposal.tasks) > MAX_PROPOSED_TASKS:
        raise FollowupError(
            f"{where}: {len(proposal.tasks)} tasks proposed; at most {MAX_PROPOSED_TASKS} at once"
        )
    if proposal.source_task_id != task.id:
        raise FollowupError(f"{where}: source_task_id is {proposal.source_task_id!r}, not {task.id}")
    keys = [t.key for t in proposal.tasks]
    if len(set(keys)) != len(keys):
        raise FollowupError(f"{where}: keys must be unique")
    assert tick.queues is not None
    queue = tick.queues.queue.model_copy(deep=True)
    ids: dict[str, str] = {}
    now = tick.now.replace(microsecond=0)
    out: list[Task] = []
    for proposed in proposal.tasks:
        unknown = [k for k in proposed.depends_on_keys if k not in keys]
        if unknown:
            raise FollowupError(f"{where}: task {proposed.key!r} depends on unknown keys {unknown}")
        later = [k for k in proposed.depends_on_keys if k not in ids]
        if later:
            raise FollowupError(f"{where}: task {proposed.key!r} depends on {later}, listed after it")
        new_id = next_id(
            queue, tick.queues.done, prefix=tick.config.queue.id_prefix, width=tick.config.queue.id_width
        )
        fields: dict[str, Any] = {
            "description": proposed.description,
            "tags": proposed.tags,
            "scope": proposed.scope,
            "evidence": proposed.evidence,
            "plan": proposed.plan,
            "depends_on": [ids[k] for k in proposed.depends_on_keys],
        }
        created = Task(
            id=new_id,
            status=TaskStatus.TODO,
            title=proposed.title,
            priority=proposed.priority,
            created_at=now,
            updated_at=now,
            **{k: v for k, v in fields.items() if v},
        )
        ids[proposed.key] = new_id
        queue.tasks.append(created)
        out.append(created)
    try:
        Queues(queue, tick.queues.done).validate(tick.config.queue)
    except QueueError as e:
        raise FollowupError(f"{where}: {e}") from None
    logger.info("%s: %d follow-up task(s) proposed: %s", task.id, len(out), json.dumps([t.id for t in out]))
    return out
