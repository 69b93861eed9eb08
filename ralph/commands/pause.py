"""`ralph pause [--reason TEXT]` and `ralph resume`: stop and restart new work without touching what runs.

`ralph resume` also lifts the pauses ticks put on a runner whose agent stopped at a usage or rate
limit (state.json's runner_pauses).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from ralph.checkout import Checkout, open_checkout
from ralph.clock import now as read_clock
from ralph.errors import ExitCode
from ralph.ledger import edit_state
from ralph.pause import pause as write_pause
from ralph.pause import read_pause
from ralph.pause import resume as remove_pause
from ralph.state import RunnerPause, load_state


def pause(*, start: Path, reason: str) -> ExitCode:
    checkout = open_checkout(start)
    earlier = read_pause(checkout.paths.pause)
    marker = write_pause(checkout.paths.pause, now=read_clock(), reason=reason)
    again = " (it was already paused)" if earlier else ""
    click.echo(
        f"{marker.describe()}{again}. Ticks start no new task; work in flight still runs, is verified "
        "and lands. `ralph resume` to go on; `ralph cancel TASK` stops a running job."
    )
    return ExitCode.OK


def resume(*, start: Path) -> ExitCode:
    """Remove the pause file, and lift every runner's pause after a usage or rate limit (with its
    strikes: the next limit pauses 5 minutes again)."""
    checkout = open_checkout(start)
    now = read_clock()
    # The file first: it needs no lock, and a state.json that cannot be read must not keep it.
    removed = remove_pause(checkout.paths.pause)
    lifted = _lift_runner_pauses(checkout, now)
    if removed:
        said = "resumed: the next tick starts new tasks again"
    elif lifted:
        said = "resumed"
    else:
        said = "not paused: nothing to resume"
    for pause in lifted:
        said += f"\nlifted: {pause.describe(now)}"
    if lifted:
        said += "\nits agents start on the next tick (if the limit still holds, the pause comes back)"
    click.echo(said)
    return ExitCode.OK


def _lift_runner_pauses(checkout: Checkout, now: datetime) -> list[RunnerPause]:
    """Clear state.json's runner pauses, under the tick lock; the ones that still held."""
    base = checkout.base_branch()
    # A look without the lock first: most resumes find none, and need not wait for a tick.
    peek = load_state(checkout.paths.state, now=now, target_branch=base, remote=checkout.remote)
    if not peek.runner_pauses:
        return []
    with edit_state(checkout, now=now) as ledger:
        lifted = [p for p in ledger.state.runner_pauses if p.active(now)]
        ledger.state.runner_pauses = []
        ledger.save()
    return lifted
