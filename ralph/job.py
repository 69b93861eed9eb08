"""Detached jobs: the wrapper process (`python -m ralph.job SPEC`) and the tick's side of it.

A tick never waits on an agent or a CI run. It starts this wrapper in a new session; the wrapper
runs the command (argv, never a shell) with output to the task's log, enforces the deadline on the
whole process group, and writes `<job>.result.json` atomically. The next tick reads the result.

Two-phase start: the wrapper waits for one line, `go`, on its stdin before it runs anything. The
tick sends it only after the job is recorded in state.json. A tick that dies in between closes the
pipe, and the wrapper exits without running the command, so a job nobody recorded never runs.

This module is imported by every job, so it imports only the standard library and ralph's
stdlib-only helpers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import IO, Any

from ralph import proc
from ralph.files import write_json

GO = b"go\n"
STOPPED_BEFORE_START = "stopped (SIGTERM) before the command started"


@dataclass(frozen=True)
class JobSpec:
    """What a wrapper runs; written next to its result as `<job>.spec.json` (mode 0600: it holds env)."""

    task_id: str
    kind: str
    argv: list[str]
    cwd: str
    env: dict[str, str]
    log_path: str
    result_path: str
    timeout_s: float
    grace_s: float
    created_at: str
    stdin_path: str | None = None
    # Checked out (forced, detached) in cwd before the command runs: the CI gate judges exactly this
    # commit. Done here, inside the job, because a checkout runs the filters the workspace's own config
    # names, which the agent controls: not something the tick should run.
    checkout: str | None = None


@dataclass(frozen=True)
class JobResult:
    exit_code: int | None  # None when the command was killed by a signal or could not start
    signal: int | None
    timed_out: bool
    started_at: str
    finished_at: str
    error: str | None = None  # the command could not be started (not found, not executable)

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        if self.error:
            return self.error
        if self.timed_out:
            return "timed out"
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        return f"exit {self.exit_code}"


# --- the wrapper -----------------------------------------------------------------------------------


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _log(message: str) -> None:
    # The wrapper's stdout is the task's log file; these lines frame the command's own output.
    sys.stdout.write(f"[ralph.job {_stamp()}] {message}\n")
    sys.stdout.flush()


def _others_in_my_group() -> list[int]:
    me = os.getpid()
    return [pid for pid in proc.group_members(os.getpgrp()) if pid != me]


def _signal_others(sig: int) -> None:
    for pid in _others_in_my_group():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _stop_group(child: subprocess.Popen[bytes], grace_s: float) -> None:
    """TERM everyone in our group but us, KILL whoever is left after the grace period, reap the child."""
    _signal_others(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _others_in_my_group():
        _pause(child, 0.05)
    # KILL until the group is empty: a member may fork between a scan and the kills, and a big process
    # takes a while to exit. Bounded, so a process stuck in the kernel cannot keep us from the result.
    deadline = time.monotonic() + proc.KILL_WAIT_S
    while time.monotonic() < deadline and _others_in_my_group():
        _signal_others(signal.SIGKILL)
        _pause(child, 0.05)
    child.wait()


def _pause(child: subprocess.Popen[bytes], seconds: float) -> None:
    """Sleep, reaping the child as soon as it exits. Once it is reaped, wait() returns at once, and a
    loop relying on it alone would scan /proc flat out for the whole grace period."""
    if child.returncode is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=seconds)
        return
    time.sleep(seconds)


def run_wrapper(spec_path: Path) -> int:
    spec = JobSpec(**json.loads(spec_path.read_text()))
    if sys.stdin.buffer.readline() != GO:
        _log("not started: the tick that created this job did not confirm it (it stopped first)")
        return 0
    terminated_from_outside = False

    def on_term(signum: int, frame: Any) -> None:
        # `ralph cancel` or the tick's overdue kill: pass it on to the command and its children,
        # then finish as usual so a result is still written.
        nonlocal terminated_from_outside
        terminated_from_outside = True
        _signal_others(signal.SIGTERM)

    # A Python handler, unlike SIG_IGN, is reset to the default in the exec'd command.
    signal.signal(signal.SIGTERM, on_term)
    started = _stamp()
    _log(f"started {spec.kind} for {spec.task_id}: {json.dumps(spec.argv)} in {spec.cwd}")
    if spec.checkout and not _check_out(spec, started):
        return 0
    what = f"open {spec.stdin_path} for stdin"
    stdin: IO[bytes] | int = subprocess.DEVNULL
    try:
        if spec.stdin_path:
            stdin = open(spec.stdin_path, "rb")  # noqa: SIM115 (closed below, once the child has it)
        if terminated_from_outside:
            # A TERM before the command existed reached nobody: starting it now would run it to its
            # deadline. (Opening stdin can block, on a FIFO, which widens this window.)
            _finish(spec, JobResult(None, None, False, started, _stamp(), error=STOPPED_BEFORE_START))
            return 0
        what = f"start {spec.argv[0] if spec.argv else '(empty argv)'}"
        child = subprocess.Popen(spec.argv, cwd=spec.cwd, env=spec.env, stdin=stdin, stdout=None, stderr=None)
    except (OSError, ValueError, IndexError) as e:
        # Not found, not executable, a NUL byte in an argument: a result, not a crash the next tick
        # would have to call "lost".
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        _finish(spec, JobResult(None, None, False, started, _stamp(), error=f"could not {what}: {reason}"))
        return 0
    finally:
        if not isinstance(stdin, int):
            stdin.close()
    if terminated_from_outside:
        # The TERM came while the command was being forked: the child had our handler until exec,
        # so it never saw it. Say it again.
        _signal_others(signal.SIGTERM)
    timed_out = False
    try:
        child.wait(timeout=spec.timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _log(f"deadline of {spec.timeout_s:g}s passed: stopping the process group")
    # Whatever is left in the group (a hung command, a background grandchild) is garbage now.
    _stop_group(child, spec.grace_s)
    code = child.returncode
    result = JobResult(
        exit_code=code if code is not None and code >= 0 else None,
        signal=-code if code is not None and code < 0 else None,
        timed_out=timed_out,
        started_at=started,
        finished_at=_stamp(),
    )
    if terminated_from_outside:
        _log("stopped from outside (SIGTERM)")
    _finish(spec, result)
    return 0


def _check_out(spec: JobSpec, started: str) -> bool:
    from ralph.errors import GitError  # only CI jobs need git: other jobs do not pay for importing sh
    from ralph.git import UNTRUSTED, Git

    assert spec.checkout is not None
    try:
        # -f: whatever the agent left in the index or the work tree gives way to the commit.
        Git(Path(spec.cwd)).run(*UNTRUSTED, "checkout", "--quiet", "-f", "--detach", spec.checkout)
    except GitError as e:
        _finish(spec, JobResult(None, None, False, started, _stamp(), error=f"could not check out: {e}"))
        return False
    return True


def _finish(spec: JobSpec, result: JobResult) -> None:
    write_json(Path(spec.result_path), asdict(result))
    _log(f"finished {spec.kind} for {spec.task_id}: {result.describe()}")


# --- the tick's side -------------------------------------------------------------------------------


@dataclass
class StartedJob:
    """A wrapper that waits for `go`. Record it in state.json, save, then call `confirm()`."""

    identity: proc.Identity
    spec: JobSpec
    _process: subprocess.Popen[bytes]

    def confirm(self) -> bool:
        """Let the command run; False if the wrapper is already gone (the next tick will call it lost)."""
        stdin = self._process.stdin
        assert stdin is not None
        try:
            stdin.write(GO)
            stdin.close()
        except BrokenPipeError:
            return False
        return True

    def abandon(self) -> None:
        """Close the pipe without `go`: the wrapper exits and runs nothing."""
        stdin = self._process.stdin
        assert stdin is not None
        with contextlib.suppress(BrokenPipeError):
            stdin.close()


def start(spec: JobSpec, spec_path: Path) -> StartedJob:
    """Start a wrapper for `spec` in a new session; it waits for `StartedJob.confirm()`."""
    for path in (spec_path, Path(spec.log_path), Path(spec.result_path)):
        path.parent.mkdir(parents=True, exist_ok=True)
    # write_json keeps the mode of a file it replaces; the spec holds env, so start from no file and
    # get mkstemp's 0600 rather than inherit a readable mode from whatever was there.
    with contextlib.suppress(FileNotFoundError):
        spec_path.unlink()
    write_json(spec_path, asdict(spec))
    env = dict(os.environ)
    # The wrapper must import ralph even when run from a source checkout, and nothing else of ours: not
    # the caller's PYTHONPATH, whose empty or relative entries resolve against the workspace.
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    with open(spec.log_path, "ab") as log:
        process = subprocess.Popen(
            # -P: `-m` would otherwise put the cwd, the agent's workspace, first on sys.path, and a
            # json.py or ralph/ planted there would run here with the tick's environment.
            [sys.executable, "-P", "-m", "ralph.job", str(spec_path)],
            cwd=spec.cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: killable as one, and not killed with the tick
            close_fds=True,
        )
    # Our own child cannot be reaped before we wait for it, so its /proc entry is there to read.
    identity = proc.identify(process.pid)
    assert identity is not None
    return StartedJob(identity=identity, spec=spec, _process=process)


def read_result(path: Path) -> JobResult | None:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # not written yet; or, as it is written atomically, a bad file put there by hand
    try:
        return JobResult(**raw)
    except TypeError:
        return None


class Outcome(Enum):
    RUNNING = "running"
    FINISHED = "finished"
    LOST = "lost"  # dead without a result: killed, or the host rebooted
    OVERDUE = "overdue"  # alive past its deadline and grace: the wrapper itself is stuck


def check(
    identity: proc.Identity, result_path: Path, *, deadline: datetime, grace_s: float, now: datetime
) -> tuple[Outcome, JobResult | None]:
    result = read_result(result_path)
    if result is not None:
        return Outcome.FINISHED, result
    if proc.is_alive(identity):
        # The wrapper enforces the deadline itself; only a wrapper that did not is overdue.
        slack = timedelta(seconds=grace_s + 30)
        return (Outcome.OVERDUE if now > deadline + slack else Outcome.RUNNING), None
    result = read_result(result_path)  # it may have finished between the two looks
    return (Outcome.FINISHED, result) if result is not None else (Outcome.LOST, None)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m ralph.job SPEC.json (started by `ralph run`, not by hand)\n")
        return 2
    return run_wrapper(Path(argv[1]))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
