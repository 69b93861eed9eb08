"""The idle stamp: what a tick that found nothing to do saw, so the next one can exit in a few ms.

Under cron or a one-minute timer most ticks find nothing to do. A tick that ends with no job in flight,
nothing landing and nothing it could start writes this stamp: the base's sha on the remote, the
fingerprints of the files a person or a command changes to give ralph work (the config, the state
file, the pause marker, a working-tree queue), and the earliest time something falls due by itself (a
retry's backoff, a scheduled start, a record's expiry). The next tick, with only the standard library
imported and the tick lock held, asks the remote for the base's sha (`git ls-remote`, one command)
and exits when nothing of that changed and nothing is due. Any doubt — no stamp, a file changed, the
remote moved or cannot be reached — and the full tick runs, as it always would.

Standard library only, and its smallest pieces: the idle path imports this module and ralph.git before
anything else (no dataclasses, pathlib or tempfile here; those cost more than the check itself).
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import UTC, datetime
from typing import NamedTuple

from ralph import __version__
from ralph.git import ls_remote_listing

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

# What other hosts change without moving the base (ralph.claims): every task's shared facts (a retry, a
# cancellation, an attempt) by sha, and which tasks are claimed (not their heartbeats: those change
# every few minutes, and change nothing a waiting host could do). Named here, not imported: this
# module stays on the standard library.
SHARED_PREFIXES = ("refs/ralph/tasks/", "refs/ralph/claims/")

_NAME = "idle.json"


def stamp_path(parallel_dir: str | Path) -> str:
    return os.path.join(parallel_dir, _NAME)


Fingerprint = list[int] | None  # [inode, mtime_ns, size]; None: no such file


def fingerprint(path: str | Path) -> Fingerprint:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_mtime_ns, st.st_size]


class Stamp(NamedTuple):
    """What an idle tick saw, as `idle.json` holds it (a NamedTuple, not a dataclass: the idle path
    does not import dataclasses)."""

    remote: str
    base: str
    base_sha: str
    wake_at: str | None  # RFC 3339 UTC; None: nothing falls due by itself
    files: dict[str, Fingerprint] = {}  # never changed: read, or built whole
    shared: str | None = None  # shared_digest of what the tick read of refs/ralph/; None: not read
    version: str = __version__


def write(
    parallel_dir: Path,
    *,
    remote: str,
    base: str,
    base_sha: str,
    wake_at: datetime | None,
    watched: list[Path],
    shared: str | None = None,
) -> None:
    """Record an idle tick's view (after its last write, so its own files are as it left them)."""
    # Imported here: only a full tick writes the stamp, and the idle path must not pay for ralph.files.
    from ralph.files import write_atomic

    stamp = Stamp(
        remote=remote,
        base=base,
        base_sha=base_sha,
        wake_at=None if wake_at is None else wake_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        files={str(p): fingerprint(p) for p in watched},
        shared=shared,
    )
    parallel_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(parallel_dir / _NAME, json.dumps(stamp._asdict()).encode())


def clear(parallel_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(stamp_path(parallel_dir))


def read(parallel_dir: str | Path) -> Stamp | None:
    try:
        with open(stamp_path(parallel_dir), "rb") as f:
            return Stamp(**json.loads(f.read()))
    except (OSError, ValueError, TypeError):
        return None


def still_idle(root: str | Path, parallel_dir: str | Path, now: datetime) -> bool:
    """Whether nothing a tick could act on changed since the stamp was written (one `git ls-remote`)."""
    stamp = read(parallel_dir)
    if stamp is None or stamp.version != __version__:
        return False
    if stamp.wake_at is not None:
        try:
            due = datetime.fromisoformat(stamp.wake_at.replace("Z", "+00:00"))
        except (TypeError, ValueError, AttributeError):
            return False
        if now >= due:
            return False
    if not isinstance(stamp.files, dict) or any(fingerprint(p) != fp for p, fp in stamp.files.items()):
        return False
    branch = f"refs/heads/{stamp.base}"
    patterns = [branch, *(f"{p}*" for p in SHARED_PREFIXES)] if stamp.shared is not None else [branch]
    listing = ls_remote_listing(root, stamp.remote, patterns)
    if listing is None or listing.get(branch) != stamp.base_sha:
        return False
    return stamp.shared is None or shared_digest(listing) == stamp.shared


def shared_digest(refs: dict[str, str]) -> str:
    """A digest of the shared refs in `refs` (ref -> sha): the facts with their shas, the claims by name."""
    import hashlib  # ~4 ms: only where several hosts share the remote

    lines = sorted(
        f"{ref} {sha}" if ref.startswith(SHARED_PREFIXES[0]) else ref
        for ref, sha in refs.items()
        if ref.startswith(SHARED_PREFIXES)
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
