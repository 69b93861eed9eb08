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
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import IO, Any

from ralph import proc
from ralph.files import FileTooLarge, fsync_directory, read_bounded, read_tail, write_json
from ralph.nesting import loads_json
from ralph.text import printable

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
    # The box the command (and after_create) runs in: ralph.sandbox.Box as a dict; None runs it as
    # ralph itself (sandbox.mode = "none").
    box: dict[str, Any] | None = None
    # A checkout to make at cwd before anything runs (ralph.workspace.prepare): {"setup": Setup as a
    # dict, "commit": sha, "base_sha": sha}. Made here, in the job, so a tick never waits on a clone.
    prepare: dict[str, Any] | None = None
    # hooks.after_create, run in the box in the new checkout before the command, within setup_timeout_s.
    after_create: list[str] | None = None
    setup_timeout_s: float = 0.0
    # Signs the result a wrapper leaves in its log when it cannot write the result file (`_finish`):
    # the command writes to that log too, and must not be able to forge its own result there.
    record_key: str = field(default_factory=lambda: secrets.token_hex(16))
    # The control checkout's .ralph/cache/parallel: when set, the job asks for a tick once its result
    # is written (ralph.wake), so the next step does not wait for the timer.
    follow: str | None = None


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
    # The wrapper's stdout is the task's log file; these lines frame the command's own output. They
    # quote paths and argv, so control characters are escaped; and a full disk must not stop the job
    # from finishing (it has a result to leave), so a line that cannot be written is dropped.
    with contextlib.suppress(OSError):
        sys.stdout.write(f"[ralph.job {_stamp()}] {printable(message)}\n")
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


class _Stopped(Exception):
    """A SIGTERM arrived before the command could start."""


def run_wrapper(spec_path: Path) -> int:
    spec = JobSpec(**json.loads(spec_path.read_text()))
    if sys.stdin.buffer.readline() != GO:
        _log("not started: the tick that created this job did not confirm it (it stopped first)")
        return 0
    terminated = [False]

    def on_term(signum: int, frame: Any) -> None:
        # `ralph cancel` or the tick's overdue kill: pass it on to the command and its children,
        # then finish as usual so a result is still written.
        terminated[0] = True
        _signal_others(signal.SIGTERM)

    # A Python handler, unlike SIG_IGN, is reset to the default in the exec'd command.
    signal.signal(signal.SIGTERM, on_term)
    reserved = _reserve(spec)
    started = _stamp()
    boxed = "in a box" if spec.box is not None else "unboxed"
    _log(f"started {spec.kind} for {spec.task_id}: {json.dumps(spec.argv)} in {spec.cwd} ({boxed})")
    try:
        error = _set_up(spec, terminated)
    except _Stopped:
        error = STOPPED_BEFORE_START
    if error is not None:
        _finish(spec, JobResult(None, None, False, started, _stamp(), error=error), reserved)
        return 0
    code, timed_out, error = _run(
        spec, spec.argv, timeout_s=spec.timeout_s, stdin_path=spec.stdin_path, terminated=terminated
    )
    if error is not None:
        _finish(spec, JobResult(None, None, False, started, _stamp(), error=error), reserved)
        return 0
    result = JobResult(
        exit_code=code if code is not None and code >= 0 else None,
        signal=-code if code is not None and code < 0 else None,
        timed_out=timed_out,
        started_at=started,
        finished_at=_stamp(),
    )
    if terminated[0]:
        _log("stopped from outside (SIGTERM)")
    _finish(spec, result, reserved)
    return 0


