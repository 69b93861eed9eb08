"""Landing: the train's passed prefix becomes a chain of commits on the base, pushed in one push with a
lease (DESIGN §6).

Every commit ralph puts on the base passed the gate: a task lands as one commit whose tree is its
position's gated tree plus its own queue/done change (the task moved to the done archive, its
follow-ups queued), built with plumbing from the base as it is now, so only that task's lines of the
queue files change and parallel landings never conflict. With `landing.squash = false` the agent's own
commits are replayed instead, and only the last carries the gated tree (the others were not gated).
In untracked mode (the queue is this host's) the positions' commits are pushed as they are and the
files are changed locally afterwards.

The push is exactly the chain's tip with `--force-with-lease` on the base it was built on: a lost race
backs off (`parallel.push_backoff_ms`, ±25% jitter) and tries again; a policy refusal blocks the
tasks at once, a temporary one is retried like a race (ralph.git.classify_push).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ralph.bookkeeping import Mode, Source, commit_files
from ralph.clock import scheduled
from ralph.config import Config
from ralph.files import write_atomic
from ralph.followups import proposed_tasks
from ralph.git import Git, NewCommit, write_commits
from ralph.paths import Paths
from ralph.prompts import commit_message
from ralph.queue import Task, TaskStatus, read_queue_bytes
from ralph.queuedoc import QueueEdit, archive_edit
from ralph.queues import Queues
from ralph.replay import replay

logger = logging.getLogger(__name__)

PUSH_TIMEOUT_S = 120.0
# How often one landing may start over at once because the base moved while it was being prepared.
MAX_QUICK_REDOS = 3


@dataclass(frozen=True)
class Landing:
    """One task of the prefix: its position's commit, its change, and where its follow-ups are kept."""

    task: Task
    position: str  # the gated commit
    onto: str  # what the position is stacked on
    base: str  # the worker's change: base..head
    head: str
    run_dir: Path


@dataclass
class Chain:
    commits: dict[str, str] = field(default_factory=dict)  # task id -> its commit on the chain, in order
    followups: dict[str, list[Task]] = field(default_factory=dict)
    queues: Queues | None = None  # the queue files as the tip has them (tracked mode)
    files: tuple[bytes, bytes] | None = None  # and their bytes: queue, done

    @property
    def tip(self) -> str:
        return next(reversed(self.commits.values()))


def build_chain(
    git: Git,
    *,
    base_sha: str,
    landings: list[Landing],
    source: Source,
    queues: Queues,
    config: Config,
    now: datetime,
    scratch: Path,
) -> Chain:
    """The commits that land `landings` on `base_sha`, oldest first. FollowupError (a proposal that no
    longer fits the queue) names its task through `.task_id` on the error's args."""
    chain = Chain()
    if source.mode is Mode.UNTRACKED:
        for landing in landings:
            chain.commits[landing.task.id] = landing.position
            chain.followups[landing.task.id] = proposed_tasks(
                landing.run_dir, queues, config.queue, now
            )  # queued locally once pushed
        return chain
    edit = QueueEdit.parse(
        *source.files_at(git, base_sha),  # the tick's own read of them, when the chain builds on its base
        queue_name=queues.queue_name,
        done_name=queues.done_name,
        now=now,
    )
    parent = base_sha
    squashed: list[NewCommit] = []
    trees, author, committer = {}, "", ""
    if config.landing.squash:
        positions = [x.position for x in landings]
        trees = dict(zip(positions, git.trees(positions), strict=True))
        author, committer = git.ident("AUTHOR"), git.ident("COMMITTER")
    for landing in landings:
        task_id = landing.task.id
        followups = proposed_tasks(landing.run_dir, edit.queues, config.queue, now)
        if edit.queue.find(task_id) is not None:
            edit.finish(task_id, TaskStatus.DONE)
        at = edit.place(None)  # where the Rust ralph puts new tasks
        for offset, task in enumerate(followups):
            edit.add(task, at=at + offset)
        queue_bytes, done_bytes = edit.render()
        files = {source.queue_path: queue_bytes, source.done_path: done_bytes}
        added = f" (+{len(followups)} follow-up{'s' if len(followups) != 1 else ''})" if followups else ""
        message = f"{commit_message(landing.task)}\n\nralph: archive {task_id}{added}"
        chain.followups[task_id] = followups
        if config.landing.squash:
            # All of the chain in one fast-import below: the gated tree, the task's queue and done files.
            squashed.append(
                NewCommit(
                    files,
                    message + "\n",  # as commit-tree -m writes it
                    now,
                    parent=len(squashed) - 1 if squashed else base_sha,
                    tree=trees[landing.position],
                    author=author,
                    committer=committer,
                )
            )
            continue
        parent, tree_from, message = _replay_commits(git, landing, parent, message, scratch)
        parent = commit_files(
            git, parent=parent, tree_from=tree_from, files=files, message=message, scratch=scratch
        )
        chain.commits[task_id] = parent
    if squashed:  # landing.squash: every commit was left for this one fast-import
        chain.commits.update(zip((x.task.id for x in landings), write_commits(git, squashed), strict=True))
    chain.queues = edit.queues
    chain.files = queue_bytes, done_bytes
    return chain


def _replay_commits(
    git: Git, landing: Landing, parent: str, message: str, scratch: Path
) -> tuple[str, str, str]:
    """landing.squash = false: the agent's commits replayed one by one on `parent`; returns the parent
    and the tree source of the task's last commit (which carries the gated tree and the bookkeeping),
    and its message. Falls back to one squashed commit when a replay conflicts or ends elsewhere than
    the gated tree."""
    commits = git.run("rev-list", "--reverse", "--no-merges", f"{landing.base}..{landing.head}").out.split()
    if len(commits) < 2:
        return parent, landing.position, message
    here = parent
    for commit in commits[:-1]:
        replayed = replay(
            git,
            old_base=f"{commit}^",
            head=commit,
            onto=here,
            message=_full_message(git, commit),
            scratch=scratch,
        )
        if not replayed.clean:
            logger.info("%s: its commits do not replay one by one; landing them squashed", landing.task.id)
            return parent, landing.position, message
        here = replayed.commit
    last = _full_message(git, commits[-1]) + f"\n\nralph: archive {landing.task.id}"
    return here, landing.position, last


def _full_message(git: Git, commit: str) -> str:
    return git.run("log", "-1", "--format=%B", commit).out


def archive_locally(paths: Paths, task_id: str, followups: list[Task], now: datetime) -> None:
    """Untracked mode: this host's files are the queue; change only this task's lines (under the lock)."""
    queue_path, done_path = paths.queue_file(), paths.done_file()
    edit = archive_edit(
        read_queue_bytes(queue_path),
        read_queue_bytes(done_path),
        task_id,
        now,
        followups,
        queue_name=paths.relative(queue_path),
        done_name=paths.relative(done_path),
        missing_ok=True,  # pushed already: a task someone removed meanwhile is not a reason to fail
    )
    queue, done = edit.changed()
    # The archive first: a crash between the two writes leaves the task in both files (which
    # validation names), never in neither.
    for path, data in ((done_path, done), (queue_path, queue)):
        if data is not None:
            write_atomic(path, data)


def backoff_s(schedule_ms: list[int], attempt: int, rng: Any) -> float:
    """The wait after push attempt `attempt` (1-based): the schedule's entry, the last repeating, ±25%."""
    base = scheduled(schedule_ms, attempt) / 1000
    return float(base * rng.uniform(0.75, 1.25))
