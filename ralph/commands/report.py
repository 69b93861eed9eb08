"""`ralph report --html FILE [--since]`: write the status page (ralph.report) to FILE, or to stdout
with `-`."""

from __future__ import annotations

from pathlib import Path

import click

from ralph.checkout import open_checkout
from ralph.clock import now as read_clock
from ralph.errors import ExitCode
from ralph.history import Since, since_time
from ralph.report import build_page, write_page


def report(*, start: Path, html_file: str, since: Since) -> ExitCode:
    checkout = open_checkout(start)
    now = read_clock()
    page = build_page(checkout, now, since=since_time(since, now))
    if html_file == "-":
        click.echo(page, nl=False)
        return ExitCode.OK
    target = Path(html_file)
    write_page(target, page)
    click.echo(str(target.absolute()))
    return ExitCode.OK
