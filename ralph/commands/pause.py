"""`ralph pause [--reason TEXT]` and `ralph resume`: stop and restart new work without touching what runs."""

from __future__ import annotations

from pathlib import Path

import click

from ralph.checkout import open_checkout
from ralph.clock import now as read_clock
from ralph.errors import ExitCode
from ralph.pause import pause as write_pause
from ralph.pause import read_pause
from ralph.pause import resume as remove_pause


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
    checkout = open_checkout(start)
    if remove_pause(checkout.paths.pause):
        click.echo("resumed: the next tick starts new tasks again")
    else:
        click.echo("not paused: nothing to resume")
    return ExitCode.OK
