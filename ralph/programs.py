"""Finding programs as a tick started by cron or systemd will: on which PATH, through which directory,
and with the interpreter a script's `#!` line names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from ralph.runners import find_executable

# cron's PATH on Debian, Ubuntu and RHEL when the crontab sets none. A systemd service gets more
# (/usr/local/bin and the sbin directories) but never a home directory or a virtualenv.
CRON_PATH: Final = "/usr/bin:/bin"


def lookup(binary: str, root: Path, path_env: str) -> tuple[str | None, Path | None]:
    """(absolute path, the PATH directory it came from) as runners.resolve_agent finds it, on `path_env`.

    The same rules as a tick, on a PATH of our choosing (cron's, say).
    """
    found = find_executable(binary, root, path=path_env)
    if found is None or "/" in binary:
        return found, None
    return found, Path(found).parent


def fragile_reason(directory: Path) -> str | None:
    """Why a PATH directory will be missing when cron or systemd starts ralph, if it will be."""
    candidates = {directory, directory.resolve()}
    home = os.environ.get("HOME", "")
    if home and home != "/":
        home_path = Path(home)
        if any(d.is_relative_to(home_path) or d.is_relative_to(home_path.resolve()) for d in candidates):
            return f"under your home directory {home}"
    for d in candidates:
        if (d.parent / "pyvenv.cfg").is_file():
            return f"inside the virtualenv {d.parent}"
    for variable in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        prefix = os.environ.get(variable)
        if prefix and any(d.is_relative_to(prefix) for d in candidates):
            return f"inside ${variable} ({prefix})"
    return None


def interpreter(executable: str) -> tuple[str, bool] | None:
    """The program a script's `#!` line starts: (name, looked up on PATH through env) or None."""
    try:
        with open(executable, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].decode(errors="replace").split()
    if not words:
        return None
    if Path(words[0]).name != "env":
        return words[0], False
    # `#!/usr/bin/env -S node --flag` or `#!/usr/bin/env VAR=1 node`: the first word that is neither.
    rest = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
    return (rest[0], True) if rest else None