def _set_up(spec: JobSpec, terminated: list[bool]) -> str | None:
    """Make the checkout and run after_create; the reason the job cannot go on, or None."""
    if spec.prepare is not None:
        # Only jobs that make a checkout pay for importing git (and sh).
        from ralph.errors import RalphError
        from ralph.workspace import Setup, prepare

        try:
            prepare(
                Path(spec.cwd),
                setup=Setup.from_dict(spec.prepare["setup"]),
                commit=spec.prepare["commit"],
                base_sha=spec.prepare["base_sha"],
                files={rel: text.encode() for rel, text in spec.prepare.get("files", {}).items()},
            )
        except (RalphError, OSError) as e:
            return f"could not make the checkout {spec.cwd}: {e}"
        _log(f"checked out {spec.prepare['commit'][:10]} in {spec.cwd}")
    if terminated[0]:
        raise _Stopped
    if spec.after_create:
        code, timed_out, error = _run(
            spec, spec.after_create, timeout_s=spec.setup_timeout_s, stdin_path=None, terminated=terminated
        )
        if error is not None:
            return f"hooks.after_create: {error}"
        if timed_out:
            limit = f"{spec.setup_timeout_s:g}s"
            return f"hooks.after_create timed out after {limit} and was killed: {_log_tail(spec)}"
        if code != 0:
            return f"hooks.after_create exited {code}: {_log_tail(spec)}"
        if terminated[0]:
            raise _Stopped
    return None


def _run(
    spec: JobSpec, argv: list[str], *, timeout_s: float, stdin_path: str | None, terminated: list[bool]
) -> tuple[int | None, bool, str | None]:
    """Run `argv` (in the box, if any) until it exits or `timeout_s` passes, then stop whatever is left
    of it: (returncode, timed out, why it could not start)."""
    command = argv
    if spec.box is not None:
        from ralph.sandbox import Box, wrap

        command = wrap(argv, Box.from_dict(spec.box))
    what = f"open {stdin_path} for stdin"
    stdin: IO[bytes] | int = subprocess.DEVNULL
    try:
        if stdin_path:
            stdin = open(stdin_path, "rb")  # noqa: SIM115 (closed below, once the child has it)
        if terminated[0]:
            # A TERM before the command existed reached nobody: starting it now would run it to its
            # deadline. (Opening stdin can block, on a FIFO, which widens this window.)
            return None, False, STOPPED_BEFORE_START
        what = f"start {command[0] if command else '(empty argv)'}"
        child = subprocess.Popen(command, cwd=spec.cwd, env=spec.env, stdin=stdin, stdout=None, stderr=None)
    except (OSError, ValueError, IndexError) as e:
        # Not found, not executable, a NUL byte in an argument: a result, not a crash the next tick
        # would have to call "lost".
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return None, False, f"could not {what}: {reason}"
    finally:
        if not isinstance(stdin, int):
            stdin.close()
    if terminated[0]:
        # The TERM came while the command was being forked: the child had our handler until exec,
        # so it never saw it. Say it again.
        _signal_others(signal.SIGTERM)
    timed_out = False
    try:
        child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _log(f"deadline of {timeout_s:g}s passed: stopping the process group")
    # Whatever is left in the group (a hung command, a background grandchild) is garbage now.
    _stop_group(child, spec.grace_s)
    return child.returncode, timed_out, None


