"""Where the queue lives, and how ralph changes it without touching anyone's work tree.

Tracked mode (the default): `queue.json` and `done.json` are committed, and the truth is what
`origin/<base>` holds after a fetch. ralph changes them only with plumbing commits on top of the
remote base (a temporary index, no work tree), pushed with a lease.

Untracked mode: both files are gitignored and live on this host only; ralph reads and writes the
working-tree files under the tick lock. A mix of the two is refused: it is how sibling tasks got
lost in the Rust ralph (its RQ-0042/RQ-0056).

Either way a change goes through ralph.queuedoc, so only the lines of the tasks it touches change.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TypeVar

from ralph.checkout import Checkout
from ralph.crash import crashpoint
from ralph.errors import GitError, LockBusy, PreflightError, QueueError, resource_error
from ralph.files import scratch_dir, write_atomic
from ralph.git import Git, PushStatus, cat_blobs, object_names, push_with_lease
from ralph.lock import TickLock
from ralph.ownership import refuse_if_rust_runs
from ralph.paths import Paths
from ralph.queue import parse_queue_file, read_queue_bytes
from ralph.queuedoc import QueueEdit
from ralph.queues import Queues, load_local_queues

logger = logging.getLogger(__name__)


class NotPublished(PreflightError):
    """The queue files exist here but were never committed and pushed, and are not ignored."""


class Untracked(PreflightError):
    """The queue is kept on this host (both files ignored): it is changed in the working tree."""


class Mode(Enum):
    TRACKED = "tracked"
    UNTRACKED = "untracked"


@dataclass(frozen=True)
class Source:
    mode: Mode
    queue_path: str  # relative to the repository root
    done_path: str
    base_ref: str  # refs/remotes/<remote>/<base>
    label: str  # how messages name the base: origin/main
    ids: Mapping[str, str] = field(default_factory=dict, compare=False)  # tracked files: their blob ids
    git: Git | None = field(default=None, compare=False, repr=False)
    at: str | None = field(default=None, compare=False)  # the commit `ids` were found at, if asked by sha
    _read: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    def contents(self) -> tuple[bytes, bytes]:
        """The queue and done files' bytes (tracked mode), read by the blob ids found when the source was
        detected (the base may have moved since) in one git call, once: a tick whose queue index holds
        needs only the ids."""
        wanted = (self.ids[self.queue_path], self.ids[self.done_path])
        if not self._read:
            assert self.git is not None
            self._read.update(cat_blobs(self.git, wanted))
        return self._read[wanted[0]], self._read[wanted[1]]

    def files_at(self, git: Git, commit: str) -> tuple[bytes | None, bytes | None]:
        """The queue and done files as `commit` has them: those this source read (or reads now) when
        it is the commit the source was found at, else read there."""
        if commit == self.at:
            return self.contents()
        specs = (f"{commit}:{self.queue_path}", f"{commit}:{self.done_path}")
        found = cat_blobs(git, specs)
        return found.get(specs[0]), found.get(specs[1])


def detect_source(checkout: Checkout, git: Git, base: str, *, at: str | None = None) -> Source:
    """Tracked when both files are on the remote base (as last fetched, or at commit `at`: a tick reads
    them at the sha its fetch returned, which another command's fetch may have moved on from since);
    untracked when both are ignored here."""
    base_ref = checkout.tracking_ref(base)
    commit = at or base_ref
    label = f"{checkout.remote}/{base}"
    queue_names, done_names = checkout.paths.queue_names(), checkout.paths.done_names()
    names = (*queue_names, *done_names)
    found = object_names(git, [f"{commit}:{name}" for name in names], kind="blob")
    present = {name: found[f"{commit}:{name}"] for name in names if f"{commit}:{name}" in found}
    queue_tracked = [n for n in queue_names if n in present]
    done_tracked = [n for n in done_names if n in present]
    if len(queue_tracked) > 1 or len(done_tracked) > 1:
        raise QueueError(f"{label} has both .json and .jsonc queue files; keep one of each")
    if queue_tracked and done_tracked:
        return Source(Mode.TRACKED, queue_tracked[0], done_tracked[0], base_ref, label, present, git, at)
    queue_rel = checkout.paths.relative(checkout.paths.queue_file())
    done_rel = checkout.paths.relative(checkout.paths.done_file())
    if not queue_tracked and not done_tracked:
        if git.is_ignored(queue_rel) and git.is_ignored(done_rel):
            return Source(Mode.UNTRACKED, queue_rel, done_rel, base_ref, label)
        raise NotPublished(
            f"{queue_rel} and {done_rel} are not on {label}: commit and push them (ralph init created them), "
            "or add both to .gitignore to keep the queue on this host only"
        )
    tracked, missing = (queue_rel, done_rel) if queue_tracked else (done_rel, queue_rel)
    raise PreflightError(
        f"{tracked} is on {label} but {missing} is not: ralph needs both tracked (commit and push {missing}) "
        "or both ignored (add both to .gitignore)"
    )


def read_queues(checkout: Checkout, source: Source) -> Queues:
    if source.mode is Mode.UNTRACKED:
        return load_local_queues(checkout.paths)
    queue, done = source.contents()
    # parse_queue_file applies the size limit to the bytes, as load_queue_file does to a file.
    return Queues(
        queue=parse_queue_file(queue, f"{source.label}:{source.queue_path}"),
        done=parse_queue_file(done, f"{source.label}:{source.done_path}"),
        queue_name=f"{source.label}:{source.queue_path}",
        done_name=f"{source.label}:{source.done_path}",
    )


def read_current_queues(checkout: Checkout, git: Git, base: str) -> Queues:
    """The queue a tick would see, without a fetch: origin/<base> as last fetched, or the working tree.

    For commands that only look (list, explain, status). A queue not pushed yet, or a clone that
    never fetched the base, is read from the working tree.
    """
    if git.run("rev-parse", "--verify", "--quiet", checkout.tracking_ref(base), ok=(0, 1)).returncode:
        return load_local_queues(checkout.paths)
    try:
        source = detect_source(checkout, git, base)
    except NotPublished:
        return load_local_queues(checkout.paths)
    return read_queues(checkout, source)


def current_queues(checkout: Checkout) -> Queues:
    return read_current_queues(checkout, checkout.git(), checkout.base_branch())


FETCH_TIMEOUT_S = 120.0


class RemoteUnreachable(PreflightError):
    """The remote did not answer the fetch (network, DNS, the server): work that needs no remote goes on."""


def fetch_base(git: Git, *, remote: str, base: str, timeout: float = FETCH_TIMEOUT_S) -> str:
    """Fetch `<remote> <base>` into its remote-tracking ref and return the commit it points at.

    Our copy of the base must follow the remote even when someone rewound it (the rewind is how a
    landing learns not to bring removed commits back), but no refspec of ralph's is forced: a fetch
    that would move the tracking ref backwards is refused, logged as the rewind it is, and redone
    after the old ref is dropped.
    """
    tracking = f"refs/remotes/{remote}/{base}"
    # Not --quiet: it would silence the "(non-fast-forward)" that tells a rewind from other failures.
    fetch = ("fetch", "--no-tags", "--no-write-fetch-head", remote, f"refs/heads/{base}:{tracking}")
    try:
        try:
            git.run(*fetch, timeout=timeout)
        except GitError as e:
            if "non-fast-forward" not in e.stderr:
                raise
            old = rev(git, tracking)
            git.run("update-ref", "-d", tracking, old)
            git.run(*fetch, timeout=timeout)
            logger.warning("%s/%s was rewound: it no longer contains %s", remote, base, old[:10])
    except GitError as e:
        if "couldn't find remote ref" in e.stderr:
            raise PreflightError(
                f"{remote} has no branch {base!r}: push it, or set git.base_branch in .ralph/config.toml"
            ) from None
        if resource_error(e) is not None:
            raise
        raise RemoteUnreachable(f"cannot fetch {remote} {base}: {e}") from None
    return rev(git, tracking)


T = TypeVar("T")

PUBLISH_ATTEMPTS = 5


def publish(
    checkout: Checkout,
    git: Git,
    base: str,
    *,
    change: Callable[[QueueEdit], T],
    message: Callable[[T], str],
    now: datetime,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Change the queue on the remote base: fetch, apply `change`, commit with plumbing, push with a lease.

    When the base moves under us the whole thing is redone from the new base, so a concurrent push
    (another person, a landing) is never overwritten. Returns what `change` returned; a change that
    changes no byte pushes nothing. Raises Untracked or NotPublished, before changing anything, when
    the queue is this host's working-tree files.
    """
    remote = checkout.remote
    last = ""
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        base_sha = fetch_base(git, remote=remote, base=base)
        source = detect_source(checkout, git, base)
        if source.mode is not Mode.TRACKED:
            raise Untracked(
                f"the queue is not tracked on {source.label}; edit the working-tree files instead"
            )
        edit = QueueEdit.parse(
            *source.contents(),
            queue_name=f"{source.label}:{source.queue_path}",
            done_name=f"{source.label}:{source.done_path}",
            now=now,
        )
        value = change(edit)
        queue, done = edit.changed()
        files = {p: data for p, data in ((source.queue_path, queue), (source.done_path, done)) if data}
        if not files:
            return value
        commit = commit_files(
            git, parent=base_sha, files=files, message=message(value), scratch=checkout.paths.scratch
        )
        pushed = push_with_lease(
            git, remote=remote, commit=commit, branch=base, expected=base_sha, timeout=FETCH_TIMEOUT_S
        )
        if pushed.status is PushStatus.OK:
            return value
        if pushed.status is PushStatus.PERMANENT:
            raise QueueError(f"{remote} refused the push to {base}: {pushed.message}")
        last = pushed.message
        logger.info("%s moved while the queue was being changed (%s); trying again", source.label, last)
        sleep(min(0.2 * 2**attempt, 3.0))
    raise QueueError(
        f"gave up after {PUBLISH_ATTEMPTS} attempts to push the queue change to {remote}/{base}: {last}"
    )


# A tick holds the lock for well under a second; waiting a little beats telling a person to retry.
LOCK_WAIT_S = 10


def edit_locally(checkout: Checkout, *, change: Callable[[QueueEdit], T], now: datetime) -> T:
    """Change the working-tree queue files under the tick lock; the done archive is written first, so
    a crash between the two writes leaves a task in both files (which validation names), never in
    neither. Waits for a running Rust ralph, whose coordinator would overwrite the edit."""
    paths = checkout.paths
    lock = TickLock(paths.lock, now=now, wait_s=LOCK_WAIT_S)
    try:
        lock.acquire()
    except LockBusy:
        # The lock's own message is written for a tick ("the next tick will run"); a person changing
        # the queue needs to hear that nothing changed and what to do.
        holder = lock.owner()
        raise LockBusy(
            f"another ralph process holds {lock.path}"
            + (f" ({holder})" if holder else "")
            + f" and did not let go within {LOCK_WAIT_S}s; nothing was changed, try again in a minute"
        ) from None
    try:
        refuse_if_rust_runs(paths)
        return edit_files(paths, change=change, now=now)
    finally:
        lock.release()


def edit_files(paths: Paths, *, change: Callable[[QueueEdit], T], now: datetime) -> T:
    """Change the working-tree queue files; the caller holds the tick lock (edit_locally takes it)."""
    queue_path, done_path = paths.queue_file(), paths.done_file()
    edit = QueueEdit.parse(
        read_queue_bytes(queue_path),
        read_queue_bytes(done_path),
        queue_name=paths.relative(queue_path),
        done_name=paths.relative(done_path),
        now=now,
    )
    value = change(edit)
    queue, done = edit.changed()
    for path, data in ((done_path, done), (queue_path, queue)):
        if data is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, data)
    return value


