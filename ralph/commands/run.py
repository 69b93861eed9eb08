"""`ralph run`: one tick (DESIGN §3); the job cron or a systemd timer runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ralph import alerts, health, wake
from ralph.checkout import open_checkout
from ralph.clock import now as read_clock
from ralph.commands._output import emit_json
from ralph.errors import ExitCode
from ralph.paths import check_task_id
from ralph.report import refresh_page
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
    options = TickOptions(
        workers=workers,
        max_tasks=max_tasks,
        dry_run=dry_run,
        allow_root=allow_root,
        only=only,
        include_draft=include_draft,
    )
    if dry_run:
        return _tick(start, options, as_json)
    # Every tick's end goes to the ring file, however it ends (README: "Tick health").
    with health.recording(start, facts=alerts.facts, announce=alerts.announce) as recording:
        return _tick(start, options, as_json, recording)


def _tick(
    start: Path, options: TickOptions, as_json: bool, recording: health.Recording | None = None
) -> ExitCode:
    checkout = open_checkout(start)
    if recording is not None:  # its end is recorded with the config this tick ran with
        recording.read_facts_with(lambda _root: alerts.facts_from(checkout))
    if checkout.config.run.follow_jobs and not options.dry_run and options.only is None:
        # How this tick was started, so a job that ends can start the next one the same way: the
        # timer's command line, never a person's one-off (a dry run, one task out of order).
        wake.remember(checkout.paths.parallel, sys.argv[1:], os.getcwd())
    report = run_tick(checkout, options, read_clock())
    if not options.dry_run:
        refresh_page(checkout, changed=bool(report.actions), now=read_clock())
    if as_json:
        emit_json(report.as_dict())
    return ExitCode.OK