def _log_tail(spec: JobSpec, lines: int = 3) -> str:
    """The last lines of the job's log, for a one-line reason."""
    try:
        with open(spec.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode(errors="replace")
    except OSError:
        return "no output"
    last = [line.strip() for line in text.strip().splitlines() if not line.startswith("[ralph.job ")]
    return " | ".join(last[-lines:]) or "no output"


# --- the result, whatever the disk says -------------------------------------------------------------
#
# A job whose result cannot be written is lost to the tick, and its attempt with it. So the wrapper
# takes the result's space when the job starts (`_reserve`), while the disk has room, and fills it in
# place at the end: that needs no new block even on a disk the command filled up. Without it (the disk
# was full already, or the filesystem copies on write) the result is written as a new file, tried a
# few times and then smaller; and if that fails too, it is appended to the job's log as one signed
# line (`RECORD`), which `read_result` reads when there is no result file.

RESERVED_BYTES = 4096  # a result is a few hundred bytes; `_smaller` clips the one part that can grow
RESULT_TRIES = 3
RESULT_PAUSE_S = 0.5
ERROR_CHARS = 1000  # what `_smaller` keeps of an error
RESERVED_SUFFIX = ".reserved"
RECORD_TAIL_BYTES = 64 * 1024  # how far from the end of a log its record is looked for
_RESULT_SUFFIX = ".result.json"
_SPEC_SUFFIX = ".spec.json"
MAX_SPEC_BYTES = 4 * 1024 * 1024
MAX_RESULT_BYTES = 64 * 1024  # a result with the longest error ralph writes is under 10 KiB
# `[ralph.job result] <result file name> <result as compact JSON> <HMAC-SHA256 of the two, hex>`
RECORD = "[ralph.job result]"
_RECORD_LINE = re.compile(r"^\[ralph\.job result\] (\S+) (\{.*\}) ([0-9a-f]{64})$")


def _reserve(spec: JobSpec) -> Path | None:
    """Take the space of the result file now, under a name no reader looks at; None if the disk is
    already too full (the result is then written the ordinary way, and may fall back on the log)."""
    path = Path(spec.result_path + RESERVED_SUFFIX)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, b" " * RESERVED_BYTES)
            os.fsync(fd)  # allocated now, not when the page cache is written back
        finally:
            os.close(fd)
    except OSError as e:
        _log(f"could not reserve space for the result ({e.strerror}); it is written at the end instead")
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return path


def _finish(spec: JobSpec, result: JobResult, reserved: Path | None) -> None:
    target = Path(spec.result_path)
    written = reserved is not None and _fill(reserved, target, result)
    if not written:
        if reserved is not None:
            with contextlib.suppress(OSError):
                reserved.unlink()  # its space may be just what the new file needs
        written = _write_result(target, result)
    if not written and _append_record(spec, result):
        _log(f"could not write {target}; the result is the signed line above")
    _log(f"finished {spec.kind} for {spec.task_id}: {result.describe()}")


def _fill(reserved: Path, target: Path, result: JobResult) -> bool:
    """Write the result into the reserved file, in place, and rename it to `target`."""
    data = _encode(result)
    if len(data) > RESERVED_BYTES:
        data = _encode(_smaller(result), compact=True)
    try:
        fd = os.open(reserved, os.O_WRONLY)
        try:
            _write_all(fd, data)
            os.ftruncate(fd, len(data))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(reserved, target)
    except OSError as e:
        _log(f"could not fill the space reserved for the result ({e.strerror})")
        return False
    with contextlib.suppress(OSError):
        fsync_directory(target.parent)
    return True


def _write_result(target: Path, result: JobResult) -> bool:
    """A new result file, tried RESULT_TRIES times, a short pause apart, the later tries smaller."""
    for attempt in range(RESULT_TRIES):
        if attempt:
            time.sleep(RESULT_PAUSE_S)
        try:
            write_json(target, asdict(result if attempt == 0 else _smaller(result)))
            return True
        except OSError as e:
            _log(f"could not write {target} ({e.strerror}); try {attempt + 1} of {RESULT_TRIES}")
    return False


