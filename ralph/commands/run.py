"""`ralph run`: one tick (DESIGN §3); the job cron or a systemd timer runs."""

from __future__ import annotations

from pathlib import Path

from ralph.checkout import open_checkout
from ralph.clock import now as read_clock
from ralph.commands._output import emit_json
from ralph.errors import ExitCode
from ralph.paths import check_task_id
from ralph.tick import TickOptions, run_tick


def run(
    *,
    start: Path,
    workers: int | None,
    max_tasks: int,
    dry_run: bool,
    allow_root: bool,
    as_json: bool,
    only: str | None = None,
    include_draft: bool = False,
) -> ExitCode:
    if only is not None:
        check_task_id(only)
    checkout = open_checkout(start)
    options = TickOptions(
        workers=workers,
        max_tasks=max_tasks,
        dry_run=dry_run,
        allow_root=allow_root,
        only=only,
        include_draft=include_draft,
    )
    report = run_tick(checkout, options, read_clock())
    if as_json:
        emit_json(report.as_dict())
    return ExitCode.OK
