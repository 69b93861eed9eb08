"""What may land: the paths a task may not change, and the files no commit of an agent's may carry.

The CI gate proves a tree passes the checks; it cannot prove the checks are the ones the team wrote.
So a task whose change touches ralph's own files (`.ralph/`, the queue and done files), the program
the gate runs (every tracked file named in `ci.command`, the Makefile when the gate is make), or a path
in `landing.protected_paths` is blocked for a person to look at, naming the paths
(`landing.allow_paths` takes paths back out). So is a file over `landing.max_file_bytes`, a symlink
that points outside the repository, and a submodule whose URL would make git run a command or read
this machine's disk (`ext::`, a local path).
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ralph.config import Config
from ralph.git import Git

RALPH_FILES = ".ralph/"
_MAKE = ("make", "gmake")
_MAKEFILES = ("Makefile", "makefile", "GNUmakefile")
SYMLINK = "120000"
GITLINK = "160000"


@dataclass(frozen=True)
class Change:
    path: str
    mode: str  # the new mode; 000000 when deleted
    blob: str  # the new object


def changes(git: Git, base: str, head: str) -> list[Change]:
    """Every path `head` changes against `base` (a rename is a deletion and an addition)."""
    # --ignore-submodules=none: `ignore = all` (.gitmodules, config) would hide a submodule's bump.
    args = ("diff-tree", "-r", "-z", "--no-renames", "--no-commit-id", "--ignore-submodules=none")
    raw = git.run(*args, base, head).stdout
    parts = raw.split("\0")
    out = []
    for i in range(0, len(parts) - 1, 2):
        meta, path = parts[i], parts[i + 1]
        fields = meta.lstrip(":").split()
        if len(fields) >= 4:
            out.append(Change(path=path, mode=fields[1], blob=fields[3]))
    return out


def problems(git: Git, *, base: str, head: str, config: Config, queue_paths: Sequence[str]) -> list[str]:
    """Why the change from `base` to `head` may not land, one reason per kind; [] when it may."""
    changed = changes(git, base, head)
    out = []
    gate = gate_files(git, base, config.ci.command)
    protected = [c.path for c in changed if _is_protected(c.path, gate, config, queue_paths)]
    if protected:
        out.append(f"it changes protected paths: {_listed(protected)}")
    live = [c for c in changed if c.mode != "000000"]
    too_big = _too_big(git, live, config.landing.max_file_bytes)
    if too_big:
        out.append(
            f"files over landing.max_file_bytes ({config.landing.max_file_bytes} bytes): {_listed(too_big)}"
        )
    escaping = [c.path for c in live if c.mode == SYMLINK and _escapes(git, c)]
    if escaping:
        out.append(f"symlinks pointing outside the repository: {_listed(escaping)}")
    if any(c.path == ".gitmodules" or c.mode == GITLINK for c in changed):
        bad = _unsafe_submodules(git, head)
        if bad:
            out.append(f"submodule URLs that run a command or read this machine's disk: {_listed(bad)}")
    return out


def _listed(paths: Iterable[str], limit: int = 10) -> str:
    shown = list(paths)
    more = f" (and {len(shown) - limit} more)" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more


def _glob(path: str, patterns: Iterable[str]) -> bool:
    """fnmatch against the whole path ('*' crosses '/'); a pattern ending in '/' names a directory."""
    for pattern in patterns:
        if pattern.endswith("/") and (path + "/").startswith(pattern):
            return True
        if fnmatch.fnmatchcase(path, pattern):
            return True
    return False


def _is_protected(path: str, gate: set[str], config: Config, queue_paths: Sequence[str]) -> bool:
    if _glob(path, config.landing.allow_paths):
        return False
    if path.startswith(RALPH_FILES) or path in queue_paths or path in gate:
        return True
    return _glob(path, config.landing.protected_paths)


def protected_files(git: Git, base: str, config: Config, queue_paths: Sequence[str]) -> list[str]:
    """The files tracked on `base` that a task may not change, judged as `problems` judges a change."""
    gate = gate_files(git, base, config.ci.command)
    tracked = git.run("ls-tree", "-r", "-z", "--name-only", base).stdout.split("\0")
    return [p for p in tracked if p and _is_protected(p, gate, config, queue_paths)]


def gate_files(git: Git, base: str, command: Sequence[str]) -> set[str]:
    """Tracked files the gate command names (`ci.sh`, `-f ci.mk`, `--config=x.toml`), and the Makefile
    when the gate is make."""
    words = set()
    for arg in command:
        for word in (arg, arg.split("=", 1)[-1]):
            word = posixpath.normpath(word.removeprefix("./"))
            if word and word != "." and not word.startswith(("/", "..", "-")):
                words.add(word)
    if command and posixpath.basename(command[0]) in _MAKE:
        words.update(_MAKEFILES)
    if not words:
        return set()
    listed = git.run("ls-tree", "-z", "--name-only", base, "--", *sorted(words)).stdout
    return {p for p in listed.split("\0") if p}


def _too_big(git: Git, changed: list[Change], limit: int) -> list[str]:
    blobs = [c for c in changed if c.mode not in (GITLINK,)]
    if not blobs:
        return []
    out = git.run("cat-file", "--batch-check=%(objectsize)", input="".join(c.blob + "\n" for c in blobs)).out
    sizes = out.splitlines()
    return [c.path for c, size in zip(blobs, sizes, strict=False) if size.isdigit() and int(size) > limit]


def _escapes(git: Git, change: Change) -> bool:
    target = git.run("cat-file", "blob", change.blob).data.decode(errors="replace")
    if target.startswith("/"):
        return True
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(change.path), target))
    return joined == ".." or joined.startswith("../")


_URL = re.compile(r"^\s*url\s*=\s*(.*?)\s*$", re.M | re.I)


def _unsafe_submodules(git: Git, head: str) -> list[str]:
    result = git.run("cat-file", "blob", f"{head}:.gitmodules", ok=(0, 128))
    if result.returncode != 0:
        return []
    text = result.data.decode(errors="replace")
    return [url for url in _URL.findall(text) if _unsafe_url(url.strip('"'))]


def _unsafe_url(url: str) -> bool:
    if url.lower().startswith(("ext::", "file:", "fd::")):
        return True
    if "://" in url or url.startswith(("./", "../")):
        return False  # a server, or a path relative to the remote's own URL
    colon, slash = url.find(":"), url.find("/")
    scp_like = colon > 0 and (slash == -1 or colon < slash)  # host:path
    return not scp_like  # else a path on this machine