def _append_record(spec: JobSpec, result: JobResult) -> bool:
    """The result as the log's last line: appending fills the log's last block, which a new file
    cannot use. Starts on a line of its own, whatever the command left unfinished."""
    name = Path(spec.result_path).name
    payload = _encode(_smaller(result), compact=True).decode()
    line = f"\n{RECORD} {name} {payload} {_sign(spec.record_key, name, payload)}\n"
    try:
        fd = os.open(spec.log_path, os.O_WRONLY | os.O_APPEND)
        try:
            _write_all(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        return False
    return True


def _encode(result: JobResult, *, compact: bool = False) -> bytes:
    if compact:
        return json.dumps(asdict(result), separators=(",", ":")).encode()
    return (json.dumps(asdict(result), indent=2) + "\n").encode()


def _smaller(result: JobResult) -> JobResult:
    if result.error is None or len(result.error) <= ERROR_CHARS:
        return result
    return replace(result, error=result.error[: ERROR_CHARS - 1] + "…")


def _sign(key: str, name: str, payload: str) -> str:
    return hmac.new(key.encode(), f"{name} {payload}".encode(), hashlib.sha256).hexdigest()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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
            # -P: `-m` would otherwise put the cwd first on sys.path. The wrapper starts in its run
            # directory: its checkout may not exist yet, and is the agent's to fill when it does.
            [sys.executable, "-P", "-m", "ralph.job", str(spec_path)],
            cwd=spec_path.parent,
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
    """A job's result: its file, or, when the wrapper could not write one, the signed line it left at
    the end of the job's log. None while there is neither."""
    result = _read_result_file(path)
    return result if result is not None else _read_record(path)


def _read_result_file(path: Path) -> JobResult | None:
    try:
        return _result_from(loads_json(read_bounded(path, MAX_RESULT_BYTES)))
    except (OSError, ValueError, FileTooLarge):
        return None  # not written yet; or, as it is written atomically, a bad file put there by hand


def _result_from(raw: Any) -> JobResult | None:
    try:
        return JobResult(**raw)
    except TypeError:
        return None


def _read_record(path: Path) -> JobResult | None:
    """The result line the wrapper appended to its log (see `_finish`), checked against the key in the
    job's spec; None if there is none, or none the wrapper signed."""
    if not path.name.endswith(_RESULT_SUFFIX):
        return None
    spec_path = path.with_name(path.name.removesuffix(_RESULT_SUFFIX) + _SPEC_SUFFIX)
    try:
        spec = loads_json(read_bounded(spec_path, MAX_SPEC_BYTES))
        key, log_path = spec["record_key"], spec["log_path"]
        if not (isinstance(key, str) and key and isinstance(log_path, str)):
            return None
        with open(log_path, "rb") as log:
            tail = read_tail(log, RECORD_TAIL_BYTES)
    except (OSError, ValueError, FileTooLarge, KeyError, TypeError):
        return None
    for line in reversed(tail.splitlines()):
        match = _RECORD_LINE.match(line)
        if match is None or match.group(1) != path.name:
            continue
        name, payload, signature = match.groups()
        if not hmac.compare_digest(signature, _sign(key, name, payload)):
            continue  # written by the command, not by its wrapper
        try:
            return _result_from(loads_json(payload))
        except ValueError:
            return None
    return None


class Outcome(Enum):
    RUNNING = "running"
    FINISHED = "finished"
    LOST = "lost"  # dead without a result: killed, or the host rebooted
    OVERDUE = "overdue"  # alive past its deadline and grace: the wrapper itself is stuck


def check(
    identity: proc.Identity, result_path: Path, *, deadline: datetime, grace_s: float, now: datetime
) -> tuple[Outcome, JobResult | None]:
    result = _read_result_file(result_path)
    if result is not None:
        return Outcome.FINISHED, result
    if proc.is_alive(identity):
        # The wrapper enforces the deadline itself; only a wrapper that did not is overdue.
        slack = timedelta(seconds=grace_s + 30)
        return (Outcome.OVERDUE if now > deadline + slack else Outcome.RUNNING), None
    # It may have finished between the two looks; or it could not write its result file, and left
    # the result in its log: only a wrapper that has exited is looked for there.
    result = read_result(result_path)
    return (Outcome.FINISHED, result) if result is not None else (Outcome.LOST, None)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m ralph.job SPEC.json (started by `ralph run`, not by hand)\n")
        return 2
    code = run_wrapper(Path(argv[1]))
    _follow(Path(argv[1]))
    return code


def _follow(spec_path: Path) -> None:
    """Once the result is written (or the job never started), ask for the next tick at once."""
    try:
        follow = json.loads(spec_path.read_text()).get("follow")
    except (OSError, ValueError, AttributeError):
        return
    if follow:
        from ralph import wake

        wake.request_tick(Path(follow))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
