"""Ticks that follow the jobs: a job that ends asks for a tick at once, instead of waiting for the timer.

`ralph run` remembers how it was started (`wake.json`): under systemd the unit it runs in, otherwise
its own command line, directory and environment (as cron ran it). A job wrapper that has written its
result first marks a request (`wake-requested`, its mtime) and then starts a tick the same way, in the
background. A tick that finds the lock held exits 75, as always; the tick holding it sees the request
when it is done and makes one more pass (ralph.tick.run_tick), so no request is lost. The timer stays
the heartbeat; `run.follow_jobs = false` turns this off.

Standard library only: the job wrapper uses it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

INVOCATION = "wake.json"
REQUEST = "wake-requested"
FOLLOWED_LOG = "followed.log"  # where a tick started for a job writes, when its command line names no log
# What a tick started for a job keeps of the environment ralph ran in: what finding programs, the
# user's git identity and a locale need, nothing more.
_KEPT = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "SHELL", "TMPDIR", "XDG_RUNTIME_DIR")
_KEPT_PREFIXES = ("LC_", "GIT_AUTHOR_", "GIT_COMMITTER_", "DBUS_SESSION_BUS_ADDRESS")


def systemd_unit() -> tuple[str, bool] | None:
    """(the unit this process runs in, whether it is the user's manager's) when systemd started it."""
    if not os.environ.get("INVOCATION_ID"):
        return None
    try:
        cgroup = Path("/proc/self/cgroup").read_text()
    except OSError:
        return None
    for line in cgroup.splitlines():
        path = line.split(":", 2)[-1]
        parts = [p for p in path.split("/") if p]
        if parts and parts[-1].endswith(".service"):
            return parts[-1], any(p.startswith("user@") for p in parts)
    return None


def remember(parallel: Path, argv: list[str], cwd: str) -> None:
    """How this tick was started, for the jobs it starts to ask for the next one the same way."""
    unit = systemd_unit()
    if unit is not None:
        how: dict[str, object] = {"how": "systemd", "unit": unit[0], "user": unit[1]}
    else:
        env = {k: v for k, v in os.environ.items() if k in _KEPT or k.startswith(_KEPT_PREFIXES)}
        how = {"how": "command", "argv": [sys.executable, "-m", "ralph", *argv], "cwd": cwd, "env": env}
    path = parallel / INVOCATION
    text = json.dumps(how, sort_keys=True)
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return  # the same as last time: cron runs this every minute
    parallel.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parallel, prefix=f".{INVOCATION}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def requested_at(parallel: Path) -> int:
    """When a job last asked for a tick (ns since the epoch), 0 if never."""
    try:
        return os.stat(parallel / REQUEST).st_mtime_ns
    except OSError:
        return 0


def request_tick(parallel: Path) -> None:
    """Mark a request, then start a tick the way ralph was last started (in the background); a job's
    result is written already, so nothing here may fail the job."""
    with contextlib.suppress(OSError):
        (parallel / REQUEST).touch()
    try:
        how = json.loads((parallel / INVOCATION).read_text())
    except (OSError, ValueError):
        return  # never run by `ralph run` (a test, the demo): the timer will come
    if how.get("how") == "systemd":
        argv = [
            "systemctl",
            *(["--user"] if how.get("user") else []),
            "start",
            "--no-block",
            str(how["unit"]),
        ]
        _start(argv, cwd="/", env=dict(os.environ), log=None)
    elif how.get("how") == "command":
        argv = [str(a) for a in how.get("argv", [])]
        env = {str(k): str(v) for k, v in dict(how.get("env", {})).items()}
        _start(argv, cwd=str(how.get("cwd", "/")), env=env, log=parallel / FOLLOWED_LOG)


def _start(argv: list[str], *, cwd: str, env: dict[str, str], log: Path | None) -> None:
    if not argv:
        return
    try:
        out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 (closed below)
        try:
            subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        finally:
            if not isinstance(out, int):
                out.close()
    except OSError:
        pass  # the timer will come
