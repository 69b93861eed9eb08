"""The idle stamp: what a tick that found nothing to do saw, so the next one can exit in a few ms.

Under cron or a one-minute timer most ticks find nothing to do. A tick that ends with no job in flight,
nothing landing and nothing it could start writes this stamp: the base's sha on the remote, the
fingerprints of the files a person or a command changes to give ralph work (the config, the state
file, the pause marker, a working-tree queue), and the earliest time something falls due by itself (a
retry's backoff, a scheduled start, a record's expiry). The next tick, with only the standard library
imported and the tick lock held, asks the remote for the base's sha (`git ls-remote`, one command)
and exits when nothing of that changed and nothing is due. Any doubt — no stamp, a file changed, the
remote moved or cannot be reached — and the full tick runs, as it always would.

Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ralph import __version__
from ralph.git import ls_remote_listing

# What other hosts change without moving the base (ralph.claims): every task's shared facts (a retry, a
# cancellation, an attempt) by sha, and which tasks are claimed (not their heartbeats: those change
# every few minutes, and change nothing a waiting host could do). Named here, not imported: this
# module stays on the standard library.
SHARED_PREFIXES = ("refs/ralph/tasks/", "refs/ralph/claims/")

_NAME = "idle.json"


def stamp_path(parallel_dir: Path) -> Path:
    return parallel_dir / _NAME


Fingerprint = list[int] | None  # [inode, mtime_ns, size]; None: no such file


def fingerprint(path: Path) -> Fingerprint:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_mtime_ns, st.st_size]


@dataclass
class Stamp:
    remote: str
    base: str
    base_sha: str
    wake_at: str | None  # RFC 3339 UTC; None: nothing falls due by itself
    files: dict[str, Fingerprint] = field(default_factory=dict)
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
    stamp = Stamp(
        remote=remote,
        base=base,
        base_sha=base_sha,
        wake_at=None if wake_at is None else wake_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        files={str(p): fingerprint(p) for p in watched},
        shared=shared,
    )
    parallel_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parallel_dir, prefix=f".{_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(stamp), f)
        os.replace(tmp, stamp_path(parallel_dir))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def clear(parallel_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(stamp_path(parallel_dir))


def read(parallel_dir: Path) -> Stamp | None:
    try:
        raw = json.loads(stamp_path(parallel_dir).read_text())
        return Stamp(**raw)
    except (OSError, ValueError, TypeError):
        return None


def still_idle(root: Path, parallel_dir: Path, now: datetime) -> bool:
    """Whether nothing a tick could act on changed since the stamp was written (one `git ls-remote`)."""
    stamp = read(parallel_dir)
    if stamp is None or stamp.version != __version__:
        return False
    if stamp.wake_at is not None:
        try:
            due = datetime.fromisoformat(stamp.wake_at.replace("Z", "+00:00"))
        except ValueError:
            return False
        if now >= due:
            return False
    if any(fingerprint(Path(p)) != fp for p, fp in stamp.files.items()):
        return False
    branch = f"refs/heads/{stamp.base}"
    patterns = [branch, *(f"{p}*" for p in SHARED_PREFIXES)] if stamp.shared is not None else [branch]
    listing = ls_remote_listing(root, stamp.remote, patterns)
    if listing is None or listing.get(branch) != stamp.base_sha:
        return False
    return stamp.shared is None or shared_digest(listing) == stamp.shared


def shared_digest(refs: dict[str, str]) -> str:
    """A digest of the shared refs in `refs` (ref -> sha): the facts with their shas, the claims by name."""
    lines = sorted(
        f"{ref} {sha}" if ref.startswith(SHARED_PREFIXES[0]) else ref
        for ref, sha in refs.items()
        if ref.startswith(SHARED_PREFIXES)
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
