"""The box every job runs in: bubblewrap, with one writable project path and nothing of ralph's in sight.

An agent is untrusted (DESIGN principle 7). Its job sees the whole filesystem read-only, a private
/tmp, its workspace (or the gate's checkout) and its private HOME writable, and nothing at all of the
control checkout, ralph's state, the remote when it is a local path, or the user's credentials. It runs
in PID, IPC, UTS, cgroup and user namespaces of its own (so a deadline ends every process it started,
`setsid` escapees included) with every capability dropped (root in the namespace could otherwise
unmount a cover and read what it hides). The network is kept unless the config cuts it: an agent
needs its model.

This module only builds argv for bwrap; it imports the standard library alone, as the job wrapper
that uses it must start fast.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BWRAP = "bwrap"
INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`; Fedora: `dnf install bubblewrap`)"
)

# Credentials any git or gh on this machine could push with. Hidden from every job; the user's own
# HOME stays readable otherwise (tools live there), but a job gets a private HOME of its own.
CREDENTIAL_PATHS = (
    "~/.ssh",
    "~/.git-credentials",
    "~/.config/git/credentials",
    "~/.config/gh",
    "~/.netrc",
    "~/.gnupg",
    "~/.docker/config.json",
)


# What every program expects to find; taken from ralph's environment for every job. Nothing else comes
# through (push credentials such as SSH_AUTH_SOCK, GIT_ASKPASS, GH_TOKEN; ralph's own RALPH_*; the
# variables that point git at another repository) unless sandbox.env_passthrough names it.
BASE_VARIABLES = ("PATH", "LANG", "LANGUAGE", "TZ", "USER", "LOGNAME", "SHELL")


def job_env(
    environ: Mapping[str, str],
    *,
    home: str,
    cwd: str,
    tmpdir: str,
    passthrough: Iterable[str] = (),
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The whole environment of a job: the base variables, the passed-through names, its own HOME,
    PWD and TMPDIR, then `extra` (ralph's RALPH_* for the job, a preset's settings, agent.env)."""
    env = {k: v for k, v in environ.items() if k in BASE_VARIABLES or k.startswith("LC_")}
    env.update({k: environ[k] for k in passthrough if k in environ})
    # GIT_CONFIG_NOSYSTEM: /etc/gitconfig may name a credential helper.
    env.update(HOME=home, PWD=cwd, TMPDIR=tmpdir, GIT_CONFIG_NOSYSTEM="1")
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Box:
    """What one job may see and touch; serialised into the job's spec."""

    cwd: str
    writable: tuple[str, ...]  # bound read-write: the workspace or checkout, the private HOME
    readonly: tuple[
        str, ...
    ] = ()  # shown again, read-only, inside a hidden path (objects, prompt, CI program)
    hidden: tuple[str, ...] = ()  # covered: empty directories, or /dev/null for a file
    network: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Box:
        return cls(
            cwd=raw["cwd"],
            writable=tuple(raw["writable"]),
            readonly=tuple(raw.get("readonly", ())),
            hidden=tuple(raw.get("hidden", ())),
            network=bool(raw.get("network", True)),
        )


def wrap(argv: list[str], box: Box, *, bwrap: str = BWRAP) -> list[str]:
    """The bwrap command line that runs `argv` in `box`.

    Mounts apply in order and a later one covers an earlier one, so they are sorted by depth: a
    workspace inside the hidden control checkout is bound after the cover that hides its parent.
    """
    out = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    mounts: list[tuple[int, int, list[str]]] = []
    for path in box.hidden:
        if os.path.isdir(path) and not os.path.islink(path):
            mounts.append((_depth(path), 0, ["--tmpfs", path]))
        elif os.path.lexists(path):
            mounts.append((_depth(path), 0, ["--ro-bind", "/dev/null", path]))
    for path in box.readonly:
        if os.path.lexists(path) and not _shown_already(path, box):
            mounts.append((_depth(path), 1, ["--ro-bind", path, path]))
    for path in box.writable:
        mounts.append((_depth(path), 2, ["--bind", path, path]))
    for _, _, args in sorted(mounts, key=lambda m: (m[0], m[1])):
        out += args
    out += ["--unshare-all", "--share-net"] if box.network else ["--unshare-all"]
    # --die-with-parent: the box ends with the job wrapper that started it. --cap-drop ALL: root in the
    # box's user namespace could unmount a cover (and read ~/.ssh under it) or remount a path rw.
    out += ["--die-with-parent", "--cap-drop", "ALL", "--chdir", box.cwd, "--"]
    return out + list(argv)


def _depth(path: str) -> int:
    return len(Path(path).parts)


def _shown_already(path: str, box: Box) -> bool:
    """Whether a read-only bind of a directory above `path` shows it already, with no cover between.
    bwrap cannot bind onto a symlink inside a bound directory (a virtual environment's `bin/python3`
    under /tmp): "Can't create file"."""
    above = [p for p in box.readonly if p != path and _within(path, p)]
    if not above:
        return False
    nearest = max(above, key=_depth)
    return not any(_within(path, h) and _within(h, nearest) and h != nearest for h in box.hidden)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def hidden_paths(*, control: Path, remote_url: str, extra: Iterable[str] = ()) -> list[str]:
    """What no job may see: the control checkout (and with it ralph's state and the other workspaces),
    the remote when it is a directory on this machine, the user's credentials, the runtime directory
    where agent sockets live, and whatever sandbox.hide_paths adds."""
    out = [str(control)]
    remote = local_remote_path(remote_url, control)
    if remote is not None:
        out.append(str(remote))
    out += [os.path.expanduser(p) for p in (*CREDENTIAL_PATHS, *extra)]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        out.append(runtime)
    return out


def local_remote_path(url: str, control: Path) -> Path | None:
    """The directory a remote URL names on this machine (a path or file://), else None."""
    if url.startswith("file://"):
        return Path(url[len("file://") :])
    if "://" in url:
        return None
    colon, slash = url.find(":"), url.find("/")
    if colon > 0 and (slash == -1 or colon < slash):
        return None  # scp-like host:path
    path = Path(url) if os.path.isabs(url) else control / url
    return Path(os.path.normpath(path))


@dataclass
class Probe:
    """Whether bwrap can start a box on this machine, and if not, why (one line)."""

    ok: bool
    problem: str = ""
    version: str = ""
    checked: list[str] = field(default_factory=list)


def probe(*, bwrap: str = BWRAP, timeout_s: float = 10.0) -> Probe:
    """Start a real box (the same flags a job gets) running `true`."""
    argv = wrap(["true"], Box(cwd="/", writable=()), bwrap=bwrap)
    try:
        version = subprocess.run(
            [bwrap, "--version"], capture_output=True, text=True, timeout=timeout_s
        ).stdout.strip()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        return Probe(False, f"{bwrap} is not installed; {INSTALL_HINT}")
    except (OSError, subprocess.TimeoutExpired) as e:
        return Probe(False, f"{bwrap} could not be run: {e}")
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Probe(
            False,
            f"{bwrap} cannot start a box here ({said}); user namespaces may be off "
            "(sysctl kernel.unprivileged_userns_clone=1, or an AppArmor profile for bwrap)",
            version,
        )
    return Probe(True, "", version)
