"""Watching the base: does its tip pass the gate, and what ralph does while it does not.

A tip ralph pushed passed the gate already (the train lands only a gated tip), and so does one that
differs from a judged tip only in ralph's queue and done files (`ralph task add`). A tip someone else
pushed was never gated: ralph runs the gate on it, in a checkout it makes (ci.watch_base, on by default
when a gate is set), or asks the team's CI through ci.base_status_command (`{sha}` in its argv; exit 0
green, 1 red, anything else "not known yet").

While the base is red the train does not blame a failing gate on the task at that position (main
failed before it), and it lands the longest prefix whose tip passes the gate: that tip fixed main.
ralph adds a fix task at the top of the queue once, quoting the failure, and `ralph status` says
"main is red since ... at ...". The first tip that passes ends it; verdicts given while the base was
red are asked again.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from ralph import job as jobs
from ralph import proc, prompts
from ralph.bookkeeping import Mode, edit_files, publish
from ralph.clock import format_z
from ralph.config import Config
from ralph.crew import Crew, read_log_tail
from ralph.errors import RalphError, resource_error
from ralph.queue import Task, check_text
from ralph.queuedoc import QueueEdit
from ralph.state import BaseWatch, Job
from ralph.text import one_line
from ralph.train import Conductor

logger = logging.getLogger(__name__)

# The id the base's gate runs under (its run directory, its gate checkout); no task id is this.
WATCH_ID = "ralph-watch"
STATUS_TIMEOUT_S = 60.0
QUOTE_BYTES = 8 * 1024  # of the failure, in the fix task's description


def enabled(config: Config) -> bool:
    """Whether ralph judges tips it did not push itself."""
    ci = config.ci
    watch = bool(ci.command) if ci.watch_base is None else ci.watch_base
    return bool(ci.base_status_command) or (watch and bool(ci.command))


def look(crew: Crew, conductor: Conductor) -> None:
    """Once per tick, with the remote reachable: read the base's gate if it ended, and judge a new tip."""
    watch = crew.state.watch
    if watch.job is not None:
        _reap(crew, conductor, watch, watch.job)
    tip = crew.base_sha
    if tip == watch.sha or (watch.job is not None and watch.job.commit == tip):
        return
    if watch.sha is None:
        watch.sha = tip  # the base ralph found: not a move, and not gated on first sight (its tasks' are)
        return
    if conductor.code_same(watch.sha, tip):
        watch.sha = tip  # only ralph's queue files moved: the verdict holds (unknown stays unknown)
        return
    if not enabled(crew.config):
        return
    if crew.config.ci.base_status_command:
        _ask(crew, conductor, tip)
    else:
        _gate(crew, watch, tip)


def landed(crew: Crew, conductor: Conductor, tip: str) -> None:
    """ralph pushed `tip`, whose code passed the gate: the base is green there."""
    watch = crew.state.watch
    if watch.job is not None:
        _stop(crew, watch.job)
        watch.job = None
    judge(crew, conductor, tip, green=True, reason=None)


def judge(crew: Crew, conductor: Conductor, sha: str, *, green: bool, reason: str | None) -> None:
    watch = crew.state.watch
    watch.sha = sha
    if green:
        if watch.verdict == "red":
            since = format_z(watch.red_since) if watch.red_since else "?"
            crew.act(crew.base, "base_green", f"passes CI again at {sha[:10]} (red since {since})")
            conductor.ask_again()
        watch.verdict = "green"
        watch.red_since = watch.red_sha = watch.reason = watch.fix_task = None
        return
    if watch.verdict != "red":
        watch.red_since, watch.red_sha = crew.now, sha
        crew.act(crew.base, "base_red", f"is red at {sha[:10]}: {one_line(reason or 'failed', 200)}")
    watch.verdict = "red"
    watch.reason = reason
    if watch.fix_task is None:
        watch.fix_task = _add_fix_task(crew, sha, reason or "")


# --- asking the team's CI ----------------------------------------------------------------------------


