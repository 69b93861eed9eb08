"""Repairing what a killed tick left of ralph's git state, before anything can fail on it.

A tick can be SIGKILLed at any instruction (an OOM kill, a reboot, `systemctl stop`). Every piece of
git state ralph makes is one this step recognises and removes, first thing after the tick lock, with
no network: scratch directories (`.ralph/cache/tmp/<pid>-...`: the git directory that commits an
agent's leftovers, a temporary index, a scratch clone), the transient refs under
`refs/ralph/incoming/`, stale `*.lock` files git leaves in the control repository, a ralph checkout
of a gate left behind, and the worktrees older ralph versions made for rebases (a kill in the middle
of `git worktree add` left one locked, with a HEAD of zeros, that made every later fetch fail).

Only the standard library and the filesystem: it must work when git itself would refuse to.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ralph.files import force_rmtree, sweep_scratch
from ralph.paths import Paths

logger = logging.getLogger(__name__)

# A lock file older than this was left by a git that died: no git command ralph or a person runs in
# the control checkout holds one that long. Locks under refs/ralph/ are ralph's alone (ticks and
# ralph's own commands take the tick lock first), so those go at any age.
STALE_LOCK_S = 120.0
_GIT_LOCKS = ("index.lock", "HEAD.lock", "config.lock", "packed-refs.lock", "shallow.lock", "ORIG_HEAD.lock")


def common_dir(root: Path) -> Path | None:
    """The control repository's git directory (its common one, for a linked worktree)."""
    dot_git = root / ".git"
    if dot_git.is_dir():
        return dot_git
    try:
        line = dot_git.read_text().strip()
    except OSError:
        return None
    if not line.startswith("gitdir:"):
        return None
    git_dir = Path(line.split(":", 1)[1].strip())
    git_dir = git_dir if git_dir.is_absolute() else (root / git_dir).resolve()
    try:
        common = (git_dir / "commondir").read_text().strip()
    except OSError:
        return git_dir
    return (git_dir / common).resolve() if not os.path.isabs(common) else Path(common)


def repair(paths: Paths, *, gates: Path | None = None, live_gates: frozenset[str] = frozenset()) -> list[str]:
    """Remove what killed ticks left; returns one line per thing removed (logged as warnings)."""
    done: list[str] = []
    git_dir = common_dir(paths.root)
    if git_dir is not None:
        done += _worktrees(git_dir, paths)
        done += _locks(git_dir, time.time())
        done += _incoming_refs(git_dir)
    done += [f"removed the scratch directory {p} of a killed ralph" for p in sweep_scratch(paths.scratch)]
    if gates is not None and gates.is_dir():
        for entry in gates.iterdir():
            if entry.name not in live_gates:
                _remove(entry)
                done.append(f"removed the gate checkout {entry} no job uses")
    for line in done:
        logger.warning("repair: %s", line)
    return done


def _worktrees(git_dir: Path, paths: Paths) -> list[str]:
    """Worktrees of ralph's own (under .ralph/cache): entry and directory both go, locked or not."""
    out: list[str] = []
    listed = git_dir / "worktrees"
    if not listed.is_dir():
        return out
    cache = paths.cache.resolve()
    for entry in listed.iterdir():
        try:
            where = Path((entry / "gitdir").read_text().strip()).parent
        except OSError:
            continue
        if not where.resolve().is_relative_to(cache):
            continue  # a person's own worktree
        _remove(entry)
        if where.exists():
            _remove(where)
        out.append(f"removed the worktree {where} a killed ralph left (git knew it as {entry.name})")
    return out


def _locks(git_dir: Path, now: float) -> list[str]:
    out: list[str] = []
    candidates = [git_dir / name for name in _GIT_LOCKS]
    refs = git_dir / "refs"
    if refs.is_dir():
        candidates += list(refs.rglob("*.lock"))
    ours = git_dir / "refs" / "ralph"
    for lock in candidates:
        try:
            age = now - lock.stat().st_mtime
        except OSError:
            continue
        if lock.is_relative_to(ours) or age > STALE_LOCK_S:
            _remove(lock)
            out.append(f"removed {lock}, left by a git that died {age:.0f}s ago")
    return out


def _incoming_refs(git_dir: Path) -> list[str]:
    """refs/ralph/incoming/* exist only while ralph fetches a workspace's commit in: any left is from
    a killed tick. A loose one is a file to delete; a packed one is cut out of packed-refs."""
    out: list[str] = []
    loose = git_dir / "refs" / "ralph" / "incoming"
    if loose.is_dir():
        for ref in loose.rglob("*"):
            if ref.is_file():
                ref.unlink()
                out.append(f"removed the transient ref refs/ralph/incoming/{ref.relative_to(loose)}")
    packed = git_dir / "packed-refs"
    try:
        text = packed.read_text()
    except OSError:
        return out
    if " refs/ralph/incoming/" not in text:
        return out
    kept, dropped = [], []
    lines = text.splitlines(keepends=True)
    for n, line in enumerate(lines):
        if " refs/ralph/incoming/" in line:
            dropped.append(line.split(" ", 1)[1].strip())
            continue
        if line.startswith("^") and n and " refs/ralph/incoming/" in lines[n - 1]:
            continue  # the peeled line of a dropped tag
        kept.append(line)
    # As git itself rewrites it: under packed-refs.lock, created exclusively, then renamed into place.
    lock = packed.with_name("packed-refs.lock")
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return out  # a git at work: the next tick looks again
    with os.fdopen(fd, "w") as f:
        f.write("".join(kept))
    os.replace(lock, packed)
    out += [f"removed the transient ref {ref} (packed)" for ref in dropped]
    return out


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        force_rmtree(path)
    else:
        path.unlink(missing_ok=True)
