"""`ralph logs TASK [--ci] [--follow]`: a task's agent or CI log."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ralph.checkout import Checkout, open_checkout
from ralph.clock import now as read_clock
from ralph.errors import ExitCode, RalphError
from ralph.job import read_result
from ralph.paths import check_task_id
from ralph.state import JobKind, load_state

POLL_S = 0.5


def logs(*, start: Path, task_id: str, ci: bool, follow: bool) -> ExitCode:
    check_task_id(task_id)
    checkout = open_checkout(start)
    path = checkout.paths.run_dir(task_id) / ("ci.log" if ci else "agent.log")
    if not path.exists():
        raise RalphError(f"no {'CI' if ci else 'agent'} log for {task_id} yet ({path} does not exist)")
    kind = JobKind.CI if ci else JobKind.AGENT
    base = checkout.base_branch()
    out = sys.stdout.buffer
    with open(path, "rb") as f:
        out.write(f.read())
        out.flush()
        try:
            while follow and _job_running(checkout, base, task_id, kind):
                chunk = f.read()
                if chunk:
                    out.write(chunk)
                    out.flush()
                else:
                    time.sleep(POLL_S)
        except KeyboardInterrupt:
            pass
        out.write(f.read())
        out.flush()
    return ExitCode.OK


def _job_running(checkout: Checkout, base: str, task_id: str, kind: JobKind) -> bool:
    """True while the task's current job of this kind has not written its result."""
    state = load_state(checkout.paths.state, now=read_clock(), target_branch=base, remote=checkout.remote)
    worker = state.worker(task_id)
    if worker is None or worker.job is None or worker.job.kind is not kind:
        return False
    return read_result(Path(worker.job.result_path)) is None