def _ask(crew: Crew, conductor: Conductor, tip: str) -> None:
    argv = [part.replace("{sha}", tip) for part in crew.config.ci.base_status_command]
    try:
        done = subprocess.run(
            argv,
            cwd=crew.checkout.root,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=STATUS_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        logger.warning("ci.base_status_command could not say for %s: %s", tip[:10], e)
        return
    said = prompts.tail(done.stdout + done.stderr)
    if done.returncode in (0, 1):
        judge(crew, conductor, tip, green=done.returncode == 0, reason=said or "the team's CI says red")
    else:
        logger.info("ci.base_status_command does not know %s yet (exit %d)", tip[:10], done.returncode)


# --- ralph's own gate on the base ----------------------------------------------------------------------


def _gate(crew: Crew, watch: BaseWatch, tip: str) -> None:
    if watch.job is not None:  # judging a tip the base has moved past
        _stop(crew, watch.job)
        watch.job = None
    run_dir = crew.paths.run_dir(WATCH_ID)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "ci.log").write_bytes(b"")
    crew.remove_gate_checkout(WATCH_ID)
    stem = f"ci-{crew.now.strftime('%Y%m%dT%H%M%S%fZ')}"
    spec = crew.launcher.gate(task_id=WATCH_ID, commit=tip, base_sha=tip, stem=stem, now=crew.now)
    started = jobs.start(spec, run_dir / f"{stem}.spec.json")
    watch.job = crew.job_record(spec, started, commit=tip)
    try:
        crew.save()
    except BaseException:
        started.abandon()
        raise
    if started.confirm():
        crew.act(crew.base, "base_gate", f"gating its tip {tip[:10]}, which ralph did not push")


def _reap(crew: Crew, conductor: Conductor, watch: BaseWatch, job: Job) -> None:
    grace = crew.config.parallel.kill_grace_seconds
    outcome, result = jobs.check(
        job.identity, Path(job.result_path), deadline=job.deadline, grace_s=grace, now=crew.now
    )
    if outcome is jobs.Outcome.RUNNING:
        return
    if outcome is not jobs.Outcome.FINISHED:
        if not proc.kill_group(job.identity, grace_s=grace):
            return  # tried again next tick
        logger.warning(
            "the gate on %s at %s ended without a verdict (%s)", crew.base, job.commit, outcome.value
        )
    watch.job = None
    crew.remove_gate_checkout(WATCH_ID)
    if result is None or result.error or job.commit is None:
        if result is not None and result.error:
            logger.warning("the gate on %s could not run: %s", crew.base, result.error)
        return  # not judged: the tip is tried again on the next tick
    reason = None
    if not result.succeeded:
        # The job wrapper's own lines are not the gate's output.
        said = [
            line
            for line in read_log_tail(Path(job.log_path)).splitlines()
            if not line.startswith("[ralph.job ")
        ]
        output = prompts.tail("\n".join(said))
        reason = f"{' '.join(crew.config.ci.command)}: {result.describe()}\n{output}".strip()
    judge(crew, conductor, job.commit, green=result.succeeded, reason=reason)


def _stop(crew: Crew, job: Job) -> None:
    proc.kill_group(job.identity, grace_s=crew.config.parallel.kill_grace_seconds)
    crew.remove_gate_checkout(WATCH_ID)


# --- the fix task --------------------------------------------------------------------------------------


def _add_fix_task(crew: Crew, sha: str, reason: str) -> str | None:
    """A task at the top of the queue that asks for the base to pass again, quoting why it does not."""
    base = crew.base
    quoted = reason.encode()[-QUOTE_BYTES:].decode(errors="ignore")
    title = f"Make {base} pass CI again (red since {sha[:10]})"
    description = (
        f"The CI gate fails on {base} at {sha}, a commit ralph did not land. Find the cause and fix it "
        f"so that `{' '.join(crew.config.ci.command) or 'the CI gate'}` passes.\n\nWhat failed:\n{quoted}"
    )
    check_text(title, description)

    def insert(edit: QueueEdit) -> Task:
        new = edit.new_task(crew.config.queue, title=title, description=description)
        edit.add(new, at=edit.place("top"))
        return new

    assert crew.source is not None
    try:
        if crew.source.mode is Mode.TRACKED:
            task = publish(
                crew.checkout,
                crew.git,
                base,
                change=insert,
                message=lambda t: f"ralph: add {t.id}: {t.title}",
                now=crew.now,
            )
            crew.fetch()  # the queue change is the base's tip now
        else:
            task = edit_files(crew.paths, change=insert, now=crew.now)
            crew.read_base()
    except RalphError as e:
        if resource_error(e) is not None:
            raise
        logger.warning("could not add a task to fix %s: %s", base, e)
        return None
    crew.act(task.id, "fix_task", f"added at the top of the queue: {title}")
    return task.id