def change_queue(
    checkout: Checkout,
    *,
    change: Callable[[QueueEdit], T],
    message: Callable[[T], str],
    now: datetime,
    push: bool,
) -> tuple[T, str]:
    """One queue change, where the queue lives: one commit pushed with a lease when it is tracked on
    the remote (and `push`), else the working-tree files. Returns the change's value and where it went.

    Without `push`, the working tree is edited even when the queue is tracked: a person commits it.
    A change that makes the queue invalid in a new way is refused with nothing written (a queue that
    was invalid already can still be mended, one change at a time).
    """
    config = checkout.config.queue

    def checked(edit: QueueEdit) -> T:
        before = set(edit.queues.problems(config))
        value = change(edit)
        new = [p for p in edit.queues.problems(config) if p not in before]
        if new:
            more = f" (and {len(new) - 1} more)" if len(new) > 1 else ""
            raise QueueError(f"{new[0]}{more}; nothing was changed")
        return value

    git = checkout.git()
    base = checkout.base_branch()
    if push and git.run("remote", "get-url", checkout.remote, ok=(0, 2)).returncode == 0:
        try:
            value = publish(checkout, git, base, change=checked, message=message, now=now)
            return value, f"pushed to {checkout.remote}/{base}"
        except (Untracked, NotPublished):
            pass  # the queue is this host's, or not pushed yet: the working-tree file it is
        except PreflightError as e:
            raise PreflightError(f"{e}; to change the working-tree files instead, pass --no-push") from None
    value = edit_locally(checkout, change=checked, now=now)
    return value, f"written to {checkout.paths.relative(checkout.paths.queue_file())}"


def commit_files(
    git: Git,
    *,
    parent: str,
    files: Mapping[str, bytes],
    message: str,
    scratch: Path,
    tree_from: str | None = None,
) -> str:
    """A commit on `parent` whose tree is `tree_from`'s (default: the parent's) with `files` changed,
    built without a work tree or the real index (a temporary one in a scratch directory under
    `scratch`, which repair sweeps after a kill)."""
    with scratch_dir(scratch, "index-") as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        git.run("read-tree", tree_from or parent, env=env)
        entries = []
        for path, data in files.items():
            blob = git.run("hash-object", "-w", "--stdin", input=data).out
            entries.append(f"100644 {blob}\t{path}\n")
        git.run("update-index", "--index-info", input="".join(entries), env=env)
        crashpoint("mid-bookkeeping")
        tree = git.run("write-tree", env=env).out
    return git.run("commit-tree", "--no-gpg-sign", tree, "-p", parent, "-m", message).out


def rev(git: Git, ref: str) -> str:
    try:
        return git.run("rev-parse", "--verify", "--quiet", ref + "^{commit}").out
    except GitError:
        raise PreflightError(f"{ref} does not exist") from None
